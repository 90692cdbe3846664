"""The per-device choices, Mac included, checked without a Mac."""

from __future__ import annotations

import subprocess
import sys

import torch

from core import device
from core.settings import Settings
from tests.conftest import ROOT


def test_importing_core_sets_the_mps_fallback_before_torch_loads() -> None:
    probe = (
        "import sys, os; import core; "
        "print(os.environ['PYTORCH_ENABLE_MPS_FALLBACK'], 'torch' in sys.modules)"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.split() == ["1", "False"]


def test_dtypes_per_device() -> None:
    assert device.dit_dtype("cuda") == torch.bfloat16
    # MPS: fp16 for the DiT and VAE, fp32 for LMs (bf16 cast to fp16 gives NaN there).
    assert device.dit_dtype("mps") == torch.float16
    assert device.lm_dtype("mps") == torch.float32
    assert device.dit_dtype("cpu") == torch.float32
    assert device.lm_dtype("cuda") == torch.bfloat16
    assert device.dit_dtype("cuda", override="float32") == torch.float32


def test_vae_tiles_are_small_on_mps() -> None:
    assert device.vae_tiles("mps") == device.VaeTiles(latent_min_length=32, latent_overlap=8)
    assert device.vae_tiles("cuda") == device.VaeTiles(latent_min_length=512, latent_overlap=64)


def test_auto_device_falls_back_to_cpu_here_and_explicit_choices_stand() -> None:
    assert device.pick_device("mps") == "mps"
    assert device.pick_device("cpu") == "cpu"
    assert device.pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert device.resolve(Settings(device="cpu")) == ("cpu", torch.float32)


def test_cpu_info_reports_memory() -> None:
    info = device.device_info("cpu")
    assert info.kind == "cpu"
    assert info.total_bytes and info.total_bytes > 0
    assert info.label == "CPU"
