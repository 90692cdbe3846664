"""The Generate page under AppTest: validation messages, submit, progress, result, URL state."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, run_until

GENERATE = str(ROOT / "pages" / "1_Generate.py")
HOME = str(ROOT / "Home.py")


def test_validation_messages_name_the_field(studio_env: Path) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60).run()
    assert not at.exception
    at.text_input(key="generate.key").set_value("H dorian")
    at.button[-1].click().run()
    messages = " ".join(error.value for error in at.error)
    assert "Caption is required" in messages
    assert "Key 'H dorian' is not one ACE-Step knows" in messages
    assert "job" not in at.query_params


def test_submit_shows_progress_then_the_takes(studio_env: Path) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60).run()
    at.text_area(key="generate.caption").set_value("cinematic orchestral build, huge drums")
    at.text_area(key="generate.lyrics").set_value("[Verse 1]\nwe rise")
    at.slider(key="generate.duration").set_value(30)
    at.slider(key="generate.steps").set_value(120)
    at.radio(key="generate.takes").set_value(2)
    at.button[-1].click().run()
    assert not at.error
    assert at.query_params["job"]
    run_until(
        at, lambda page: any("step" in (bar.proto.text or "") for bar in page.get("progress"))
    )
    run_until(at, lambda page: any("Done in" in s.value for s in page.success))
    players = at.get("component_instance")
    assert len(players) == 2  # one waveform player per take
    assert [b.label for b in at.get("download_button")][:2] == ["WAV", "FLAC"]
    assert any("take 2" in md.value for md in at.markdown)


def test_the_url_restores_the_form(studio_env: Path) -> None:
    at = AppTest.from_file(GENERATE, default_timeout=60)
    at.query_params["caption"] = "lofi beats"
    at.query_params["bpm"] = "84"
    at.query_params["seed"] = "99"
    at.query_params["infer_method"] = "sde"
    at.run()
    assert at.text_area(key="generate.caption").value == "lofi beats"
    assert at.number_input(key="generate.bpm").value == 84
    assert at.number_input(key="generate.seed").value == 99
    assert at.checkbox(key="generate.seed_locked").value is True
    assert at.radio(key="generate.infer_method").value == "sde"


def test_home_shows_readiness_and_an_empty_library(studio_env: Path) -> None:
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    text = " ".join(md.value for md in at.markdown)
    assert "Device" in text and "DiT pipeline" in text
    assert any("No songs yet" in info.value for info in at.info)
