"""5 Hz LM planner decode speed: the full-size Qwen3 shapes with random bf16 weights.

Builds the planner from the configs in vendor/models.py (nothing is downloaded; vocab 217,472
rows as in the real checkpoint) and times, with classifier-free guidance (a batch of two):

1. transformers' `generate` (batch of 2, top-p sampling): the baseline;
2. the plain decode: the model's own forward with a DynamicCache and our sampler;
3. core.fast_decode eagerly (static cache, no graph), and
4. core.fast_decode with CUDA graphs: these two must give identical tokens for the same seed,
   for the codes phase (64k-code vocab slice, exact code count) and the chain of thought
   (full vocab, the constrained-decoding state machine);
5. whole plans for 30, 60 and 240 s songs: a 150-token chain of thought plus 5 codes a second.

The chain-of-thought state machine needs a tokenizer; the tiny test tokenizer's ids stand in
(they are valid ids of the full vocabulary, so the masks cost what the real ones cost).

    PYTHONPATH=. python bench/bench_planner.py [--sizes 1.7B 0.6B 4B] [--out results.json]
    PYTHONPATH=. python bench/bench_planner.py --tiny   # CPU smoke test of this script
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

from core.fast_decode import Decoder, Sampling, VocabSlice
from core.planner_fsm import CodeCountConstraint, CotConstraint, CotSpec, PlannerVocabulary
from tests.tiny.planner import SUBFOLDER, build_tiny_planner
from vendor.models import AUDIO_CODEBOOK_SIZE, CODES_PER_SECOND, PLANNER_MODELS

# Where the real tokenizer keeps its codes: after Qwen3's 151,669 tokens, 64k in a row.
FIRST_CODE_ID = 151_669
IM_END_ID = 151_645
COT_TOKENS = 150  # a typical chain of thought: a two-sentence caption and six short fields
SONGS = (30, 60, 240)
SAMPLING = Sampling(temperature=0.85, top_p=0.9, top_k=0, cfg_scale=2.0, seed=20261124)


def build_model(size: str, tiny: bool, device: str) -> Qwen3ForCausalLM:
    config = dict(PLANNER_MODELS[size].config)
    if tiny:
        config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(Qwen3Config(**config))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def prompts(length: int, seed: int) -> list[list[int]]:
    """A (cond, uncond) pair of ordinary text ids; the uncond is shorter, so it is padded."""
    generator = torch.Generator().manual_seed(seed)
    cond = torch.randint(1000, 150_000, (length,), generator=generator).tolist()
    uncond = torch.randint(1000, 150_000, (length - 40,), generator=generator).tolist()
    return [cond, uncond]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn, repeats: int = 1) -> tuple[Any, list[float]]:
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return result, times


def hf_generate_tokens_per_second(model, device: str, new_tokens: int) -> float:
    pair = prompts(420, 1)
    width = max(len(p) for p in pair)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in pair], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in pair], device=device)
    kwargs = dict(do_sample=True, top_p=0.9, temperature=0.85, pad_token_id=0, eos_token_id=None)
    with torch.inference_mode():
        model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, **kwargs)
        _, times = timed(
            device,
            lambda: model.generate(
                ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                **kwargs,
            ),
        )  # fmt: skip
    return new_tokens / times[0]


def codes_run(decoder: Decoder, codes: int, seed: int, vocab: VocabSlice):
    return decoder.generate(
        prompts(420, seed),
        max_new_tokens=codes + 1,
        sampling=SAMPLING,
        constraint=CodeCountConstraint.for_slice(vocab.stop - vocab.start, codes),
        vocab=vocab,
        stop_ids=[IM_END_ID],
        sync_every=32,
    )


def cot_run(decoder: Decoder, vocabulary: PlannerVocabulary, seed: int, tokens: int):
    return decoder.generate(
        prompts(300, seed),
        max_new_tokens=tokens,
        sampling=SAMPLING,
        constraint=CotConstraint(vocabulary, CotSpec(user_values={"duration": "60"})),
        stop_ids=vocabulary.end_ids,
        sync_every=16,
    )


def understand_run(decoder: Decoder, vocabulary: PlannerVocabulary, seed: int, tokens: int):
    """The understand / create-sample machine: genres, `</think>`, then free lyrics."""
    return decoder.generate(
        prompts(300, seed)[:1],
        max_new_tokens=tokens,
        sampling=SAMPLING,
        constraint=CotConstraint(vocabulary, CotSpec(skip_genres=False, then_lyrics=True)),
        stop_ids=vocabulary.end_ids,
        sync_every=8,
    )


def bench_size(size: str, tiny: bool, device: str, full: bool) -> dict[str, Any]:
    model = build_model(size, tiny, device)
    vocab_rows = model.get_output_embeddings().weight.shape[0]
    vocab = VocabSlice(FIRST_CODE_ID, FIRST_CODE_ID + AUDIO_CODEBOOK_SIZE, (IM_END_ID,))
    folder = build_tiny_planner(Path(tempfile.mkdtemp())) / SUBFOLDER
    vocabulary = PlannerVocabulary.from_tokenizer(AutoTokenizer.from_pretrained(folder), vocab_rows)
    eager = Decoder(model, cuda_graphs=False)
    graphed = Decoder(model)
    result: dict[str, Any] = {"size": size, "vocab_rows": vocab_rows, "mode": graphed.mode}
    check_codes = 60 if tiny else 300
    # The first call compiles the fused kernels for these shapes and captures the graph.
    sync(device)
    started = time.perf_counter()
    codes_run(graphed, 16, 3, vocab)
    sync(device)
    result["first_call_s"] = time.perf_counter() - started

    if full:
        result["hf_generate_tps"] = hf_generate_tokens_per_second(model, device, 8 if tiny else 48)
        plain = Decoder(model, backend="hf")
        plain_run = codes_run(plain, 8 if tiny else 48, 7, vocab)
        result["plain_decode_tps"] = plain_run.tokens_per_second
        eager_codes = codes_run(eager, check_codes, 7, vocab)
        result["eager_tps"] = eager_codes.tokens_per_second
        graph_codes = codes_run(graphed, check_codes, 7, vocab)
        result["codes_identical_eager_vs_graph"] = eager_codes.tokens == graph_codes.tokens
        result["codes_count_exact"] = len(graph_codes.tokens) == check_codes and (
            graph_codes.stop_token == IM_END_ID
        )
        same = 0
        for a, b in zip(plain_run.tokens, graph_codes.tokens, strict=False):
            if a != b:
                break
            same += 1
        result["plain_vs_graph_matching_prefix"] = f"{same}/{len(plain_run.tokens)}"
        eager_cot = cot_run(eager, vocabulary, 11, 120)
        graph_cot = cot_run(graphed, vocabulary, 11, 120)
        result["cot_identical_eager_vs_graph"] = eager_cot.tokens == graph_cot.tokens
        eager_lyrics = understand_run(eager, vocabulary, 13, 200)
        graph_lyrics = understand_run(graphed, vocabulary, 13, 200)
        result["understand_identical_eager_vs_graph"] = eager_lyrics.tokens == graph_lyrics.tokens

    # Speed of the graphed path: best of three for each phase.
    cot_times = []
    for repeat in range(3):
        run = cot_run(graphed, vocabulary, 100 + repeat, COT_TOKENS)
        cot_times.append((run.prefill_seconds, run.decode_seconds, len(run.tokens) + 1))
    cot_prefill = min(t[0] for t in cot_times)
    cot_tps = max(t[2] / t[1] for t in cot_times)
    result["cot_tps"] = cot_tps
    result["cot_prefill_s"] = cot_prefill
    songs = []
    for seconds in SONGS:
        codes = seconds * CODES_PER_SECOND
        runs = [codes_run(graphed, codes, 200 + r, vocab) for r in range(3 if seconds < 240 else 2)]
        best = min(runs, key=lambda r: r.prefill_seconds + r.decode_seconds)
        codes_seconds = best.prefill_seconds + best.decode_seconds
        plan_seconds = cot_prefill + COT_TOKENS / cot_tps + codes_seconds
        songs.append(
            {
                "song_s": seconds,
                "codes": codes,
                "codes_tps": (codes + 1) / best.decode_seconds,
                "codes_tps_spread": [round((codes + 1) / r.decode_seconds, 1) for r in runs],
                "codes_phase_s": codes_seconds,
                "plan_s": plan_seconds,
                "plan_s_per_music_minute": plan_seconds / (seconds / 60),
            }
        )
    result["songs"] = songs
    if device == "cuda":
        result["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    del model, eager, graphed
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1.7B"], choices=list(PLANNER_MODELS))
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    environment = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(environment))
    results = []
    for index, size in enumerate(args.sizes):
        started = time.perf_counter()
        result = bench_size(size, args.tiny, device, full=index == 0)
        result["bench_s"] = time.perf_counter() - started
        results.append(result)
        print(json.dumps(result, default=float))
    if args.out:
        args.out.write_text(json.dumps({"environment": environment, "results": results}, indent=2))
    print()
    print("| size | baseline generate tok/s | plain decode tok/s | eager tok/s | graph CoT tok/s "
          "| graph codes tok/s (30/60/240 s) | plan s per music minute (30/60/240 s) |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        codes = " / ".join(f"{s['codes_tps']:.0f}" for s in r["songs"])
        plan = " / ".join(f"{s['plan_s_per_music_minute']:.2f}" for s in r["songs"])
        baseline = f"{r['hf_generate_tps']:.1f}" if "hf_generate_tps" in r else "-"
        plain = f"{r['plain_decode_tps']:.1f}" if "plain_decode_tps" in r else "-"
        eager = f"{r['eager_tps']:.1f}" if "eager_tps" in r else "-"
        print(
            f"| {r['size']} | {baseline} | {plain} | {eager} | {r['cot_tps']:.0f} | {codes} | {plan} |"
        )
    first = results[0]
    print(
        f"identical eager vs graph: codes {first.get('codes_identical_eager_vs_graph')}, "
        f"chain of thought {first.get('cot_identical_eager_vs_graph')}, understand "
        f"{first.get('understand_identical_eager_vs_graph')}; exact code count "
        f"{first.get('codes_count_exact')}; plain vs graph prefix "
        f"{first.get('plain_vs_graph_matching_prefix')}; first call "
        + ", ".join(f"{r['size']} {r['first_call_s']:.1f} s" for r in results)
    )


if __name__ == "__main__":
    main()
