"""The Studio: one object that owns the settings, the models, the worker and the library.

Pages reach it through `core.resources.get_studio()`, which caches one per process, so
every browser session shares the same queue, models and library.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from core import device as devices
from core.db import Database
from core.dit import LoadedDit, load_dit
from core.jobs import Handler, Job, JobQueue, StudioError, Worker
from core.library import Library
from core.models import ModelSlot, ModelStatus, is_local_source
from core.request import SongRequest, validate
from core.residency import Residency
from core.settings import Settings
from core.song import SongEngine
from vendor.models import DEFAULT_DIT, DIT_MODELS, DIT_VARIANT_DEFAULTS, VariantDefaults

log = logging.getLogger(__name__)

# Feature modules that plug into the Studio: each has `install(studio)`, which adds its
# model slots, job handlers and song-pipeline stages. One line per feature.
FEATURES: tuple[str, ...] = ("core.lyrics", "core.stems", "core.lora", "core.tasks", "core.planner")


class Studio:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device, self.dtype = devices.resolve(settings)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.db_path)
        self.library = Library(settings.data_dir, self.db)
        self.jobs = JobQueue(self.db)
        self.dit = ModelSlot(
            "dit",
            "DiT pipeline",
            settings.dit_model,
            partial(load_dit, settings=settings, device=self.device, dtype=self.dtype),
            revision=settings.dit_revision,
            expected_bytes=_expected_dit_bytes(settings.dit_model),
        )
        self.songs = SongEngine(self)
        # Stages that later features plug into the song pipeline, by task or concern.
        self.task_stages: dict[str, Callable[..., Any]] = {}
        self.planner_stage: Callable[..., SongRequest] | None = None
        self.lora_stage: Callable[[LoadedDit, SongRequest], None] | None = None
        self.handlers: dict[str, Handler] = {"song": self.songs.run_job, "load": self._load_job}
        self.extra_slots: list[ModelSlot] = []
        self.worker: Worker | None = None
        for feature in FEATURES:
            importlib.import_module(feature).install(self)
        # Models share the GPU by least recent use; an offloaded DiT manages itself.
        self.residency = Residency(self.device, keep_resident=settings.keep_resident)
        if settings.offload == "none":
            self.residency.manage(self.dit)
        for slot in self.extra_slots:
            self.residency.manage(slot)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Studio:
        self.worker = Worker(
            self.jobs,
            {kind: self.residency.during_job(run) for kind, run in self.handlers.items()},
            device=self.device,
            on_idle=self._preload if self.settings.preload else None,
            on_error=lambda: devices.free_cached_memory(self.device),
        )
        self.worker.start()
        return self

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.db.close()

    def _preload(self) -> None:
        try:
            self.dit.ensure()
        except Exception:
            log.warning("DiT preload failed: %s", self.dit.status().message)

    def _load_job(self, ctx: Any, payload: dict[str, Any]) -> dict[str, Any]:
        """Load one model now (Home's "Load now"), on the worker so it never races a job."""
        slots = {slot.key: slot for slot in self.model_slots()}
        slot = slots.get(payload.get("model", "dit"))
        if slot is None:
            raise StudioError(f"There is no model {payload.get('model')!r} in this Studio.")
        ctx.progress(f"loading {slot.label}", 0, 1)
        slot.ensure()
        return {"model": slot.key}

    # --- models --------------------------------------------------------------------------

    def load_dit(self) -> LoadedDit:
        return self.dit.ensure()

    def variant_defaults(self) -> VariantDefaults:
        """Sampling defaults of the DiT: from the loaded model, or guessed from its name."""
        loaded = self.dit.loaded
        if loaded is not None:
            return loaded.defaults
        name = self.settings.dit_model.lower()
        variant = "turbo" if "turbo" in name else "base" if "base" in name else "sft"
        return DIT_VARIANT_DEFAULTS[variant]

    def model_statuses(self) -> list[ModelStatus]:
        return [slot.status() for slot in self.model_slots()]

    def model_slots(self) -> list[ModelSlot]:
        return [self.dit, *self.extra_slots]

    def device_info(self) -> devices.DeviceInfo:
        return devices.device_info(self.device)

    def model_provenance(self, dit: LoadedDit) -> dict[str, Any]:
        return {
            "dit": {"source": dit.source, "revision": dit.revision, "variant": dit.variant},
            "device": dit.device,
            "dtype": str(dit.dtype).removeprefix("torch."),
        }

    def apply_loras(self, dit: LoadedDit, request: SongRequest) -> None:
        if self.lora_stage is not None:
            self.lora_stage(dit, request)
        elif request.loras:
            raise StudioError("LoRAs are not available in this Studio.")

    # --- jobs ----------------------------------------------------------------------------

    def submit_song(self, request: SongRequest) -> Job:
        """Validate (raising InvalidRequest with every problem) and queue a song."""
        request = validate(request, self.settings)
        return self.jobs.submit("song", {"request": request.to_dict()})

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, with the same payload."""
        job = self.jobs.get(job_id)
        if job is None:
            raise StudioError("That job is no longer in the queue.")
        return self.jobs.submit(job.kind, job.payload)

    def retake(self, item_id: str) -> Job:
        """Queue the same settings as a take, with a new random seed."""
        item = self.library.get(item_id)
        request = SongRequest.from_dict(item.meta["request"])
        return self.submit_song(replace(request, seed=None, takes=1))


def _expected_dit_bytes(source: str) -> int:
    if is_local_source(source):
        return 0
    for facts in DIT_MODELS.values():
        if facts.repo_id == source:
            return facts.weight_bytes
    return DEFAULT_DIT.weight_bytes
