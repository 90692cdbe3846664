"""Cover, extend and edit on a GPU: the full-size XL pipeline with random bf16 weights.

Runs the Studio's own stages (`core.tasks`) end to end: the stage builds the pipeline call
from a source song, the pipeline VAE-encodes the source (tiled, as the Studio loads it),
diffuses and decodes, and the stage's `finish` splices or stitches the result. For each case
it times the phases, records peak memory, and checks what the stage promises: the length,
and that the untouched audio is sample-identical. It also runs one edit twice with the same
seed to see whether the GPU gives bit-identical audio.

    PYTHONPATH=. python bench/bench_tasks.py [--variant sft] [--out tasks.json]
    PYTHONPATH=. python bench/bench_tasks.py --tiny   # a CPU dry run on the tests' tiny model
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from core import audio as audio_io
from core import tasks
from core.db import Database
from core.dit import LoadedDit, detect_variant
from core.library import Library
from core.request import SongRequest
from core.settings import Settings
from core.song import Conditioning, SourceAudio, text2music_kwargs

RATE = audio_io.SAMPLE_RATE
FADE = round(tasks.CROSSFADE_SECONDS * RATE)
LYRICS = "\n".join(
    ["[Verse 1]"] + ["walking down the empty road tonight, neon on the water"] * 8
    + ["", "[Chorus]"] + ["stay a while, stay a while, the night is young"] * 4
)  # fmt: skip


def song(seconds: float, seed: int = 0) -> np.ndarray:
    """A stand-in song: three-note chords on a pulse, with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE), dtype=np.float64) / RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    pulse = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 2.0 * t))
    left = 0.4 * chord * pulse + 0.02 * rng.standard_normal(t.size)
    right = 0.4 * np.roll(chord, 100) * pulse + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def cases(tiny: bool) -> list[dict[str, Any]]:
    if tiny:
        return [
            {"name": "edit 3 s of 8 s", "task": "edit", "song": 8, "region": (2.0, 5.0)},
            {"name": "extend +5 s, context 5 s", "task": "extend", "song": 8, "add": 5, "context": 5},
            {"name": "cover 6 s, strength 0.5 + reference", "task": "cover", "song": 6, "strength": 0.5, "reference": 3},
        ]  # fmt: skip
    return [
        {"name": "edit 30 s of a 4-min song", "task": "edit", "song": 240, "region": (100.0, 130.0)},
        {"name": "edit 30 s of a 10-min song", "task": "edit", "song": 600, "region": (300.0, 330.0)},
        {"name": "extend 4-min song +30 s, context 30 s", "task": "extend", "song": 240, "add": 30, "context": 30},
        {"name": "extend 4-min song +120 s, whole song", "task": "extend", "song": 240, "add": 120, "context": None},
        {"name": "extend 4-min song +30 s before the start, context 30 s", "task": "extend", "song": 240, "add": 30, "context": 30, "side": "start"},
        {"name": "cover 4-min song, strength 1", "task": "cover", "song": 240, "strength": 1.0},
        {"name": "cover 4-min song, strength 0.5 + 30 s reference", "task": "cover", "song": 240, "strength": 0.5, "reference": 30},
    ]  # fmt: skip


def request_for(case: dict[str, Any], steps: int | None) -> SongRequest:
    base = SongRequest(
        task=case["task"],
        caption="uplifting synth pop, bright pads",
        lyrics=LYRICS,
        bpm=120,
        key="C major",
        time_signature=4,
        steps=steps,
        seed=1234,
        source_id="source",
    )
    if case["task"] == "edit":
        return replace(base, region_start=case["region"][0], region_end=case["region"][1])
    if case["task"] == "extend":
        return replace(
            base,
            extend_seconds=float(case["add"]),
            context_seconds=case["context"],
            extend_side=case.get("side", "end"),
        )
    return replace(base, cover_strength=case["strength"])


