"""Finishing tools at full size: stems (HT-Demucs), the LoRA stack on the XL DiT, loudness and
export, with random weights built from `vendor/models.py` (speed does not depend on values).

- Stems: a full-size HT-Demucs saved exactly as demucs' checkpoint (`.th` package + bag
  yaml), loaded through `core.stems.load_demucs`, separating 30 s to 10 min of audio with
  `core.stems.separate` (the Studio's path: soxr to 44.1 kHz, normalise, apply_model, back).
- LoRA: the XL transformer in bf16 inside an AceStepPipeline, adapters of rank 8 and 64
  over every attention projection in ACE-Step's own PEFT format (+ adapter_config.json),
  through `core.lora` (store, inspect, sync_adapters): load, re-weight, stack, remove (and
  check the base comes back exactly), and the cost of a CFG step with two adapters stacked.
- Loudness and export: a 4-minute take normalised to each preset and exported in each
  format, on the CPU.

    PYTHONPATH=. python bench/bench_finishing.py [--tiny] [--out results.json]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from core import export, lora, loudness, stems
from vendor.models import HTDEMUCS, XL_TRANSFORMER

RATE = 48_000


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0


def song(seconds: float, seed: int = 0) -> np.ndarray:
    """Kicks, a bass line and noise: something with a crest factor, peaking at −1 dBFS."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    kick = np.zeros(n)
    hit = np.arange(2400)
    for start in range(0, n - hit.size, RATE // 2):
        kick[start : start + hit.size] += np.sin(2 * np.pi * 55 * hit / RATE) * np.exp(-hit / 500)
    bass = 0.3 * np.sin(2 * np.pi * 82.4 * t)
    mix = np.stack([kick + bass, kick + bass]) + 0.1 * rng.standard_normal((2, n))
    return (mix * (0.891 / np.max(np.abs(mix)))).astype(np.float32)


# --- stems -----------------------------------------------------------------------------------


def build_demucs(folder: Path, tiny: bool) -> Path:
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    config = dict(HTDEMUCS.config)
    kwargs = {
        k: config[k]
        for k in (
            "sources", "audio_channels", "samplerate", "channels", "growth", "nfft", "depth",
            "dconv_mode", "bottom_channels", "t_layers", "t_heads", "t_hidden_scale",
        )
    }  # fmt: skip
    kwargs["segment"] = Fraction(39, 5)
    if tiny:
        kwargs.update(channels=8, depth=3, nfft=512, t_layers=1, t_heads=2, bottom_channels=0,
                      dconv_comp=2, segment=Fraction(2))  # fmt: skip
    model = HTDemucs(**kwargs)
    args, init_kwargs = model._init_args_kwargs
    package = {"klass": HTDemucs, "args": args, "kwargs": init_kwargs,
               "state": get_state(model, None, half=True), "training_args": {}}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(package, buffer)
    payload = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    signature = config["signature"]
    (folder / f"{signature}-{hashlib.sha256(payload).hexdigest()[:8]}.th").write_bytes(payload)
    (folder / "htdemucs.yaml").write_text(f"models: ['{signature}']\n")
    return folder


def bench_stems(device: str, durations: list[float], tiny: bool) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_demucs(Path(tmp) / "demucs", tiny)
        started = time.perf_counter()
        model = stems.load_demucs(folder, "htdemucs", device)
        load_seconds = time.perf_counter() - started
        params = sum(p.numel() for p in model.parameters())
        stems.separate(model, song(10.0), device=device)  # warm-up (cuFFT plans, kernels)
        for seconds in durations:
            mix = song(seconds)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            started = time.perf_counter()
            calls: list[float] = []
            out = stems.separate(model, mix, device=device, on_progress=calls.append)
            _sync(device)
            wall = time.perf_counter() - started
            assert all(stem.shape == mix.shape for stem in out.values())
            results.append(
                dict(
                    device=device,
                    audio_seconds=seconds,
                    wall_seconds=round(wall, 3),
                    seconds_per_minute=round(wall / seconds * 60, 3),
                    realtime_factor=round(seconds / wall, 1),
                    progress_callbacks=len(calls),
                    peak_gib=round(_peak_gib(device), 2),
                    load_seconds=round(load_seconds, 2),
                    params_m=round(params / 1e6, 2),
                )
            )
            print("stems", results[-1], flush=True)
    return results


# --- LoRA on the XL DiT ----------------------------------------------------------------------


def build_xl_pipeline(device: str, tiny: bool):
    from diffusers import AceStepPipeline, AceStepTransformer1DModel

    config = dict(XL_TRANSFORMER, is_turbo=False, model_version="sft")
    if tiny:
        config.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      encoder_hidden_size=48)  # fmt: skip
    with torch.device("meta"):
        transformer = AceStepTransformer1DModel(**config)
    transformer = transformer.to_empty(device=device).to(torch.bfloat16)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, 0.02, generator=generator)
            elif "norm" in name:
                param.fill_(1.0)
            else:
                param.zero_()
        for buffer in transformer.buffers():
            if buffer.is_floating_point() and not torch.isfinite(buffer).all():
                buffer.zero_()
    transformer.eval()
    pipe = AceStepPipeline(
        vae=None, text_encoder=None, tokenizer=None, transformer=transformer,
        condition_encoder=None, scheduler=None,
    )  # fmt: skip
    return pipe, config


