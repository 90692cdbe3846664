"""Loading the ACE-Step DiT pipeline (diffusers `AceStepPipeline`) onto the Studio's device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from core.device import vae_tiles
from core.models import ModelError
from core.settings import Settings
from vendor.models import DIT_VARIANT_DEFAULTS, VariantDefaults

PIPELINE_CLASS = "AceStepPipeline"


@dataclass
class LoadedDit:
    """The pipeline with what the song engine needs to know about it."""

    pipe: object  # diffusers.AceStepPipeline
    variant: str  # "sft", "base" or "turbo"
    source: str
    revision: str
    folder: Path
    device: str
    dtype: torch.dtype

    @property
    def defaults(self) -> VariantDefaults:
        return DIT_VARIANT_DEFAULTS[self.variant]

    @property
    def sample_rate(self) -> int:
        return int(self.pipe.sample_rate)

    @property
    def hidden_size(self) -> int:
        return int(self.pipe.transformer.config.hidden_size)


def check_pipeline_folder(folder: Path) -> None:
    index = folder / "model_index.json"
    if not index.exists():
        raise ModelError(
            f"{folder} is not a diffusers pipeline: it has no model_index.json. Point "
            "ACE_STUDIO_DIT_MODEL at an ACE-Step diffusers checkpoint "
            "(e.g. ACE-Step/acestep-v15-xl-sft-diffusers)."
        )
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except ValueError as error:
        raise ModelError(f"{index} is not valid JSON.") from error
    if class_name != PIPELINE_CLASS:
        raise ModelError(
            f"{folder} holds a {class_name or 'unknown'} pipeline, not an ACE-Step "
            f"({PIPELINE_CLASS}) one."
        )


def detect_variant(pipe: object) -> str:
    config = pipe.transformer.config
    if getattr(pipe, "is_turbo", False) or getattr(config, "is_turbo", False):
        return "turbo"
    version = str(getattr(config, "model_version", "") or "").lower()
    return "base" if "base" in version else "sft"


def enable_vae_tiling(pipe: object, device: str) -> None:
    """Decode in tiles sized for the device, so memory stays flat however long the song.

    `pipe.enable_vae_tiling` does not exist for this pipeline, and tiling is off by default:
    without it a 10-minute decode needs ~80 GB of activations.
    """
    tiles = vae_tiles(device)
    pipe.vae.enable_tiling()
    pipe.vae.tile_latent_min_length = tiles.latent_min_length
    pipe.vae.tile_latent_overlap = tiles.latent_overlap


def load_dit(folder: Path, settings: Settings, device: str, dtype: torch.dtype) -> LoadedDit:
    check_pipeline_folder(folder)
    from diffusers import AceStepPipeline

    pipe = AceStepPipeline.from_pretrained(folder, dtype=dtype)
    if settings.offload == "model" and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    elif settings.offload == "sequential" and device != "cpu":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if settings.vae_tiling:
        enable_vae_tiling(pipe, device)
    pipe.set_progress_bar_config(disable=True)
    return LoadedDit(
        pipe=pipe,
        variant=detect_variant(pipe),
        source=settings.dit_model,
        revision=settings.dit_revision,
        folder=folder,
        device=device,
        dtype=dtype,
    )