def run_case(
    studio: SimpleNamespace, dit: LoadedDit, case: dict[str, Any], steps: int | None
) -> tuple[dict[str, Any], np.ndarray]:
    request = request_for(case, steps)
    samples = song(case["song"])
    if case.get("reference"):
        reference = studio.library.add("upload", {}, samples=song(case["reference"], seed=7))
        request = replace(request, reference_id=reference.id)
    source = SourceAudio("source", samples)
    stage = {"cover": tasks.cover_stage, "extend": tasks.extend_stage, "edit": tasks.edit_stage}
    on_gpu = dit.device == "cuda"
    marks: list[float] = []

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize()

    def on_step(pipeline: object, step: int, timestep: object, callback_kwargs: dict) -> dict:
        sync()
        marks.append(time.perf_counter())
        return callback_kwargs

    encoded: list[float] = []
    vae = dit.pipe.vae
    encode = vae.encode

    def timed_encode(*args: Any, **kwargs: Any) -> Any:
        # The pipeline encodes the source (and a reference) before step 1: time it apart.
        result = encode(*args, **kwargs)
        sync()
        encoded.append(time.perf_counter())
        return result

    vae.encode = timed_encode
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    conditioning = stage[case["task"]](
        studio, request, dit, source, Conditioning(text2music_kwargs(request, dit))
    )
    generator = torch.Generator(dit.device).manual_seed(1234)
    torch.manual_seed(1234)  # as SongEngine.diffuse does: diffusers VAE-encodes unseeded
    try:
        with torch.inference_mode():
            output = dit.pipe(
                **conditioning.kwargs, generator=generator, callback_on_step_end=on_step
            ).audios
    finally:
        vae.encode = encode
    sync()
    decoded = time.perf_counter()
    result = conditioning.finish(output[0].float().cpu().numpy())
    end = time.perf_counter()
    window = conditioning.kwargs["src_audio"].shape[-1] / RATE
    row = {
        "case": case["name"],
        "through_model_s": round(window, 2),
        "total_s": end - start,
        "text_and_encode_s": encoded[-1] - start,
        "diffusion_s": marks[-1] - encoded[-1],
        "decode_s": decoded - marks[-1],
        "finish_s": end - decoded,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0,
        **check(case, request, samples, result),
    }
    return row, result


def check(
    case: dict[str, Any], request: SongRequest, samples: np.ndarray, result: np.ndarray
) -> dict[str, Any]:
    """What the stage promises, measured on this run."""
    length = samples.shape[-1]
    if case["task"] == "edit":
        start = round(request.region_start * RATE)
        end = round(request.region_end * RATE)
        kept = np.array_equal(result[:, :start], samples[:, :start]) and np.array_equal(
            result[:, end:], samples[:, end:]
        )
        return {"length_ok": result.shape == samples.shape, "untouched_identical": kept}
    if case["task"] == "extend":
        added = round(request.extend_seconds * RATE)
        if request.extend_side == "end":
            kept = np.array_equal(result[:, : length - FADE], samples[:, : length - FADE])
        else:
            kept = np.array_equal(result[:, added + FADE :], samples[:, FADE:])
        return {"length_ok": result.shape[-1] == length + added, "untouched_identical": kept}
    return {"length_ok": result.shape == samples.shape, "untouched_identical": None}


def load_dit(tiny: bool, variant: str) -> LoadedDit:
    if tiny:
        from diffusers import AceStepPipeline

        from tests.tiny.dit import build_tiny_dit

        folder = build_tiny_dit(Path(tempfile.mkdtemp()) / "tiny-dit")
        pipe = AceStepPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        return LoadedDit(pipe, detect_variant(pipe), "tiny", "-", folder, "cpu", torch.float32)
    from bench.bench_dit import build_pipeline

    pipe = build_pipeline(variant)
    return LoadedDit(
        pipe, detect_variant(pipe), f"random xl-{variant}", "-", None, "cuda", torch.bfloat16
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="sft", choices=("sft", "turbo"))
    parser.add_argument("--tiny", action="store_true", help="CPU dry run on the tiny model")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    steps = 2 if args.tiny else None  # None: the variant's default (SFT 50, turbo 8)
    if not args.tiny:
        print(f"GPU: {torch.cuda.get_device_name()} · torch {torch.__version__}")
    dit = load_dit(args.tiny, args.variant)
    data = Path(tempfile.mkdtemp())
    studio = SimpleNamespace(
        settings=Settings(data_dir=data, max_duration=600),
        library=Library(data, Database(data / "studio.db")),
    )
    all_cases = cases(args.tiny)
    run_case(studio, dit, all_cases[0], steps)  # warm-up: kernels, autotuning, allocator
    results = []
    outputs = {}
    for case in all_cases:
        row, outputs[case["name"]] = run_case(studio, dit, case, steps)
        results.append(row)
        print(json.dumps(row), flush=True)
    # The same source, settings and seed again: is the GPU's audio bit-identical?
    first = all_cases[0]
    _, again = run_case(studio, dit, first, steps)
    difference = float(np.max(np.abs(again - outputs[first["name"]])))
    print(json.dumps({"repeat_of": first["name"], "max_abs_difference": difference}))
    print(f"\n{dit.variant}, steps {steps or dit.defaults.steps}")
    print(
        "| case | through the model | total | text + VAE encode | diffusion | decode | finish "
        "| peak GiB | length | untouched identical |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in results:
        identical = {True: "yes", False: "NO", None: "–"}[row["untouched_identical"]]
        print(
            f"| {row['case']} | {row['through_model_s']:.0f} s | {row['total_s']:.2f} s | "
            f"{row['text_and_encode_s']:.2f} s | {row['diffusion_s']:.2f} s | "
            f"{row['decode_s']:.2f} s | {row['finish_s']:.2f} s | {row['peak_gib']:.1f} | "
            f"{'ok' if row['length_ok'] else 'WRONG'} | {identical} |"
        )
    if args.out:
        payload = {"results": results, "repeat_max_abs_difference": difference}
        Path(args.out).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
