"""Studio settings, read once from `ACE_STUDIO_*` environment variables.

Every setting has a documented default; `settings_table()` renders them for the README, and
a test keeps the two in step. `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE` keep their usual
meaning and are read by huggingface_hub itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from vendor.models import DEFAULT_DIT, DEFAULT_PLANNER, HTDEMUCS, PLANNER_MODELS, WRITER_MODELS

PREFIX = "ACE_STUDIO_"

OffloadMode = Literal["none", "model", "sequential"]
DeviceChoice = Literal["auto", "cuda", "mps", "cpu"]


class SettingsError(ValueError):
    """An environment variable holds a value the Studio cannot use."""


def _setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    dit_model: str = _setting(DEFAULT_DIT.repo_id, "DiT pipeline: a hub id or a local folder.")
    dit_revision: str = _setting("main", "Hub revision (branch, tag or commit) of the DiT.")
    device: DeviceChoice = _setting("auto", "auto picks CUDA, then MPS, then CPU.")
    dtype: str = _setting(
        "auto", "auto: bfloat16 on CUDA, float16 on MPS, float32 on CPU; or force one."
    )
    data_dir: Path = _setting(Path("data"), "Library, job queue and uploads live here.")
    offload: OffloadMode = _setting(
        "none", "none, model (whole models to CPU between uses) or sequential (layer by layer)."
    )
    vae_tiling: bool = _setting(True, "Decode long songs in tiles so memory stays flat.")
    max_duration: int = _setting(600, "Longest song in seconds (ACE-Step's limit is 600).")
    max_takes: int = _setting(4, "Most takes per request.")
    max_upload_mb: int = _setting(200, "Largest audio upload in MB.")
    preload: bool = _setting(True, "Load the DiT when the Studio starts, not on the first song.")
    poll_seconds: float = _setting(0.5, "How often a page refreshes a running job's status.")
    planner_model: str = _setting(
        DEFAULT_PLANNER.repo_id, "5 Hz LM planner: a hub id or a local folder."
    )
    planner_subfolder: str = _setting(
        DEFAULT_PLANNER.subfolder or "", "Subfolder of the planner inside its repo."
    )
    planner_revision: str = _setting("main", "Hub revision of the planner.")
    planner_size: str = _setting("1.7B", "Planner size: 0.6B, 1.7B or 4B.")
    writer_model: str = _setting(
        WRITER_MODELS["transformers"].repo_id, "Lyric writer for transformers (CUDA and CPU)."
    )
    writer_mlx_model: str = _setting(
        WRITER_MODELS["mlx"].repo_id, "Lyric writer for mlx-lm on Apple Silicon."
    )
    writer_backend: str = _setting("auto", "auto (mlx on Apple Silicon), transformers or mlx.")
    demucs_model: str = _setting(HTDEMUCS.key, "Demucs model name.")
    demucs_repo: str = _setting(
        "", "Folder holding the demucs yaml and weights, for offline use; empty downloads them."
    )
    lora_presets: str = _setting("", "JSON manifest of LoRA presets; empty uses the built-in one.")
    max_lora_mb: int = _setting(500, "Largest LoRA file in MB.")
    keep_resident: bool = _setting(False, "Keep every model on the GPU (for large GPUs).")
    fast_decode: bool = _setting(True, "Static KV cache and CUDA graphs for the LMs on CUDA.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f.name, raw.strip(), f.default)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.device not in ("auto", "cuda", "mps", "cpu"):
            raise SettingsError(
                f"{PREFIX}DEVICE must be auto, cuda, mps or cpu, not {self.device!r}."
            )
        if self.offload not in ("none", "model", "sequential"):
            raise SettingsError(
                f"{PREFIX}OFFLOAD must be none, model or sequential, not {self.offload!r}."
            )
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise SettingsError(
                f"{PREFIX}DTYPE must be auto, bfloat16, float16 or float32, not {self.dtype!r}."
            )
        if not 10 <= self.max_duration <= 600:
            raise SettingsError(f"{PREFIX}MAX_DURATION must be between 10 and 600 seconds.")
        if not 1 <= self.max_takes <= 4:
            raise SettingsError(f"{PREFIX}MAX_TAKES must be between 1 and 4.")
        if self.planner_size not in PLANNER_MODELS:
            raise SettingsError(
                f"{PREFIX}PLANNER_SIZE must be one of {', '.join(PLANNER_MODELS)}, "
                f"not {self.planner_size!r}."
            )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "studio.db"


def _parse(name: str, raw: str, default: Any) -> Any:
    env = PREFIX + name.upper()
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{env} must be true or false, not {raw!r}.")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{env} must be a whole number, not {raw!r}.") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{env} must be a number, not {raw!r}.") from None
    if isinstance(default, Path):
        return Path(raw).expanduser()
    return raw


def settings_table() -> str:
    """The configuration table of the README, one row per setting."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for f in fields(Settings):
        default = f.default if f.default != "" else "(empty)"
        rows.append(f"| `{PREFIX}{f.name.upper()}` | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)
