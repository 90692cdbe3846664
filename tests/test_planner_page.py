"""The planner on the pages, under AppTest with the tiny planner and DiT: the Thinking expander
reaches the job, the plan shows with the job, and Create sample, Format and Understand fill
the form only when the musician says "Use it"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from core.jobs import DONE
from core.request import SongRequest
from pages.widgets.planner import plain
from tests.conftest import ROOT, run_until
from tests.tiny.planner import build_tiny_planner

GENERATE = str(ROOT / "pages" / "1_Generate.py")
COVER = str(ROOT / "pages" / "2_Cover.py")


@pytest.fixture(scope="session")
def tiny_planner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_planner(tmp_path_factory.mktemp("models") / "Ace-Step1.5")


@pytest.fixture
def planner_env(
    tiny_dit: Path, tiny_planner: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("ACE_STUDIO_DIT_MODEL", str(tiny_dit))
    monkeypatch.setenv("ACE_STUDIO_PLANNER_MODEL", str(tiny_planner))
    monkeypatch.setenv("ACE_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ACE_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("ACE_STUDIO_PRELOAD", "false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    st.cache_resource.clear()
    yield
    from core.resources import get_studio

    get_studio().stop()
    st.cache_resource.clear()
    torch.set_num_threads(threads)


def studio():
    from core.resources import get_studio

    return get_studio()


def markdown(at: AppTest) -> str:
    return "\n".join(element.value for element in at.markdown)


def has_button(label: str):
    return lambda at: any(button.label == label for button in at.button)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def test_thinking_reaches_the_job_and_the_plan_shows_with_it(planner_env: None) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60).run()
    assert not at.exception
    at.text_area(key="generate.caption").set_value("uplifting synth pop with bright pads")
    at.text_area(key="generate.lyrics").set_value("[Verse 1]\nwalking down the empty road")
    at.slider(key="generate.duration").set_value(10)
    at.slider(key="generate.steps").set_value(2)
    at.number_input(key="generate.bpm").set_value(104)
    at.toggle(key="generate.thinking.enabled").set_value(True).run()
    at.slider(key="generate.thinking.temperature").set_value(0.6)
    at.slider(key="generate.thinking.cfg_scale").set_value(1.5)
    at.text_input(key="generate.thinking.negative_prompt").set_value("muddy lo-fi")
    button(at, "Generate").click().run()
    assert not at.error, [e.value for e in at.error]
    job_id = at.session_state["generate.job"]
    request = SongRequest.from_dict(studio().jobs.get(job_id).payload["request"])
    thinking = request.thinking
    assert thinking.enabled and thinking.temperature == 0.6 and thinking.cfg_scale == 1.5
    assert thinking.negative_prompt == "muddy lo-fi"

    run_until(at, lambda page: "**Planner**" in markdown(page))
    run_until(at, lambda page: any("Done in" in box.value for box in page.success))
    plan = studio().jobs.get(job_id).plan
    text = markdown(at)
    assert f"_{plain(plan['caption'])}_" in text  # the rewritten caption, shown as written
    assert "104 BPM" in text and f"{plan['key']}" in text  # the musician's tempo, the plan's key
    captions = " ".join(c.value for c in at.caption)
    assert "50 audio codes (10 s of music)" in captions


def test_create_sample_fills_the_form_on_use_it(planner_env: None) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60).run()
    at.text_area(key="generate.planner.idea").set_value("a sad folk song about the sea")
    at.button(key="generate.planner.create").click().run()
    assert at.session_state["generate.planner.job"]
    run_until(at, has_button("Use it"))
    assert at.text_area(key="generate.caption").value == ""  # nothing changes unasked
    result = studio().jobs.get(at.session_state["generate.planner.job"]).result
    button(at, "Use it").click().run()
    assert at.text_area(key="generate.caption").value == result["caption"]
    assert at.text_area(key="generate.lyrics").value == result["lyrics"]
    assert at.number_input(key="generate.bpm").value == result["bpm"]
    assert at.slider(key="generate.duration").value % 5 == 0
    assert not has_button("Use it")(at)


def test_format_polishes_but_keeps_the_musicians_tempo(planner_env: None) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60).run()
    at.text_area(key="generate.caption").set_value("pop")
    at.text_area(key="generate.lyrics").set_value("[Verse]\nla la la")
    at.number_input(key="generate.bpm").set_value(128)
    at.button(key="generate.planner.format").click().run()
    job_id = at.session_state["generate.planner.job"]
    assert studio().jobs.get(job_id).payload["bpm"] == 128
    run_until(at, has_button("Use it"))
    result = studio().jobs.get(job_id).result
    assert result["bpm"] == 128
    button(at, "Use it").click().run()
    assert at.text_area(key="generate.caption").value == result["caption"]
    assert at.number_input(key="generate.bpm").value == 128


def test_understand_prefills_the_cover_from_its_source(planner_env: None) -> None:
    at = AppTest.from_file(COVER, default_timeout=60).run()
    assert at.button(key="cover.planner.understand").disabled  # no source yet
    rng = np.random.default_rng(1)
    samples = (rng.standard_normal((2, 48_000 * 5)) * 0.1).astype(np.float32)
    item = studio().library.add("upload", {"source": "test"}, samples=samples, title="demo")
    at.session_state["cover.source_id"] = item.id
    at.run()
    at.button(key="cover.planner.understand").click().run()
    job_id = at.session_state["cover.planner.job"]
    run_until(at, has_button("Use it"))
    job = studio().jobs.get(job_id)
    assert job.status == DONE and job.result["codes"] == 25
    button(at, "Use it").click().run()
    assert at.text_area(key="cover.caption").value == job.result["caption"]
