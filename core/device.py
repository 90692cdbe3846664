"""Which device runs the models, in which dtype, and how much memory it has free."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

import torch

from core.settings import Settings


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda", "mps" or "cpu"
    name: str
    total_bytes: int | None
    free_bytes: int | None

    @property
    def label(self) -> str:
        return {"cuda": "CUDA GPU", "mps": "Apple Silicon (MPS)", "cpu": "CPU"}[self.kind]


@dataclass(frozen=True)
class VaeTiles:
    """Decode tile and overlap, in 25 Hz latent frames."""

    latent_min_length: int
    latent_overlap: int


def pick_device(choice: str = "auto") -> str:
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def dit_dtype(device: str, override: str = "auto") -> torch.dtype:
    """DiT and VAE dtype: bf16 on CUDA, fp16 on MPS (its bf16 is slow or missing), fp32 on CPU."""
    if override != "auto":
        return getattr(torch, override)
    return {"cuda": torch.bfloat16, "mps": torch.float16}.get(device, torch.float32)


def lm_dtype(device: str, override: str = "auto") -> torch.dtype:
    """LM dtype: bf16 on CUDA; fp32 on MPS, where bf16 cast to fp16 gives NaN, and on CPU."""
    if override != "auto":
        return getattr(torch, override)
    return torch.bfloat16 if device == "cuda" else torch.float32


def vae_tiles(device: str) -> VaeTiles:
    # MPS's conv1d output length limit needs small tiles; elsewhere diffusers' 512/64 (20 s).
    if device == "mps":
        return VaeTiles(latent_min_length=32, latent_overlap=8)
    return VaeTiles(latent_min_length=512, latent_overlap=64)


def device_info(device: str) -> DeviceInfo:
    if device == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return DeviceInfo("cuda", torch.cuda.get_device_name(), total, free)
    if device == "mps":
        # MPS has no mem_get_info; the recommended working set is the usable budget.
        total = int(torch.mps.recommended_max_memory())
        used = int(torch.mps.driver_allocated_memory())
        return DeviceInfo("mps", f"Apple {platform.machine()}", total, max(total - used, 0))
    return DeviceInfo("cpu", platform.processor() or platform.machine(), *_system_memory())


def _system_memory() -> tuple[int | None, int | None]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, None


def resolve(settings: Settings) -> tuple[str, torch.dtype]:
    device = pick_device(settings.device)
    return device, dit_dtype(device, settings.dtype)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return "out of memory" in text.lower() or "MPS backend out of memory" in text


def free_cached_memory(device: str) -> None:
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()
