"""Where a planner decode step spends its time, to choose fast_decode's defaults.

Times the graphed codes phase (1.7B shape, CFG pair) with plain or fused elementwise glue and
SDPA or two-matmul decode attention, at 300 and 1200 codes; checks eager against graphed for
the fused glue; and lists the kernels of one eager step.

    PYTHONPATH=. python bench/planner_probe.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

from bench.bench_planner import (
    AUDIO_CODEBOOK_SIZE,
    FIRST_CODE_ID,
    IM_END_ID,
    build_model,
    codes_run,
    cot_run,
)
from core.fast_decode import Decoder, VocabSlice
from core.planner_fsm import PlannerVocabulary
from tests.tiny.planner import SUBFOLDER, build_tiny_planner


def main() -> None:
    model = build_model("1.7B", tiny=False, device="cuda")
    vocab = VocabSlice(FIRST_CODE_ID, FIRST_CODE_ID + AUDIO_CODEBOOK_SIZE, (IM_END_ID,))
    folder = build_tiny_planner(Path(tempfile.mkdtemp())) / SUBFOLDER
    rows = model.get_output_embeddings().weight.shape[0]
    vocabulary = PlannerVocabulary.from_tokenizer(AutoTokenizer.from_pretrained(folder), rows)
    print("| glue | attention | codes tok/s (300) | codes tok/s (1200) | CoT tok/s |")
    print("| --- | --- | --- | --- | --- |")
    for fused, attention in [(False, "sdpa"), (True, "sdpa"), (True, "math"), (False, "math")]:
        decoder = Decoder(model, fused_glue=fused, decode_attention=attention)
        codes_run(decoder, 16, 1, vocab)
        cot_run(decoder, vocabulary, 1, 16)
        short = max(codes_run(decoder, 300, 2 + r, vocab).tokens_per_second for r in range(2))
        long = codes_run(decoder, 1200, 5, vocab).tokens_per_second
        cot = max(cot_run(decoder, vocabulary, 6 + r, 150).tokens_per_second for r in range(2))
        print(
            f"| {'fused' if fused else 'plain'} | {attention} | {short:.0f} | {long:.0f} | {cot:.0f} |"
        )
    for attention in ("sdpa", "math"):
        eager = codes_run(
            Decoder(model, cuda_graphs=False, decode_attention=attention), 300, 9, vocab
        )
        graph = codes_run(Decoder(model, decode_attention=attention), 300, 9, vocab)
        print(f"fused glue, {attention}: eager == graph: {eager.tokens == graph.tokens}")
    decoder = Decoder(model, cuda_graphs=False)
    codes_run(decoder, 8, 1, vocab)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
        codes_run(decoder, 9, 1, vocab)
    events = [e for e in profiler.key_averages() if e.device_type.name == "CUDA"]
    total = sum(e.device_time_total for e in events)
    count = sum(e.count for e in events)
    print(f"profile of prefill + 8 steps: {count} kernels, {total / 1e3:.2f} ms GPU time")
    for event in sorted(events, key=lambda e: -e.device_time_total)[:14]:
        print(f"{event.count:6d} {event.device_time_total / 1e3:8.2f} ms  {event.key[:90]}")


if __name__ == "__main__":
    main()
