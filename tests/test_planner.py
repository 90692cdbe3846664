"""The planner in the Studio, end to end on tiny random models (a Qwen3 planner in the real
`Ace-Step1.5/acestep-5Hz-lm-1.7B` layout, and the tiny DiT): planned songs, seeds, skipped
reasoning, the Create sample / Format / Understand jobs, cancel and bad sizes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.jobs import CANCELLED, DONE, FAILED, Job, StudioError
from core.planner import SKIPPED_REASONING_NOTE, fit_caption, planner_source
from core.request import CAPTION_MAX_CHARS, SongRequest, Thinking
from core.settings import Settings, SettingsError
from core.studio import Studio
from tests.conftest import wait_for
from tests.tiny.planner import build_tiny_planner

SAMPLES_PER_CODE = 48_000 // 5


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_planner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The umbrella folder; the planner sits in its acestep-5Hz-lm-1.7B subfolder."""
    return build_tiny_planner(tmp_path_factory.mktemp("models") / "Ace-Step1.5")


@pytest.fixture
def studio(settings: Settings, tiny_planner: Path) -> Iterator[Studio]:
    studio = Studio(replace(settings, planner_model=str(tiny_planner))).start()
    yield studio
    studio.stop()


def song(**changes) -> SongRequest:
    base = SongRequest(
        caption="uplifting synth pop with bright pads",
        lyrics="[Verse 1]\nwalking down the empty road tonight",
        duration=14,
        seed=11,
        steps=4,  # the DiT's share of these tests; the planner is what they check
        thinking=Thinking(enabled=True),
    )
    return replace(base, **changes)


def finished(studio: Studio, request: SongRequest) -> Job:
    job = wait_for(studio, studio.submit_song(request).id)
    assert job.status == DONE, job.error
    return job


def only_take(studio: Studio, job: Job):
    (take,) = studio.library.for_job(job.id)
    return take


def test_a_planned_song_is_as_long_as_its_codes(studio: Studio):
    job = finished(studio, song(bpm=100, language="unknown"))
    plan = job.plan
    assert plan is not None
    assert plan["codes"] == 14 * 5
    assert plan["audio_codes"].count("<|audio_code_") == 70
    take = only_take(studio, job)
    samples = studio.library.read_audio(take.id).samples
    assert samples.shape == (2, plan["codes"] * SAMPLES_PER_CODE)
    request = take.meta["request"]
    # The take keeps the plan and the codes, so the exact song can be replayed.
    assert take.meta["plan"]["audio_codes"] == request["audio_codes"] == plan["audio_codes"]
    assert request["caption"] == plan["caption"] != plan["user_caption"]
    assert request["bpm"] == 100  # the musician's value wins
    assert request["key"] == plan["key"] is not None  # inferred where left empty
    assert request["time_signature"] == plan["time_signature"] is not None
    # "unknown" becomes the detected language (upstream's language/vocal_language bug).
    assert request["language"] == plan["language"] != "unknown"
    assert job.timings["planning_seconds"] > 0


def test_same_seed_same_plan(studio: Studio):
    first = finished(studio, song()).plan
    again = finished(studio, song()).plan
    other = finished(studio, song(seed=12)).plan
    assert first["audio_codes"] == again["audio_codes"]
    assert first["caption"] == again["caption"]
    assert other["audio_codes"] != first["audio_codes"]


def test_with_every_field_set_the_reasoning_is_skipped_and_said_so(studio: Studio):
    job = finished(studio, song(bpm=92, key="A minor", time_signature=3, duration=12))
    assert job.plan["skipped_reasoning"] and job.plan["reasoning"] == ""
    assert job.plan["codes"] == 60
    assert SKIPPED_REASONING_NOTE in job.message
    request = only_take(studio, job).meta["request"]
    assert request["caption"] == song().caption
    assert (request["bpm"], request["key"], request["time_signature"]) == (92, "A minor", 3)


def test_without_caption_and_language_reasoning_the_musicians_stay(studio: Studio):
    thinking = Thinking(enabled=True, use_cot_caption=False, use_cot_language=False, cfg_scale=1.0)
    job = finished(studio, song(thinking=thinking, language="unknown"))
    assert job.plan["caption"] is None and job.plan["language"] is None
    assert "caption:" not in job.plan["reasoning"]
    request = only_take(studio, job).meta["request"]
    assert request["caption"] == song().caption
    assert request["language"] == "unknown"


def test_thinking_off_leaves_the_request_alone(studio: Studio):
    job = finished(studio, song(thinking=Thinking(enabled=False)))
    assert job.plan is None
    assert only_take(studio, job).meta["request"]["audio_codes"] is None


def test_the_planner_shows_on_home_and_loads_on_first_use(studio: Studio):
    status = {s.key: s for s in studio.model_statuses()}["planner"]
    assert status.label == "5 Hz LM planner 1.7B" and status.state == "downloaded"
    finished(studio, song(duration=10))
    status = {s.key: s for s in studio.model_statuses()}["planner"]
    assert status.state == "ready"


