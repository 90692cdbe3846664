"""Shared fixtures: tiny models built once per test session, and a fresh Studio per test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

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


@pytest.fixture
def studio_env(tiny_dit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the pages' cached Studio at the tiny models and a fresh data folder.

    The Studio is cached process-wide by st.cache_resource, so each test gets its own and
    stops it afterwards. Yields the data folder.
    """
    data = tmp_path / "data"
    monkeypatch.setenv("ACE_STUDIO_DIT_MODEL", str(tiny_dit))
    monkeypatch.setenv("ACE_STUDIO_DATA_DIR", str(data))
    monkeypatch.setenv("ACE_STUDIO_DEVICE", "cpu")
    st.cache_resource.clear()
    yield data
    from core.resources import get_studio

    get_studio().stop()
    st.cache_resource.clear()


def run_until(at: AppTest, condition: Callable[[AppTest], bool], timeout: float = 120.0) -> AppTest:
    """AppTest never ticks fragment timers: rerun until the page shows what we wait for."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        if condition(at):
            return at
        time.sleep(0.1)
    raise AssertionError("the page never reached the expected state")
