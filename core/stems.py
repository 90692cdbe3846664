"""Stems: split a take into vocals, drums, bass and other with HT-Demucs.

demucs' own low-level API does the work (`get_model`, `apply_model`), so its checkpoints
load unchanged. The weights come from the Hugging Face hub, where demucs 4.1 itself looks
first (`adefossez/HTDemucs`: the bag yaml and one safetensors file per model), through a
ModelSlot so Home shows the download; or from a local folder (`ACE_STUDIO_DEMUCS_REPO`)
holding `htdemucs.yaml` and `955717e8-8726e21a.th` as demucs' `--repo` expects, for
machines without a network.

A take is 48 kHz; HT-Demucs was trained at 44.1 kHz, so the mix goes down with soxr and
each stem comes back up to 48 kHz, trimmed to the take's exact length. As demucs' CLI does,
the mix is normalised by the mean and deviation of its mono sum before separation and the
stems are scaled back after.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
import torch

from core.audio import SAMPLE_RATE
from core.jobs import JobContext, StudioError
from core.models import ModelError, ModelSlot
from vendor.models import HTDEMUCS

if TYPE_CHECKING:
    from core.library import Item
    from core.studio import Studio

log = logging.getLogger(__name__)

# The order stems are shown and stored in; demucs' own order is model.sources.
STEMS: tuple[str, ...] = ("vocals", "drums", "bass", "other")
STEM_LABELS = {"vocals": "Vocals", "drums": "Drums", "bass": "Bass", "other": "Other"}
HF_NAMESPACE = "adefossez"
# demucs' defaults: one random time shift, 25 % overlap between 7.8 s segments.
SHIFTS = 1
OVERLAP = 0.25


# --- loading -------------------------------------------------------------------------------


def hub_repo(name: str) -> str:
    """The hub repository demucs itself downloads `name` from."""
    from demucs.hf import hf_repo_name

    return f"{HF_NAMESPACE}/{hf_repo_name(name)}"


def demucs_slot(settings: Any, device: str) -> ModelSlot:
    """The stem separator's model slot: a local folder when set, else the hub."""
    name = settings.demucs_model
    label = f"Stem separator ({name})"
    if settings.demucs_repo:
        folder = Path(settings.demucs_repo).expanduser()
        # A path to the weights file itself means the folder it sits in.
        if folder.suffix in (".th", ".safetensors", ".yaml"):
            folder = folder.parent
        return ModelSlot(
            "demucs", label, str(folder), partial(load_demucs, name=name, device=device)
        )
    return ModelSlot(
        "demucs",
        label,
        hub_repo(name),
        partial(load_demucs, name=name, device=device, hub_snapshot=True),
        expected_bytes=HTDEMUCS.weight_bytes if name == HTDEMUCS.key else 0,
        allow_patterns=[f"{name}.yaml", "*.safetensors"],
    )


def load_demucs(folder: Path, name: str, device: str, hub_snapshot: bool = False) -> Any:
    """A demucs model (a bag of models) from a folder, moved to `device` and ready.

    A hub snapshot holds `<name>.yaml` and `<signature>.safetensors`; a local folder holds
    what demucs' `--repo` reads, `<name>.yaml` and `<signature>-<checksum>.th` (a folder
    copied from the hub cache works too).
    """
    from demucs.apply import BagOfModels

    bag_file = folder / f"{name}.yaml"
    has_safetensors = any(folder.glob("*.safetensors")) and not any(folder.glob("*.th"))
    if bag_file.exists() and (hub_snapshot or has_safetensors):
        model = _load_hub_snapshot(folder, bag_file)
    else:
        model = _load_local_repo(folder, name)
    if not isinstance(model, BagOfModels):
        model = BagOfModels([model])
    return model.to(device).eval()


def _load_local_repo(folder: Path, name: str) -> Any:
    from demucs.pretrained import get_model
    from demucs.repo import ModelLoadingError

    if not (folder / f"{name}.yaml").exists() and not any(folder.glob(f"{name}*.th")):
        raise ModelError(
            f"The demucs folder {folder} has neither {name}.yaml nor a {name}-*.th weight "
            f"file. For {HTDEMUCS.key} it needs {HTDEMUCS.key}.yaml (models: "
            f"['{HTDEMUCS.config['signature']}']) and {HTDEMUCS.config['checkpoint']}."
        )
    try:
        return get_model(name, repo=folder)
    except ModelLoadingError as error:
        text = str(error)
        if "checksum" in text.lower():
            raise ModelError(
                f"A demucs weight file in {folder} is damaged (its sha256 does not match the "
                "checksum in its name). Download it again."
            ) from error
        if "signature" in text:
            signature = text.rsplit(" ", 1)[-1].rstrip(".")
            raise ModelError(
                f"The demucs weight file for {name} is missing: {folder} needs "
                f"{signature}-<checksum>.th (for {HTDEMUCS.key}: "
                f"{HTDEMUCS.config['checkpoint']})."
            ) from error
        raise ModelError(f"demucs could not load {name} from {folder}: {text}") from error


def _load_hub_snapshot(folder: Path, bag_file: Path) -> Any:
    """What demucs' `get_hf_model` does, on files the slot already fetched."""
    import yaml
    from demucs.apply import BagOfModels
    from demucs.hf import load_safetensors_model

    bag = yaml.safe_load(bag_file.read_text())
    models = []
    for signature in bag["models"]:
        weights = folder / f"{signature}.safetensors"
        if not weights.exists():
            raise ModelError(
                f"The demucs weight file {weights.name} is missing from {folder}; delete the "
                "folder from the Hugging Face cache and download it again."
            )
        models.append(load_safetensors_model(weights))
    return BagOfModels(models, bag.get("weights"), bag.get("segment"))


