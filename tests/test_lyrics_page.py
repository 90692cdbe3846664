"""The Lyrics page under AppTest: validation, writing (streamed, then editable), the character
limit, keeping and reopening drafts, reattaching by URL, and the hand-off to Generate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.lyrics import LyricsRequest, suggest_caption
from tests.conftest import ROOT, run_until
from tests.tiny.writer import tiny_writer_folder

LYRICS = str(ROOT / "pages" / "5_Lyrics.py")
BRIEF = "A late-night drive through a rainy city, missing someone"


@pytest.fixture
def lyrics_env(studio_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ACE_STUDIO_WRITER_MODEL", str(tiny_writer_folder()))
    monkeypatch.setenv("ACE_STUDIO_WRITER_BACKEND", "transformers")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield studio_env
    torch.set_num_threads(threads)


def draft_area(at: AppTest):
    return at.text_area(key="lyrics.draft")


def has_draft(at: AppTest) -> bool:
    return any(area.key == "lyrics.draft" and area.value for area in at.text_area)


def write(at: AppTest, **settings: object) -> AppTest:
    settings = {"max_tokens": 100, **settings}
    at.text_area(key="lyrics.brief").set_value(BRIEF)
    at.text_input(key="lyrics.tone").set_value("bittersweet")
    for name, value in settings.items():
        at.slider(key=f"lyrics.{name}").set_value(value)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return run_until(at, has_draft)


def test_a_missing_brief_is_named(lyrics_env: Path) -> None:
    at = AppTest.from_file(LYRICS, default_timeout=60).run()
    assert not at.exception
    assert at.button[0].label == "Write"
    at.button[0].click().run()
    assert any("Write a brief" in error.value for error in at.error)
    assert "job" not in at.query_params


def test_write_then_edit_keep_and_reopen(lyrics_env: Path) -> None:
    at = AppTest.from_file(LYRICS, default_timeout=60).run()
    at.checkbox(key="lyrics.seed_locked").set_value(True)
    at.number_input(key="lyrics.seed").set_value(11)
    write(at, max_tokens=150)
    job_id = at.query_params["job"]
    assert job_id
    assert any("Done in" in box.value for box in at.success)
    assert any("Seed 11 · 150 tokens" in caption.value for caption in at.caption)
    draft = draft_area(at).value
    assert draft and not draft_area(at).disabled
    assert at.text_input(key="lyrics.caption").value == suggest_caption(
        LyricsRequest(brief=BRIEF, tone="bittersweet")
    )
    assert any(f"{len(draft)} / 4096 characters" in c.value for c in at.caption)

    edited = "[Verse 1]\nNeon on the water\n\n" + draft
    draft_area(at).set_value(edited).run()
    at.text_input(key="lyrics.title").set_value("Rain drive")
    next(button for button in at.button if button.label == "Keep").click().run()
    assert not at.exception
    assert "Kept drafts (1)" in [expander.label for expander in at.expander]

    # A fresh session opens the kept draft with the settings that wrote it.
    again = AppTest.from_file(LYRICS, default_timeout=60).run()
    assert again.text_area(key="lyrics.brief").value == ""
    next(button for button in again.button if button.label == "Open").click().run()
    assert draft_area(again).value == edited
    assert again.text_area(key="lyrics.brief").value == BRIEF
    assert again.number_input(key="lyrics.seed").value == 11
    assert again.text_input(key="lyrics.title").value == "Rain drive"


def test_the_job_in_the_url_brings_the_draft_back(lyrics_env: Path) -> None:
    at = AppTest.from_file(LYRICS, default_timeout=60).run()
    write(at)
    job_id, draft = at.query_params["job"], draft_area(at).value
    reopened = AppTest.from_file(LYRICS, default_timeout=60)
    reopened.query_params["job"] = job_id
    reopened.run()
    assert draft_area(reopened).value == draft


def test_over_the_limit_warns(lyrics_env: Path) -> None:
    at = AppTest.from_file(LYRICS, default_timeout=60).run()
    draft_area(at).set_value("[Verse 1]\n" + "la " * 1400).run()
    assert any("at most 4096 characters" in warning.value for warning in at.warning)
    draft_area(at).set_value("[Verse 1]\nla la").run()
    assert not at.warning


def test_use_in_generate_fills_the_generate_form(lyrics_env: Path) -> None:
    # From the app's entrypoint, so that switching pages works as in the browser.
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60).run()
    at.switch_page("pages/5_Lyrics.py").run()
    at.selectbox(key="lyrics.language").set_value("es")
    write(at)
    draft = draft_area(at).value
    at.text_input(key="lyrics.caption").set_value("dreamy synth-pop, female vocals")
    next(button for button in at.button if button.label == "Use in Generate").click().run()
    assert not at.exception
    assert at.text_area(key="generate.lyrics").value == draft.strip()
    assert at.text_area(key="generate.caption").value == "dreamy synth-pop, female vocals"
    assert at.selectbox(key="generate.language").value == "es"


def test_the_form_and_draft_survive_a_visit_to_another_page(lyrics_env: Path) -> None:
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60).run()
    at.switch_page("pages/5_Lyrics.py").run()
    at.text_area(key="lyrics.brief").set_value(BRIEF)
    at.slider(key="lyrics.verse_lines").set_value(8)
    draft_area(at).set_value("[Chorus]\nstay a while").run()
    at.switch_page("pages/1_Generate.py").run()
    at.switch_page("pages/5_Lyrics.py").run()
    assert at.text_area(key="lyrics.brief").value == BRIEF
    assert at.slider(key="lyrics.verse_lines").value == 8
    assert draft_area(at).value == "[Chorus]\nstay a while"
