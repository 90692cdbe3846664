"""Stems on a tiny HT-Demucs saved as demucs' real checkpoints are: load, separate, store, cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core import stems
from core.audio import SAMPLE_RATE
from core.jobs import CANCELLED, DONE, FAILED, RUNNING
from core.models import READY, ModelError
from core.settings import Settings
from core.studio import Studio
from tests.conftest import wait_for
from tests.tiny.demucs import SIGNATURE, build_tiny_demucs


@pytest.fixture(scope="module")
def tiny_demucs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_demucs(tmp_path_factory.mktemp("models") / "demucs")


def _studio(tiny_dit: Path, data: Path, demucs_repo: Path) -> Studio:
    settings = Settings(
        dit_model=str(tiny_dit),
        data_dir=data,
        device="cpu",
        preload=False,
        demucs_repo=str(demucs_repo),
    )
    return Studio(settings).start()


@pytest.fixture
def studio_with_demucs(tiny_dit: Path, tiny_demucs: Path, tmp_path: Path) -> Iterator[Studio]:
    studio = _studio(tiny_dit, tmp_path / "data", tiny_demucs)
    yield studio
    studio.stop()


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frames = int(seconds * SAMPLE_RATE) + 7  # not a round number of anything
    t = np.arange(frames) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    return (np.stack([tone, tone]) + 0.05 * rng.standard_normal((2, frames))).astype(np.float32)


def _add_take(studio: Studio, samples: np.ndarray) -> str:
    item = studio.library.add(
        "take",
        {"request": {"caption": "test"}, "seed": 3},
        samples=samples,
        title="Night Drive",
        caption="test",
        take_index=0,
    )
    return item.id


def test_tiny_checkpoint_is_laid_out_like_the_real_one(tiny_demucs: Path) -> None:
    from demucs.pretrained import get_model

    names = sorted(path.name for path in tiny_demucs.iterdir())
    assert names[0].startswith(f"{SIGNATURE}-") and names[0].endswith(".th")
    assert names[1] == "htdemucs.yaml"
    model = get_model("htdemucs", repo=tiny_demucs)  # demucs' own loader checks the sha256
    assert model.sources == ["drums", "bass", "other", "vocals"]
    assert model.samplerate == 44_100


def test_separate_gives_four_stems_of_the_takes_shape(tiny_demucs: Path) -> None:
    model = stems.load_demucs(tiny_demucs, "htdemucs", "cpu")
    mix = _music(3.0)
    progress: list[float] = []
    result = stems.separate(model, mix, on_progress=progress.append)
    assert list(result) == ["vocals", "drums", "bass", "other"]
    for stem in result.values():
        assert stem.shape == mix.shape  # 48 kHz, stereo, to the sample
        assert stem.dtype == np.float32
        assert np.all(np.isfinite(stem))
        assert np.max(np.abs(stem)) > 0
    assert progress == sorted(progress)
    assert progress[0] > 0 and progress[-1] <= 1.0


def test_a_raising_progress_callback_stops_the_separation(tiny_demucs: Path) -> None:
    model = stems.load_demucs(tiny_demucs, "htdemucs", "cpu")
    calls: list[float] = []

    def cancel_after_first(fraction: float) -> None:
        calls.append(fraction)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stems.separate(model, _music(12.0), on_progress=cancel_after_first)
    assert len(calls) == 1


def test_stems_job_stores_four_children_of_the_take(studio_with_demucs: Studio) -> None:
    studio = studio_with_demucs
    mix = _music(3.0)
    take_id = _add_take(studio, mix)
    job = wait_for(studio, stems.submit_stems(studio, take_id).id)
    assert job.status == DONE, job.error
    found = stems.stems_of(studio, take_id)
    assert list(found) == ["vocals", "drums", "bass", "other"]
    for name, item in found.items():
        assert item.kind == "stem"
        assert item.parent_id == take_id
        assert item.operation == "stems"
        assert item.meta["stem"] == name
        assert item.title == f"Night Drive · {stems.STEM_LABELS[name]}"
        audio = studio.library.read_audio(item.id)
        assert audio.sample_rate == SAMPLE_RATE
        assert audio.samples.shape == mix.shape
    assert job.timings["separate_seconds"] > 0
    slot = next(s for s in studio.model_slots() if s.key == "demucs")
    assert slot.status().state == READY
    # Asking again reuses the stems instead of separating twice.
    again = wait_for(studio, stems.submit_stems(studio, take_id).id)
    assert again.result["reused"] is True
    assert len(studio.library.children(take_id, kinds=("stem",))) == 4
    # Deleting the take takes its stems with it.
    studio.library.delete(take_id)
    assert all(studio.library.find(item.id) is None for item in found.values())


def test_cancel_stops_a_running_separation(studio_with_demucs: Studio) -> None:
    studio = studio_with_demucs
    take_id = _add_take(studio, _music(60.0))
    job = stems.submit_stems(studio, take_id)
    deadline = time.time() + 60
    while time.time() < deadline:
        current = studio.jobs.get(job.id)
        if current.status == RUNNING and current.phase == "separating" and current.step > 0:
            break
        assert not current.is_finished, "the separation ended before it could be cancelled"
        time.sleep(0.02)
    assert studio.jobs.cancel(job.id)
    finished = wait_for(studio, job.id)
    assert finished.status == CANCELLED
    assert finished.step < finished.total_steps
    assert studio.library.children(take_id, kinds=("stem",)) == []


def test_stems_refuse_what_cannot_be_separated(studio_with_demucs: Studio) -> None:
    studio = studio_with_demucs
    lyrics = studio.library.add("lyrics", {"text": "la"}, title="words")
    with pytest.raises(Exception, match="no audio"):
        stems.submit_stems(studio, lyrics.id)


def test_missing_weight_file_gets_a_clear_message(tiny_dit: Path, tmp_path: Path) -> None:
    folder = tmp_path / "demucs"
    folder.mkdir()
    (folder / "htdemucs.yaml").write_text(f"models: ['{SIGNATURE}']\n")
    studio = _studio(tiny_dit, tmp_path / "data", folder)
    try:
        take_id = _add_take(studio, _music(2.0))
        job = wait_for(studio, stems.submit_stems(studio, take_id).id)
        assert job.status == FAILED
        assert "weight file" in job.error and "missing" in job.error
        assert "955717e8-8726e21a.th" in job.error
        slot = next(s for s in studio.model_slots() if s.key == "demucs")
        assert slot.status().state == "failed"
    finally:
        studio.stop()


def test_empty_or_absent_folder_gets_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"neither htdemucs\.yaml nor"):
        stems.load_demucs(tmp_path, "htdemucs", "cpu")
    slot = stems.demucs_slot(
        Settings(data_dir=tmp_path, demucs_repo=str(tmp_path / "nowhere")), "cpu"
    )
    with pytest.raises(ModelError, match="does not exist"):
        slot.ensure()


def test_damaged_weight_file_is_caught_by_its_checksum(tiny_demucs: Path, tmp_path: Path) -> None:
    folder = tmp_path / "demucs"
    folder.mkdir()
    for path in tiny_demucs.iterdir():
        payload = path.read_bytes()
        if path.suffix == ".th":
            payload = payload[:-10] + b"\0" * 10
        (folder / path.name).write_bytes(payload)
    with pytest.raises(ModelError, match="damaged"):
        stems.load_demucs(folder, "htdemucs", "cpu")


def test_hub_source_is_demucs_own(tmp_path: Path) -> None:
    slot = stems.demucs_slot(Settings(data_dir=tmp_path), "cpu")
    assert slot.source == "adefossez/HTDemucs"
    assert slot.allow_patterns == ["htdemucs.yaml", "*.safetensors"]
