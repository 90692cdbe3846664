"""Build every tiny model into one folder and return the settings that point the Studio at it.

Used by the browser tests' server and by `make run-tiny`; each feature adds its models here.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny.demucs import build_tiny_demucs
from tests.tiny.dit import build_tiny_dit
from tests.tiny.planner import build_tiny_planner
from tests.tiny.writer import build_tiny_writer


def build_all(folder: Path) -> dict[str, str]:
    """Build (or reuse) the tiny models under `folder`; returns ACE_STUDIO_* variables."""
    folder.mkdir(parents=True, exist_ok=True)
    env: dict[str, str] = {}
    dit = folder / "dit"
    if not (dit / "model_index.json").exists():
        build_tiny_dit(dit)
    env["ACE_STUDIO_DIT_MODEL"] = str(dit)
    demucs = folder / "demucs"
    if not (demucs / "htdemucs.yaml").exists():
        build_tiny_demucs(demucs)
    env["ACE_STUDIO_DEMUCS_REPO"] = str(demucs)
    writer = folder / "writer"
    if not (writer / "config.json").exists():
        build_tiny_writer(writer)
    env["ACE_STUDIO_WRITER_MODEL"] = str(writer)
    # The tiny writer is a transformers checkpoint, also on a Mac with mlx-lm installed.
    env["ACE_STUDIO_WRITER_BACKEND"] = "transformers"
    # The planner's umbrella folder, as ACE-Step/Ace-Step1.5 holds acestep-5Hz-lm-1.7B.
    env["ACE_STUDIO_PLANNER_MODEL"] = str(build_tiny_planner(folder / "Ace-Step1.5"))
    return env
