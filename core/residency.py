"""Which models stay on the GPU: room is made before a load, by least recent use.

The XL pipeline (~11.5 GB), the planner (~3.4 GB) and the 7B lyric writer (~15 GB) do not
all fit on a 24 GB card. Before a managed slot loads (or comes back from the CPU), the
manager compares the device's free memory with the model's size from `vendor/`; when it is
short, it moves the least recently used idle model to the CPU (or unloads it, when the
model cannot move), and tells the musician on the running job's page.

"Idle" means not used by the job that is running now: a song job that loaded the DiT and
then loads the planner must not lose its DiT half-way. All loads happen on the one worker
thread, so the manager never races another load.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.jobs import Handler, JobContext
from core.models import ModelSlot, is_local_source

log = logging.getLogger(__name__)

OFFLOAD_DEVICE = "cpu"
# Head-room kept free beyond the weights: activations, KV caches and the CUDA context.
DEFAULT_MARGIN_BYTES = 1_000_000_000
# RAM left to the rest of the machine when a model is moved to the CPU.
HOST_HEADROOM_BYTES = 4_000_000_000
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".th", ".npz")

Mover = Callable[[Any, str], None]


@dataclass
class Managed:
    slot: ModelSlot
    move: Mover | None
    """Moves the loaded object between devices; None: the model can only be unloaded."""
    device_bytes: int = 0
    """Device memory the loaded model took, measured at load; 0 until then."""
    offloaded: bool = False

    @property
    def resident(self) -> bool:
        return self.slot.loaded is not None and not self.offloaded

    def size(self) -> int:
        return self.device_bytes or expected_bytes(self.slot)


def expected_bytes(slot: ModelSlot) -> int:
    """The model's size from `vendor/` facts, or its weight files when it is a local folder."""
    if slot.expected_bytes:
        return slot.expected_bytes
    if is_local_source(slot.source):
        folder = Path(slot.source).expanduser() / slot.subfolder
        if folder.is_dir():
            return sum(
                path.stat().st_size
                for path in folder.rglob("*")
                if path.is_file() and path.suffix in WEIGHT_SUFFIXES
            )
    return 0


def move_model(model: Any, device: str) -> None:
    """Move a loaded model object: its own `move_to`, a diffusers pipeline, or a module."""
    import torch

    if hasattr(model, "move_to"):
        model.move_to(device)
    elif hasattr(model, "pipe") and hasattr(model.pipe, "to"):
        model.pipe.to(device)
    elif isinstance(model, torch.nn.Module):
        model.to(device)
    elif isinstance(getattr(model, "model", None), torch.nn.Module):
        model.model.to(device)
    else:
        raise TypeError(f"cannot move a {type(model).__name__}")


def can_move(model: Any) -> bool:
    import torch

    return (
        hasattr(model, "move_to")
        or (hasattr(model, "pipe") and hasattr(model.pipe, "to"))
        or isinstance(model, torch.nn.Module)
        or isinstance(getattr(model, "model", None), torch.nn.Module)
    )


def accelerator_free_bytes(device: str) -> int:
    """Free device memory, counting what torch's caching allocator holds but does not use."""
    import torch

    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
    from core.device import device_info

    return int(device_info(device).free_bytes or 0)


