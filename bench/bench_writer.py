"""Lyric writer speed on a GPU: the Qwen2.5-7B-Instruct shape with random bf16 weights.

Builds the model from the config in vendor/models.py (nothing is downloaded) and times a
600-token draft four ways:

- baseline: transformers' `generate` with the writer's sampling settings;
- decoder: the shared fast decoder (static KV cache, one CUDA graph per draft) alone;
- writer: the Studio's own path, `core.lyrics.write_draft`, streaming every token into a
  real job record (SQLite) the way the "lyrics" job does, with its first-token latency;
- residency: moving the loaded writer to the CPU and back, then writing again.

The tokenizer is the tests' tiny one (the real one is not on the GPU machine), so prompt
ids and decoded text are stand-ins; the model, the cache and the sampling are full size.

    PYTHONPATH=. python bench/bench_writer.py [--tokens 600] [--baseline-tokens 200]
    PYTHONPATH=. python bench/bench_writer.py --tiny      # a quick check on the CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from core import fast_decode
from core.db import Database
from core.jobs import JobContext, JobQueue
from core.lyrics import (
    LyricsRequest,
    Sampling,
    TransformersWriter,
    build_messages,
    write_draft,
)
from tests.tiny.tokenizer import build_tokenizer
from tests.tiny.writer import CHAT_TEMPLATE, SPECIAL_TOKENS
from vendor.models import WRITER_MODELS

BRIEF = "A late-night drive through a rainy city, missing someone; synth-pop, bittersweet"
TINY = dict(
    vocab_size=152064,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)


class BenchWriter(TransformersWriter):
    """The writer with the tiny tokenizer: the 152k-vocab ids are folded into its 561 tokens
    so that the streaming path decodes and tidies real text every token, as in the Studio."""

    def decode(self, token_ids: list[int]) -> str:
        size = len(self.tokenizer)
        return self.tokenizer.decode([i % size for i in token_ids], skip_special_tokens=True)


def build_model(tiny: bool, device: str) -> torch.nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = TINY if tiny else WRITER_MODELS["transformers"].config
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2ForCausalLM(Qwen2Config(**shape))
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_baseline(model: torch.nn.Module, prompt: list[int], tokens: int) -> dict:
    request = LyricsRequest(brief=BRIEF)
    ids = torch.tensor([prompt], device=model.device)
    settings = dict(
        do_sample=True,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        repetition_penalty=Sampling.of(request).repetition_penalty,
        pad_token_id=0,
    )
    model.generate(ids, max_new_tokens=4, min_new_tokens=4, **settings)
    synchronize()
    started = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **settings)
    synchronize()
    seconds = time.perf_counter() - started
    made = out.shape[1] - ids.shape[1]
    return {
        "tokens": made,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(made / seconds, 1),
    }


def time_decoder(writer: BenchWriter, prompt: list[int], tokens: int, graphs: bool) -> dict:
    decoder = fast_decode.Decoder(writer.model, cuda_graphs=graphs)
    request = LyricsRequest(brief=BRIEF)
    sampling = fast_decode.Sampling(
        temperature=request.temperature, top_p=request.top_p, top_k=request.top_k, seed=1
    )
    result = decoder.generate([prompt], max_new_tokens=tokens, sampling=sampling)
    return {
        "mode": result.backend,
        "tokens": len(result.tokens),
        "prefill_seconds": round(result.prefill_seconds, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
    }


def time_writer(writer: BenchWriter, tokens: int, seed: int) -> dict:
    """The "lyrics" job's own loop: every token decoded, tidied and written to the job row."""
    with tempfile.TemporaryDirectory() as folder:
        queue = JobQueue(Database(Path(folder) / "studio.db"))
        queue.submit("lyrics", {})
        job = queue.claim_next()
        ctx = JobContext(queue, job)
        request = LyricsRequest(brief=BRIEF, max_tokens=tokens)

        def on_text(text: str, count: int) -> None:
            ctx.stream_text(text)
            ctx.progress("writing", count, request.max_tokens)

        draft = write_draft(writer, request, seed, on_text)
        stored = queue.get(job.id).partial_text
    return {
        "tokens": draft.tokens,
        "first_token_seconds": round(draft.first_token_seconds or 0.0, 3),
        "total_seconds": round(draft.seconds, 2),
        "tokens_per_second": round(draft.tokens_per_second, 1),
        "streamed_characters": len(stored),
    }


def time_moves(writer: BenchWriter, device: str) -> dict:
    synchronize()
    started = time.perf_counter()
    writer.move_to("cpu")
    synchronize()
    out = time.perf_counter() - started
    if device == "cuda":
        torch.cuda.empty_cache()
    started = time.perf_counter()
    writer.move_to(device)
    synchronize()
    back = time.perf_counter() - started
    return {"to_cpu_seconds": round(out, 2), "back_seconds": round(back, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--baseline-tokens", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="a small model on the CPU")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"

    started = time.perf_counter()
    model = build_model(args.tiny, device)
    tokenizer = build_tokenizer(SPECIAL_TOKENS, vocab_size=600, chat_template=CHAT_TEMPLATE)
    tokenizer.eos_token = "<|im_end|>"
    synchronize()
    results: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "shape": "tiny" if args.tiny else "Qwen2.5-7B-Instruct (vendor config), bf16",
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    writer = BenchWriter(model, tokenizer, device)
    prompt = writer.prompt_ids(build_messages(LyricsRequest(brief=BRIEF)))
    results["prompt_tokens"] = len(prompt)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        # What load_writer does on CUDA before the first draft.
        writer.generate([0, 1], Sampling(1.0, 1.0, 0), 0, 2, lambda _: None)

    results["writer"] = [time_writer(writer, args.tokens, seed) for seed in (1, 2, 3)]
    results["decoder_graph"] = time_decoder(writer, prompt, args.tokens, graphs=True)
    results["decoder_eager"] = time_decoder(writer, prompt, min(args.tokens, 100), graphs=False)
    if device == "cuda":
        results["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    results["residency_move"] = time_moves(writer, device)
    results["writer_after_move"] = time_writer(writer, args.tokens, 4)
    results["baseline_generate"] = time_baseline(model, prompt, args.baseline_tokens)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
