"""Shared fixtures: tiny models built once per test session, and a fresh Studio per test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.jobs import Job
from core.settings import Settings
from core.studio import Studio
from tests.tiny.dit import build_tiny_dit

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_dit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dit(tmp_path_factory.mktemp("models") / "tiny-dit")


@pytest.fixture(scope="session")
def tiny_turbo_dit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dit(tmp_path_factory.mktemp("models") / "tiny-dit-turbo", variant="turbo")


@pytest.fixture
def settings(tiny_dit: Path, tmp_path: Path) -> Settings:
    return Settings(
        dit_model=str(tiny_dit), data_dir=tmp_path / "data", device="cpu", preload=False
    )


@pytest.fixture
def studio(settings: Settings) -> Iterator[Studio]:
    studio = Studio(settings).start()
    yield studio
    studio.stop()


def wait_for(studio: Studio, job_id: str, timeout: float = 120.0) -> Job:
    """Poll a job until it finishes; the worker runs on its own thread."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = studio.jobs.get(job_id)
        assert job is not None
        if job.is_finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")
