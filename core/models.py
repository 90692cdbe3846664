"""Model slots: where a model's weights come from, and its state from download to ready.

A slot resolves a hub id (optionally a subfolder and revision) or a local folder to files
on disk, downloads them into the ordinary HF cache when needed (watching the bytes arrive,
so Home can show a percentage), and loads them with the slot's loader. Every failure ends
in a message a musician can act on, never a traceback on the page.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

log = logging.getLogger(__name__)

NOT_DOWNLOADED = "not downloaded"
DOWNLOADING = "downloading"
DOWNLOADED = "downloaded"
LOADING = "loading"
READY = "ready"
FAILED = "failed"


class ModelError(Exception):
    """A model could not be found, fetched or loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelStatus:
    key: str
    label: str
    source: str
    state: str
    downloaded_bytes: int = 0
    total_bytes: int = 0
    message: str = ""
    device: str = ""

    @property
    def fraction(self) -> float | None:
        if self.state != DOWNLOADING or not self.total_bytes:
            return None
        return min(self.downloaded_bytes / self.total_bytes, 1.0)


def is_local_source(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().is_dir()


class ModelSlot:
    """One model: its source, its download and load state, and the loaded object."""

    def __init__(
        self,
        key: str,
        label: str,
        source: str,
        loader: Callable[[Path], Any],
        *,
        subfolder: str = "",
        revision: str = "main",
        expected_bytes: int = 0,
        allow_patterns: list[str] | None = None,
    ):
        self.key = key
        self.label = label
        self.source = source
        self.subfolder = subfolder
        self.revision = revision
        self.expected_bytes = expected_bytes
        self.allow_patterns = allow_patterns
        self._loader = loader
        self._lock = threading.RLock()
        self._model: Any = None
        self._state = ""
        self._message = ""
        self._downloaded = 0
        self._total = 0
        self.last_used = 0.0
        self.device = ""
        # core.residency.Residency, when one manages this slot: it makes room on the GPU
        # before a load and brings back a model it moved to the CPU.
        self.residency: Any = None

    # --- state ---------------------------------------------------------------------------

    @property
    def loaded(self) -> Any:
        return self._model

    def status(self) -> ModelStatus:
        state = self._state or (DOWNLOADED if self._local_path(probe=True) else NOT_DOWNLOADED)
        return ModelStatus(
            key=self.key,
            label=self.label,
            source=self.display_source,
            state=state,
            downloaded_bytes=self._downloaded,
            total_bytes=self._total,
            message=self._message,
            device=self.device,
        )

    @property
    def display_source(self) -> str:
        if is_local_source(self.source):
            return self.source
        where = f"{self.source}/{self.subfolder}" if self.subfolder else self.source
        return where if self.revision == "main" else f"{where}@{self.revision}"

    # --- download and load ---------------------------------------------------------------

    def ensure(self) -> Any:
        """The loaded model, downloading and loading it first if needed. Thread-safe."""
        with self._lock:
            self.last_used = time.time()
            if self.residency is not None:
                self.residency.before_use(self)
            if self._model is not None:
                return self._model
            try:
                folder = self._local_path() or self._download()
                self._state, self._message = LOADING, ""
                started = time.time()
                self._model = self._loader(folder)
                log.info("loaded %s from %s in %.1f s", self.key, folder, time.time() - started)
            except ModelError as error:
                self._state, self._message = FAILED, str(error)
                raise
            except Exception as error:
                from core.device import is_out_of_memory

                if is_out_of_memory(error):
                    message = (
                        f"Not enough memory to load the {self.label}. Close other GPU programs, "
                        "or start the Studio with ACE_STUDIO_OFFLOAD=model."
                    )
                else:
                    message = f"The {self.label} could not be loaded: {error}"
                self._state, self._message = FAILED, message
                raise ModelError(message) from error
            self._state, self._message = READY, ""
            if self.residency is not None:
                self.residency.after_load(self)
            return self._model

    def unload(self) -> None:
        with self._lock:
            self._model = None
            self._state = ""
            self.device = ""

    def _local_path(self, probe: bool = False) -> Path | None:
        """The folder holding the weights when they are already on this machine."""
        if is_local_source(self.source):
            folder = Path(self.source).expanduser()
            if self.subfolder:
                folder = folder / self.subfolder
            if folder.is_dir():
                return folder
            if probe:
                return None
            raise ModelError(
                f"The folder {folder} for the {self.label} does not exist. Check the path in "
                "your settings."
            )
        try:
            root = snapshot_download(
                self.source,
                revision=self.revision,
                allow_patterns=self._patterns(),
                local_files_only=True,
            )
        except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
            return None
        folder = Path(root) / self.subfolder if self.subfolder else Path(root)
        return folder if folder.is_dir() and any(folder.iterdir()) else None

    def _patterns(self) -> list[str] | None:
        if self.allow_patterns:
            return self.allow_patterns
        return [f"{self.subfolder}/*"] if self.subfolder else None

    def _download(self) -> Path:
        if hub_constants.HF_HUB_OFFLINE:
            raise ModelError(
                f"The {self.label} ({self.display_source}) is not in the Hugging Face cache, and "
                "HF_HUB_OFFLINE is set. Download it on a connected machine, or point the "
                "setting at a local folder."
            )
        self._check_disk()
        self._state, self._message, self._downloaded = DOWNLOADING, "", 0
        self._total = self._remote_size() or self.expected_bytes
        done = threading.Event()
        watcher = threading.Thread(target=self._watch_download, args=(done,), daemon=True)
        watcher.start()
        try:
            root = snapshot_download(
                self.source, revision=self.revision, allow_patterns=self._patterns()
            )
        except RepositoryNotFoundError as error:
            raise ModelError(
                f"{self.source} does not exist on the Hugging Face hub (or is private: set "
                "HF_TOKEN). Check the model id in your settings."
            ) from error
        except GatedRepoError as error:
            raise ModelError(
                f"{self.source} is gated: accept its licence on the hub and set HF_TOKEN."
            ) from error
        except RevisionNotFoundError as error:
            raise ModelError(f"{self.source} has no revision {self.revision!r}.") from error
        except (HfHubHTTPError, OSError) as error:
            raise ModelError(
                f"Could not download the {self.label} from the Hugging Face hub: no network, "
                f"or the hub did not answer ({type(error).__name__}). Try again, or use a "
                "local folder."
            ) from error
        finally:
            done.set()
        self._downloaded = self._total
        folder = Path(root) / self.subfolder if self.subfolder else Path(root)
        if not folder.is_dir():
            raise ModelError(f"{self.display_source} has no folder {self.subfolder!r}.")
        return folder

    def _remote_size(self) -> int:
        try:
            files = snapshot_download(
                self.source, revision=self.revision, allow_patterns=self._patterns(), dry_run=True
            )
            return sum(info.file_size or 0 for info in files if info.will_download)
        except Exception:
            return 0

    def _watch_download(self, done: threading.Event) -> None:
        blobs = self._cache_folder() / "blobs"
        start = _folder_bytes(blobs)
        while not done.wait(0.5):
            self._downloaded = max(_folder_bytes(blobs) - start, 0)

    def _cache_folder(self) -> Path:
        return Path(hub_constants.HF_HUB_CACHE) / ("models--" + self.source.replace("/", "--"))

    def _check_disk(self) -> None:
        cache = Path(hub_constants.HF_HUB_CACHE)
        cache.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(cache).free
        if self.expected_bytes and free < self.expected_bytes * 1.05:
            raise ModelError(
                f"Not enough disk space for the {self.label}: it needs about "
                f"{self.expected_bytes / 1e9:.1f} GB and {cache} has {free / 1e9:.1f} GB free."
            )


def _folder_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total