# --- separating ----------------------------------------------------------------------------


def separate(
    model: Any,
    samples: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    on_progress: Callable[[float], None] | None = None,
    shifts: int = SHIFTS,
    overlap: float = OVERLAP,
) -> dict[str, np.ndarray]:
    """Split (2, n) float audio at 48 kHz into stems, each (2, n) float32 at 48 kHz.

    `on_progress(fraction)` is called as segments finish; an exception it raises (a
    cancel) stops the separation and propagates.
    """
    from demucs.apply import apply_model

    frames = samples.shape[-1]
    mix = soxr.resample(np.ascontiguousarray(samples.T), SAMPLE_RATE, model.samplerate, "HQ")
    mix = torch.from_numpy(np.ascontiguousarray(mix.T)).to(device)
    reference = mix.mean(0)
    mean, std = reference.mean(), reference.std() + 1e-8
    normalised = ((mix - mean) / std)[None]
    total = _expected_chunks(model, normalised.shape[-1], shifts, overlap)
    done = [0]

    def callback(info: dict) -> None:
        if info.get("state") == "end":
            done[0] += 1
            if on_progress is not None:
                on_progress(min(done[0] / total, 1.0))

    with torch.inference_mode():
        estimates = apply_model(
            model,
            normalised,
            shifts=shifts,
            split=True,
            overlap=overlap,
            device=device,
            progress=False,
            num_workers=0,
            callback=callback,
        )[0]
    estimates = (estimates * std + mean).float().cpu().numpy()
    stems: dict[str, np.ndarray] = {}
    for index, source in enumerate(model.sources):
        stem = soxr.resample(
            np.ascontiguousarray(estimates[index].T), model.samplerate, SAMPLE_RATE, "HQ"
        )
        stems[source] = _fit_length(np.ascontiguousarray(stem.T, dtype=np.float32), frames)
    return {name: stems[name] for name in STEMS if name in stems} | stems


def _expected_chunks(model: Any, length: int, shifts: int, overlap: float) -> int:
    """How many segments apply_model will run, so progress can be a fraction."""
    models = len(getattr(model, "models", [model]))
    segment = float(getattr(model, "segment", None) or model.models[0].segment)
    segment_length = int(model.samplerate * segment)
    stride = int((1 - overlap) * segment_length)
    # A shift pads by up to half a second; count the longest case so the bar never
    # runs past the end.
    padded = length + int(0.5 * model.samplerate) if shifts else length
    per_pass = math.ceil(padded / stride)
    return max(models * max(shifts, 1) * per_pass, 1)


def _fit_length(stem: np.ndarray, frames: int) -> np.ndarray:
    if stem.shape[-1] >= frames:
        return stem[:, :frames]
    return np.pad(stem, ((0, 0), (0, frames - stem.shape[-1])))


# --- the job -------------------------------------------------------------------------------


def stems_of(studio: Studio, take_id: str) -> dict[str, Item]:
    """A take's stems in the library, by name (vocals, drums, bass, other)."""
    found: dict[str, Item] = {}
    for child in studio.library.children(take_id, kinds=("stem",)):
        name = child.meta.get("stem")
        if name in STEMS:
            found[name] = child
    return {name: found[name] for name in STEMS if name in found}


def submit_stems(studio: Studio, take_id: str) -> Any:
    """Queue a separation of a take (a take or an upload)."""
    item = studio.library.get(take_id)
    if item.audio_file is None:
        raise StudioError("This item has no audio to separate.")
    if item.kind == "stem":
        raise StudioError("This is already a stem; separate the take it came from.")
    return studio.jobs.submit("stems", {"item_id": take_id})


def run_stems_job(
    studio: Studio, slot: ModelSlot, ctx: JobContext, payload: dict[str, Any]
) -> dict[str, Any]:
    item_id = payload["item_id"]
    item = studio.library.find(item_id)
    if item is None or item.audio_file is None:
        raise StudioError("The take is no longer in the library; nothing to separate.")
    existing = stems_of(studio, item_id)
    if len(existing) == len(STEMS):
        return {"stem_ids": {name: stem.id for name, stem in existing.items()}, "reused": True}
    ctx.progress("loading stem separator", 0, 1)
    started = time.time()
    try:
        model = slot.ensure()
    except ModelError as error:
        raise StudioError(str(error)) from error
    ctx.record_timing("load_seconds", time.time() - started)
    samples = studio.library.read_audio(item_id).samples
    steps = 100

    def on_progress(fraction: float) -> None:
        ctx.progress("separating", round(fraction * steps), steps)

    ctx.progress("separating", 0, steps)
    started = time.time()
    stems = separate(model, samples, device=studio.device, on_progress=on_progress)
    ctx.record_timing("separate_seconds", time.time() - started)
    ctx.check_cancelled()
    title = item.display_title
    stem_ids: dict[str, str] = {}
    for name in STEMS:
        if name in existing:
            stem_ids[name] = existing[name].id
            continue
        stem = studio.library.add(
            "stem",
            {
                "stem": name,
                "separator": {"model": studio.settings.demucs_model, "source": slot.display_source},
                "source_title": title,
                "sample_rate": SAMPLE_RATE,
            },
            samples=stems[name],
            title=f"{title} · {STEM_LABELS[name]}",
            caption=item.caption,
            parent_id=item_id,
            operation="stems",
            job_id=ctx.job_id,
        )
        stem_ids[name] = stem.id
    return {"stem_ids": stem_ids}


def install(studio: Studio) -> None:
    """Register the stem separator's slot (Home shows it) and the "stems" job."""
    slot = demucs_slot(studio.settings, studio.device)
    studio.extra_slots.append(slot)
    studio.handlers["stems"] = partial(run_stems_job, studio, slot)
