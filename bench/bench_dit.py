"""DiT speed and memory on a GPU: the full-size XL pipeline with random bf16 weights.

Builds every component from the configs in vendor/models.py (nothing is downloaded), then
times whole songs through the same pipeline arguments the Studio passes
(`core.song.text2music_kwargs`), for SFT (50 steps, CFG 7) and turbo (8 steps, no CFG), at
30, 60, 120 and 240 s, with VAE tiling on as the Studio loads it.

    PYTHONPATH=. python bench/bench_dit.py [--durations 30 60 120 240] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from core.dit import LoadedDit, detect_variant, enable_vae_tiling
from core.request import SongRequest
from core.song import text2music_kwargs
from tests.tiny.dit import assemble_pipeline
from vendor.models import DIT_MODELS

LYRICS = "\n".join(
    ["[Verse 1]"] + ["walking down the empty road tonight, neon on the water"] * 8
    + ["", "[Chorus]"] + ["stay a while, stay a while, the night is young"] * 4
)  # fmt: skip


def build_pipeline(variant: str) -> object:
    with torch.device("cuda"):
        pipe = assemble_pipeline(DIT_MODELS[f"xl-{variant}"].config, variant)
    pipe.to(dtype=torch.bfloat16)
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    enable_vae_tiling(pipe, "cuda")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_song(pipe: object, dit: LoadedDit, seconds: int) -> dict[str, float]:
    request = SongRequest(
        caption="uplifting synth pop, bright pads", lyrics=LYRICS, duration=seconds
    )
    kwargs = text2music_kwargs(replace(request, bpm=120, key="C major", time_signature=4), dit)
    marks: list[float] = []

    def on_step(pipeline: object, step: int, timestep: object, callback_kwargs: dict) -> dict:
        torch.cuda.synchronize()
        marks.append(time.perf_counter())
        return callback_kwargs

    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        audio = pipe(
            **kwargs,
            generator=torch.Generator("cuda").manual_seed(0),
            callback_on_step_end=on_step,
        ).audios
    torch.cuda.synchronize()
    end = time.perf_counter()
    assert audio.shape[-1] == seconds * 48_000
    return {
        "seconds": seconds,
        "total_s": end - start,
        "diffusion_s": marks[-1] - start,
        "decode_s": end - marks[-1],
        "per_minute_s": (end - start) * 60 / seconds,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--durations", type=int, nargs="+", default=[30, 60, 120, 240])
    parser.add_argument("--variants", nargs="+", default=["sft", "turbo"])
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()} · torch {torch.__version__}")
    results = []
    for variant in args.variants:
        pipe = build_pipeline(variant)
        weights = torch.cuda.memory_allocated() / 2**30
        dit = LoadedDit(
            pipe, detect_variant(pipe), f"random xl-{variant}", "-", None, "cuda", torch.bfloat16
        )
        time_song(pipe, dit, 30)  # warm-up: kernels, cuDNN autotuning, allocator
        for seconds in args.durations:
            row = {"variant": variant, "weights_gib": weights, **time_song(pipe, dit, seconds)}
            results.append(row)
            print(json.dumps(row))
        del pipe, dit
        torch.cuda.empty_cache()
    print("\n| variant | song | total | diffusion | decode | s per minute of music | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in results:
        print(
            f"| {row['variant']} | {row['seconds']} s | {row['total_s']:.2f} s | "
            f"{row['diffusion_s']:.2f} s | {row['decode_s']:.2f} s | {row['per_minute_s']:.2f} | "
            f"{row['peak_gib']:.1f} |"
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