def host_available_bytes() -> int:
    """Memory the CPU side can still take without swapping (MemAvailable on Linux)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    from core.device import device_info

    return int(device_info(OFFLOAD_DEVICE).free_bytes or 0)


def allocated_bytes(device: str) -> int:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    if device == "mps":
        return int(torch.mps.current_allocated_memory())
    return 0


class Residency:
    """Makes room on the accelerator before a managed model loads or comes back.

    `budget_bytes` caps what the Studio's models may use together on the device (also how
    tests simulate a small GPU); `free_bytes` replaces the free-memory reading.
    """

    def __init__(
        self,
        device: str,
        *,
        keep_resident: bool = False,
        budget_bytes: int | None = None,
        free_bytes: Callable[[], int] | None = None,
        margin_bytes: int = DEFAULT_MARGIN_BYTES,
    ):
        self.device = device
        self.keep_resident = keep_resident
        self.budget_bytes = budget_bytes
        self.margin_bytes = margin_bytes
        self._free_bytes = free_bytes
        self._managed: dict[str, Managed] = {}
        self._lock = threading.RLock()
        self._in_job: set[str] | None = None
        self._note: Callable[[str], None] | None = None
        self._baseline = 0
        self.events: deque[str] = deque(maxlen=20)
        """Recent moves, newest last, for pages that show what happened outside a job."""

    @property
    def active(self) -> bool:
        """On a CPU-only Studio there is nothing to make room on, unless a budget is set."""
        if self.keep_resident:
            return False
        return self.device != OFFLOAD_DEVICE or self.budget_bytes is not None

    def manage(self, slot: ModelSlot, *, movable: bool = True) -> None:
        """Watch a slot; `movable=False` for models that can only be unloaded to make room."""
        self._managed[slot.key] = Managed(slot, move_model if movable else None)
        slot.residency = self

    def managed(self) -> list[Managed]:
        return list(self._managed.values())

    # --- memory --------------------------------------------------------------------------

    def resident_bytes(self) -> int:
        return sum(entry.size() for entry in self._managed.values() if entry.resident)

    def free_bytes(self) -> int:
        free = [self._free_bytes()] if self._free_bytes else []
        if not free and self.device != OFFLOAD_DEVICE:
            free.append(accelerator_free_bytes(self.device))
        if self.budget_bytes is not None:
            free.append(self.budget_bytes - self.resident_bytes())
        return min(free) if free else 0

    # --- the running job -----------------------------------------------------------------

    def during_job(self, handler: Handler) -> Handler:
        """Wrap a job handler: models it uses stay put, and moves are reported on its page."""

        def run(ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
            with self.job(ctx.note):
                return handler(ctx, payload)

        return run

    @contextmanager
    def job(self, note: Callable[[str], None]) -> Iterator[None]:
        with self._lock:
            self._in_job, self._note = set(), note
        try:
            yield
        finally:
            with self._lock:
                self._in_job, self._note = None, None

    # --- hooks called by ModelSlot.ensure ------------------------------------------------

    def before_use(self, slot: ModelSlot) -> None:
        """Make room for the slot's model, and bring it back if it was moved to the CPU."""
        entry = self._managed.get(slot.key)
        if entry is None:
            return
        with self._lock:
            if self._in_job is not None:
                self._in_job.add(slot.key)
            if slot.loaded is None:
                entry.offloaded = False
                if self.active:
                    self._make_room(entry, entry.size())
                self._baseline = allocated_bytes(self.device)
            elif entry.offloaded:
                if self.active:
                    self._make_room(entry, entry.size())
                self._move(entry, offload=False)

    def after_load(self, slot: ModelSlot) -> None:
        entry = self._managed.get(slot.key)
        if entry is None:
            return
        grown = allocated_bytes(self.device) - self._baseline
        if grown > 0:
            entry.device_bytes = grown
        slot.device = str(getattr(slot.loaded, "device", "") or self.device)

    # --- making room ---------------------------------------------------------------------

    def _make_room(self, wanted: Managed, needed: int) -> None:
        free = self.free_bytes()
        if free >= needed + self.margin_bytes:
            return
        for victim in self._eviction_order(wanted):
            self._evict(victim, wanted)
            free = self.free_bytes()
            if free >= needed + self.margin_bytes:
                return
        log.warning(
            "only %.1f GB free for the %s (about %.1f GB); loading anyway",
            free / 1e9,
            wanted.slot.label,
            needed / 1e9,
        )

    def _eviction_order(self, wanted: Managed) -> list[Managed]:
        """Resident models the running job has not used, least recently used first."""
        in_job = self._in_job or set()
        candidates = [
            entry
            for entry in self._managed.values()
            if entry is not wanted and entry.resident and entry.slot.key not in in_job
        ]
        return sorted(candidates, key=lambda entry: entry.slot.last_used)

    def _evict(self, victim: Managed, wanted: Managed) -> None:
        started = time.time()
        if victim.move is not None and can_move(victim.slot.loaded) and self._host_has_room(victim):
            self._move(victim, offload=True)
            message = (
                f"Moved the {victim.slot.label} to the CPU to make room for the "
                f"{wanted.slot.label}."
            )
        else:
            victim.slot.unload()
            victim.offloaded = False
            gc.collect()
            message = (
                f"Unloaded the {victim.slot.label} to make room for the {wanted.slot.label}; "
                "it loads again when needed."
            )
        self._free_cache()
        log.info("%s (%.1f s)", message, time.time() - started)
        self._tell(message)

    def _host_has_room(self, entry: Managed) -> bool:
        """Moving to the CPU keeps the model for a quick return, but only pays when the
        machine has the RAM: a 15 GB writer on a 16 GB laptop would swap. Unload instead."""
        if self.device == OFFLOAD_DEVICE:
            return True  # a simulated budget: nothing really moves
        return host_available_bytes() >= entry.size() + HOST_HEADROOM_BYTES

    def _move(self, entry: Managed, *, offload: bool) -> None:
        assert entry.move is not None
        device = OFFLOAD_DEVICE if offload else self.device
        entry.move(entry.slot.loaded, device)
        entry.offloaded = offload
        entry.slot.device = device

    def _free_cache(self) -> None:
        from core.device import free_cached_memory

        free_cached_memory(self.device)

    def _tell(self, message: str) -> None:
        self.events.append(message)
        if self._note is not None:
            self._note(message)
