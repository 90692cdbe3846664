"""The model residency manager with a simulated GPU budget: the least recently used idle
model makes room, the running job's models stay, the page is told, and an out-of-memory
load fails with a message while the Studio carries on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core import lyrics
from core.jobs import DONE, FAILED
from core.models import FAILED as MODEL_FAILED
from core.models import READY, ModelError, ModelSlot
from core.request import SongRequest
from core.residency import Residency, expected_bytes
from core.settings import Settings
from core.studio import Studio
from tests.conftest import wait_for
from tests.tiny.writer import tiny_writer_folder
from vendor.models import DEFAULT_DIT, PLANNER_MODELS, WRITER_MODELS

GB = 1_000_000_000


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def slot(tmp_path: Path, key: str, label: str, size: int, loader=None) -> ModelSlot:
    folder = tmp_path / key
    folder.mkdir(exist_ok=True)
    return ModelSlot(
        key, label, str(folder), loader or (lambda _: torch.nn.Linear(4, 4)), expected_bytes=size
    )


@pytest.fixture
def models(tmp_path: Path) -> dict[str, ModelSlot]:
    """The three big models of a Studio, at their real sizes from vendor/."""
    return {
        "dit": slot(tmp_path, "dit", "DiT pipeline", DEFAULT_DIT.weight_bytes),
        "planner": slot(
            tmp_path, "planner", "5 Hz LM planner", PLANNER_MODELS["1.7B"].weight_bytes
        ),
        "writer": slot(
            tmp_path, "writer", "lyric writer", WRITER_MODELS["transformers"].weight_bytes
        ),
    }


def managed(models: dict[str, ModelSlot], **options: object) -> Residency:
    residency = Residency("cpu", **options)
    for model in models.values():
        residency.manage(model)
    return residency


def use(*slots: ModelSlot) -> None:
    for model in slots:
        model.ensure()
        time.sleep(0.002)  # distinct last-used times, whatever the clock's resolution


def resident(residency: Residency) -> set[str]:
    return {entry.slot.key for entry in residency.managed() if entry.resident}


def test_least_recently_used_model_moves_to_the_cpu(models: dict[str, ModelSlot]) -> None:
    residency = managed(models, budget_bytes=30 * GB)
    dit, planner, writer = models["dit"], models["planner"], models["writer"]
    use(planner, dit)  # the planner is now the least recently used
    assert not residency.events
    use(writer)
    assert resident(residency) == {"dit", "writer"}
    assert list(residency.events) == [
        "Moved the 5 Hz LM planner to the CPU to make room for the lyric writer."
    ]
    assert planner.loaded is not None and planner.status().device == "cpu"
    # Coming back, the planner needs room again: now the DiT is the least recently used.
    use(planner)
    assert resident(residency) == {"planner", "writer"}
    assert residency.events[-1] == (
        "Moved the DiT pipeline to the CPU to make room for the 5 Hz LM planner."
    )
    assert planner.status().device == "cpu" and planner.loaded.weight.device.type == "cpu"


def test_the_other_order_moves_the_other_model(models: dict[str, ModelSlot]) -> None:
    residency = managed(models, budget_bytes=30 * GB)
    use(models["dit"], models["planner"], models["writer"])
    assert resident(residency) == {"planner", "writer"}
    assert residency.events[-1].startswith("Moved the DiT pipeline to the CPU")


def test_several_models_move_when_one_is_not_enough(models: dict[str, ModelSlot]) -> None:
    # On a 17 GB budget the writer needs both the DiT and the planner out of the way.
    residency = managed(models, budget_bytes=17 * GB)
    use(models["dit"], models["planner"], models["writer"])
    assert resident(residency) == {"writer"}
    assert len(residency.events) == 2


def test_the_running_jobs_models_stay(models: dict[str, ModelSlot]) -> None:
    residency = managed(models, budget_bytes=30 * GB)
    use(models["dit"], models["planner"])  # the DiT is the least recently used
    notes: list[str] = []
    with residency.job(notes.append):
        # A song job: it loaded the DiT first, and now wants the writer-sized model.
        use(models["dit"])
        use(models["writer"])
    assert resident(residency) == {"dit", "writer"}
    assert notes == ["Moved the 5 Hz LM planner to the CPU to make room for the lyric writer."]
    # Outside a job nothing is pinned, and nobody is told on a page.
    use(models["planner"])
    assert "planner" in resident(residency)
    assert len(notes) == 1


def test_a_model_that_cannot_move_is_unloaded(models: dict[str, ModelSlot], tmp_path: Path) -> None:
    models["planner"] = slot(
        tmp_path, "mlx", "5 Hz LM planner", PLANNER_MODELS["1.7B"].weight_bytes, lambda _: object()
    )
    residency = managed(models, budget_bytes=30 * GB)
    use(models["planner"], models["dit"], models["writer"])
    assert models["planner"].loaded is None
    assert residency.events[-1] == (
        "Unloaded the 5 Hz LM planner to make room for the lyric writer; it loads again when "
        "needed."
    )


def test_keep_resident_moves_nothing(models: dict[str, ModelSlot]) -> None:
    residency = managed(models, budget_bytes=20 * GB, keep_resident=True)
    use(*models.values())
    assert resident(residency) == {"dit", "planner", "writer"}
    assert not residency.events


def test_a_cpu_studio_has_nothing_to_make_room_on(models: dict[str, ModelSlot]) -> None:
    residency = managed(models)
    assert not residency.active
    use(*models.values())
    assert resident(residency) == {"dit", "planner", "writer"}


def test_sizes_come_from_vendor_or_the_weight_files(tmp_path: Path) -> None:
    local = slot(tmp_path, "local", "local model", 0)
    (tmp_path / "local" / "model.safetensors").write_bytes(b"x" * 1234)
    (tmp_path / "local" / "config.json").write_text("{}")
    assert expected_bytes(local) == 1234
    assert expected_bytes(slot(tmp_path, "hub", "hub model", 42)) == 42


def test_out_of_memory_while_loading_is_a_message(
    models: dict[str, ModelSlot], tmp_path: Path
) -> None:
    def too_big(_: Path) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 15.00 GiB")

    hog = slot(tmp_path, "hog", "lyric writer", WRITER_MODELS["transformers"].weight_bytes, too_big)
    residency = managed({**models, "hog": hog}, budget_bytes=30 * GB)
    use(models["dit"])
    with pytest.raises(ModelError, match="Not enough memory to load the lyric writer"):
        hog.ensure()
    assert hog.status().state == MODEL_FAILED
    # Nothing else was harmed: the DiT is still loaded and usable.
    assert "dit" in resident(residency) and models["dit"].status().state == READY


# --- in the Studio, with the tiny models ---------------------------------------------------------


@pytest.fixture
def small_gpu_studio(settings: Settings) -> Iterator[Studio]:
    studio = Studio(
        replace(settings, writer_model=str(tiny_writer_folder()), writer_backend="transformers")
    )
    dit_bytes = expected_bytes(studio.dit)
    writer_bytes = expected_bytes(lyrics.writer_slot(studio))
    # Room for either model, never both: what a 24 GB card is to the full-size ones.
    studio.residency.budget_bytes = max(dit_bytes, writer_bytes) + min(dit_bytes, writer_bytes) // 2
    studio.residency.margin_bytes = 0
    studio.start()
    yield studio
    studio.stop()


def test_songs_and_lyrics_take_turns_on_a_small_gpu(small_gpu_studio: Studio) -> None:
    studio = small_gpu_studio
    song = SongRequest(caption="bright synth pop", lyrics="[Verse 1]\nhello", duration=10, steps=2)
    first = wait_for(studio, studio.submit_song(song).id)
    assert first.status == DONE, first.error
    draft = wait_for(studio, lyrics.submit_lyrics(studio, lyrics.LyricsRequest(brief="rain")).id)
    assert draft.status == DONE, draft.error
    assert draft.message == "Moved the DiT pipeline to the CPU to make room for the lyric writer."
    assert studio.dit.status().device == "cpu"
    second = wait_for(studio, studio.submit_song(song).id)
    assert second.status == DONE, second.error
    assert second.message == "Moved the lyric writer to the CPU to make room for the DiT pipeline."
    assert lyrics.writer_slot(studio).status().device == "cpu"
    assert studio.dit.status().device == studio.device


def test_an_out_of_memory_load_fails_the_job_and_the_studio_carries_on(
    settings: Settings, tmp_path: Path
) -> None:
    def too_big(_: Path) -> object:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 15.00 GiB")

    studio = Studio(replace(settings, writer_backend="transformers"))
    # A writer whose load runs out of memory, in place of the real one.
    hog = slot(tmp_path, "writer", "lyric writer", 15 * GB, too_big)
    studio.extra_slots = [hog if model.key == "writer" else model for model in studio.extra_slots]
    studio.residency.manage(hog)
    studio.start()
    try:
        failed = wait_for(studio, lyrics.submit_lyrics(studio, lyrics.LyricsRequest(brief="x")).id)
        assert failed.status == FAILED
        assert failed.error.startswith("Not enough memory to load the lyric writer.")
        assert hog.status().state == MODEL_FAILED
        song = SongRequest(caption="synth pop", lyrics="[Verse 1]\nhello", duration=10, steps=2)
        after = wait_for(studio, studio.submit_song(song).id)
        assert after.status == DONE, after.error
    finally:
        studio.stop()