def xl_lora_file(folder: Path, config: dict, rank: int, seed: int) -> tuple[Path, dict]:
    """An ACE-Step PEFT adapter for every attention projection, bf16 as trainers save it."""
    from safetensors.torch import save_file

    hidden = config["hidden_size"]
    q_out = config["num_attention_heads"] * config["head_dim"]
    kv_out = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"q_proj": (hidden, q_out), "k_proj": (hidden, kv_out),
              "v_proj": (hidden, kv_out), "o_proj": (q_out, hidden)}  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for attention in ("self_attn", "cross_attn"):
            for module, (inp, out) in shapes.items():
                key = f"base_model.model.layers.{layer}.{attention}.{module}"
                tensors[f"{key}.lora_A.weight"] = (
                    torch.randn(rank, inp, generator=generator) / inp**0.5
                ).to(torch.bfloat16)
                tensors[f"{key}.lora_B.weight"] = (
                    torch.randn(out, rank, generator=generator) * 0.01
                ).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "adapter_model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    adapter_config = {"r": rank, "lora_alpha": 2 * rank,
                      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}  # fmt: skip
    return path, adapter_config


def bench_lora(device: str, tiny: bool) -> dict:
    pipe, config = build_xl_pipeline(device, tiny)
    frames = 1500 if not tiny else 40  # 60 s of 25 Hz latents
    generator = torch.Generator(device=device).manual_seed(1)
    acoustic = config["audio_acoustic_hidden_dim"]
    inputs = dict(
        hidden_states=torch.randn(2, frames, acoustic, generator=generator, device=device),
        context_latents=torch.randn(
            2, frames, config["in_channels"] - acoustic, generator=generator, device=device
        ),
        encoder_hidden_states=torch.randn(
            2, 300, config["encoder_hidden_size"], generator=generator, device=device
        ),
        timestep=torch.full((2,), 0.5, device=device),
        timestep_r=torch.full((2,), 0.5, device=device),
        return_dict=False,
    )
    inputs = {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in inputs.items()}  # fmt: skip

    def step(repeats: int = 20) -> tuple[torch.Tensor, float]:
        with torch.inference_mode():
            for _ in range(3):
                out = pipe.transformer(**inputs)[0]
            _sync(device)
            started = time.perf_counter()
            for _ in range(repeats):
                out = pipe.transformer(**inputs)[0]
            _sync(device)
        return out.clone(), (time.perf_counter() - started) / repeats

    base, base_step = step()
    result: dict = {"device": device, "cfg_step_ms_base": round(base_step * 1000, 2),
                    "tokens": frames // 2}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = lora.LoraStore(Path(tmp) / "data", max_mb=2000)
        stored = {}
        for rank, seed in ((8, 1), (64, 2)):
            path, adapter_config = xl_lora_file(Path(tmp) / f"r{rank}", config, rank, seed)
            started = time.perf_counter()
            kept = store.add_file(
                path, f"style-r{rank}.safetensors", adapter_config=adapter_config,
                dit=lora.shapes_of(pipe.transformer),
            )  # fmt: skip
            result[f"r{rank}_file_mb"] = round(path.stat().st_size / 1e6, 1)
            result[f"r{rank}_store_and_check_s"] = round(time.perf_counter() - started, 3)
            stored[rank] = kept
        for rank in (8, 64):
            _sync(device)
            started = time.perf_counter()
            lora.sync_adapters(pipe, store, (stored[rank].choice(1.0),))
            _sync(device)
            result[f"r{rank}_load_s"] = round(time.perf_counter() - started, 3)
            _, step_time = step()
            result[f"cfg_step_ms_r{rank}"] = round(step_time * 1000, 2)
        # Re-weighting what is loaded is only set_adapters.
        started = time.perf_counter()
        lora.sync_adapters(pipe, store, (stored[64].choice(0.6),))
        result["reweight_s"] = round(time.perf_counter() - started, 4)
        started = time.perf_counter()
        lora.sync_adapters(pipe, store, (stored[64].choice(0.6), stored[8].choice(1.2)))
        _sync(device)
        result["stack_second_s"] = round(time.perf_counter() - started, 3)
        stacked, step_time = step()
        result["cfg_step_ms_stack_r64_r8"] = round(step_time * 1000, 2)
        result["stack_changes_output"] = bool(not torch.equal(stacked, base))
        # Fused: the stack merged into the weights (what the Studio does on a GPU).
        stack = (stored[64].choice(0.6), stored[8].choice(1.2))
        _sync(device)
        started = time.perf_counter()
        lora.sync_adapters(pipe, store, stack, fuse=True)
        _sync(device)
        result["fuse_s"] = round(time.perf_counter() - started, 3)
        fused, step_time = step()
        result["cfg_step_ms_fused"] = round(step_time * 1000, 2)
        result["fused_vs_unfused_max_abs"] = float((fused.float() - stacked.float()).abs().max())
        result["unfused_max_abs_delta"] = float((stacked.float() - base.float()).abs().max())
        started = time.perf_counter()
        lora.sync_adapters(pipe, store, ())
        _sync(device)
        result["remove_all_s"] = round(time.perf_counter() - started, 3)
        back, step_time = step()
        result["cfg_step_ms_after_remove"] = round(step_time * 1000, 2)
        result["base_restored_exactly"] = bool(torch.equal(back, base))
    result["peak_gib"] = round(_peak_gib(device), 2)
    print("lora", result, flush=True)
    return result


# --- loudness and export ---------------------------------------------------------------------


def bench_master(seconds: float) -> list[dict]:
    mix = song(seconds)
    results = []
    for preset in ("streaming", "apple", "broadcast", "club"):
        started = time.perf_counter()
        done = loudness.normalise_to_preset(mix, preset)
        results.append(
            dict(
                what=f"normalise {preset}",
                audio_seconds=seconds,
                wall_seconds=round(time.perf_counter() - started, 3),
                lufs=round(done.after.integrated_lufs, 2),
                true_peak=round(done.after.true_peak_dbtp, 2),
                limited=done.limited,
            )
        )
        print("master", results[-1], flush=True)
    tags = export.SongTags(title="Bench", lyrics="la", caption="bench", seed=1, models=("x",))
    for fmt in export.FORMATS:
        for rate in export.SAMPLE_RATES:
            started = time.perf_counter()
            payload = export.export_audio(mix, fmt, tags, rate)
            results.append(
                dict(
                    what=f"export {fmt} {rate}",
                    audio_seconds=seconds,
                    wall_seconds=round(time.perf_counter() - started, 3),
                    mb=round(len(payload) / 1e6, 1),
                )
            )
            print("export", results[-1], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, to try on a CPU")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], choices=["stems", "lora", "master"])
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report: dict = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if "stems" not in args.skip:
        durations = [5.0] if args.tiny else [30.0, 60.0, 180.0, 600.0]
        report["stems"] = bench_stems(device, durations, args.tiny)
        if device == "cuda" and not args.tiny:
            report["stems_cpu"] = bench_stems("cpu", [30.0], args.tiny)
    if "lora" not in args.skip:
        report["lora"] = bench_lora(device, args.tiny)
    if "master" not in args.skip:
        report["master"] = bench_master(10.0 if args.tiny else 240.0)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