def test_a_size_the_folder_lacks_is_explained(studio: Studio):
    job = wait_for(
        studio, studio.submit_song(song(thinking=Thinking(enabled=True, planner_size="4B"))).id
    )
    assert job.status == FAILED
    assert "no 4B planner" in job.error


def test_cancel_while_planning(studio: Studio):
    job = studio.submit_song(song(duration=240))
    deadline = time.time() + 60
    while time.time() < deadline:
        current = studio.jobs.get(job.id)
        if current.phase == "planning" and current.step > 0:
            break
        time.sleep(0.02)
    studio.jobs.cancel(job.id)
    assert wait_for(studio, job.id).status == CANCELLED
    assert studio.library.for_job(job.id) == []


def run_job(studio: Studio, kind: str, payload: dict) -> dict:
    job = wait_for(studio, studio.jobs.submit(kind, payload).id)
    assert job.status == DONE, job.error
    assert job.result is not None
    return job.result


def check_sample(result: dict) -> None:
    assert isinstance(result["caption"], str) and result["caption"]
    assert isinstance(result["lyrics"], str)
    assert 30 <= result["bpm"] <= 300
    assert 10 <= result["duration"] <= 600


def test_create_sample_writes_a_caption_lyrics_and_metadata(studio: Studio):
    result = run_job(
        studio, "create_sample", {"idea": "a sad folk song", "seed": 3, "language": "de"}
    )
    check_sample(result)
    assert result["language"] == "de"  # the chosen language is force-decoded
    instrumental = run_job(studio, "create_sample", {"idea": "", "instrumental": True, "seed": 4})
    assert instrumental["instrumental"] is True and instrumental["lyrics"]


def test_format_keeps_the_musicians_metadata(studio: Studio):
    result = run_job(
        studio,
        "format",
        {"caption": "pop", "lyrics": "la la la", "bpm": 128, "key": "g minor", "seed": 5},
    )
    check_sample(result)
    assert result["bpm"] == 128 and result["key"] == "G minor"


def test_understand_listens_through_the_pipelines_audio_tokenizer(studio: Studio):
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal((2, 48_000 * 6)) * 0.1).astype(np.float32)
    item = studio.library.add("upload", {"source": "test"}, samples=samples, title="noise")
    result = run_job(studio, "understand", {"item_id": item.id, "seed": 6})
    assert result["codes"] == 6 * 5
    assert result["item_id"] == item.id
    check_sample(result)
    missing = wait_for(studio, studio.jobs.submit("understand", {"item_id": "nope"}).id)
    assert missing.status == FAILED and "no longer in the library" in missing.error


def test_each_size_comes_from_its_own_place(tiny_planner: Path):
    hub = Settings()
    assert planner_source(hub, "1.7B")[:2] == ("ACE-Step/Ace-Step1.5", "acestep-5Hz-lm-1.7B")
    assert planner_source(hub, "4B")[:2] == ("ACE-Step/acestep-5Hz-lm-4B", "")
    assert planner_source(replace(hub, planner_size="0.6B"), "0.6B")[:2] == (
        "ACE-Step/acestep-5Hz-lm-0.6B",
        "",
    )  # the default umbrella holds only the 1.7B, whatever size is configured
    mine = replace(hub, planner_model="me/my-planner", planner_subfolder="", planner_size="4B")
    assert planner_source(mine, "4B")[:2] == ("me/my-planner", "")
    local = replace(hub, planner_model=str(tiny_planner))
    assert planner_source(local, "1.7B") == (str(tiny_planner), "acestep-5Hz-lm-1.7B", 0)
    with pytest.raises(StudioError, match=r"no 0\.6B planner"):
        planner_source(local, "0.6B")
    with pytest.raises(SettingsError, match="PLANNER_SIZE"):
        Settings.from_env({"ACE_STUDIO_PLANNER_SIZE": "2B"})


def test_a_long_rewritten_caption_is_cut_where_a_sentence_ends():
    sentence = "Warm analog synths swell over a slow, steady groove with airy female vocals. "
    caption = fit_caption(sentence * 10)
    assert len(caption) <= CAPTION_MAX_CHARS and caption.endswith("vocals.")
    assert fit_caption("  short  caption ") == "short caption"
    words = fit_caption("word " * 200)
    assert len(words) <= CAPTION_MAX_CHARS and words.endswith("word")


def test_a_planned_take_can_be_retaken_with_its_codes(studio: Studio):
    job = finished(studio, song(duration=10))
    take = only_take(studio, job)
    again = wait_for(studio, studio.retake(take.id).id)
    assert again.status == DONE, again.error
    retaken = only_take(studio, again).meta["request"]
    # The stored request carries the plan's codes: a retake is a new DiT seed on the same plan.
    assert retaken["audio_codes"] == take.meta["request"]["audio_codes"]
    assert retaken["seed"] != take.meta["request"]["seed"]
