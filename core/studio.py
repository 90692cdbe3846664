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
from core.settings import Settings
from core.song import SongEngine
from vendor.models import DEFAULT_DIT, DIT_MODELS

log = logging.getLogger(__name__)

# Feature modules that plug into the Studio: each has `install(studio)`, which adds its
# model slots, job handlers and song-pipeline stages. One line per feature.
FEATURES: tuple[str, ...] = ()


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
        self.handlers: dict[str, Handler] = {"song": self.songs.run_job}
        self.extra_slots: list[ModelSlot] = []
        self.worker: Worker | None = None
        for feature in FEATURES:
            importlib.import_module(feature).install(self)

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> Studio:
        self.worker = Worker(
            self.jobs,
            self.handlers,
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
        except Exception:  # noqa: BLE001 - the failure shows on Home; jobs retry the load
            log.warning("DiT preload failed: %s", self.dit.status().message)

    # --- models --------------------------------------------------------------------------

    def load_dit(self) -> LoadedDit:
        return self.dit.ensure()

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
