"""Cover, Extend and Edit under AppTest: upload or pick a source, the region on the waveform
and in the fields, bad input messages, and a job from each page to its takes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import audio as audio_io
from core.library import Item
from core.sources import store_upload
from core.studio import Studio
from pages.widgets.ab import RESULT
from pages.widgets.source import LIBRARY
from tests.conftest import ROOT

RATE = audio_io.SAMPLE_RATE


@pytest.fixture
def studio_env(tiny_dit: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ACE_STUDIO_DIT_MODEL", str(tiny_dit))
    monkeypatch.setenv("ACE_STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ACE_STUDIO_DEVICE", "cpu")
    monkeypatch.setenv("ACE_STUDIO_PRELOAD", "false")
    st.cache_resource.clear()  # one Studio per test: the cache is process-wide
    yield
    from core.resources import get_studio

    get_studio().stop()
    st.cache_resource.clear()


def the_studio() -> Studio:
    from core.resources import get_studio

    return get_studio()


def wav_bytes(seconds: float, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * 196.0 * t) + 0.01 * rng.standard_normal(t.size)
    return audio_io.encode(np.stack([wave, wave]).astype(np.float32), "wav", "PCM_16")


def add_upload(seconds: float, name: str = "demo.wav") -> Item:
    studio = the_studio()
    return store_upload(studio.library, studio.settings, wav_bytes(seconds), name)


def page(name: str, query: dict[str, str] | None = None) -> AppTest:
    """The page as the server runs it: Home is the entrypoint, so page links resolve."""
    at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=60).run()
    at.switch_page(f"pages/{name}")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    return at.run()


def run_until(at: AppTest, condition: Callable[[AppTest], bool], timeout: float = 120.0) -> None:
    """AppTest never ticks fragment timers: rerun until the page shows what we wait for."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        if condition(at):
            return
        time.sleep(0.1)
    raise AssertionError("the page never reached the expected state")


def errors(at: AppTest) -> str:
    return " ".join(error.value for error in at.error)


def waveform_args(at: AppTest, key: str) -> dict:
    """The arguments the page gave the waveform component with this key."""
    for element in at.get("component_instance"):
        args = json.loads(element.proto.json_args)
        if args.get("key") == key or element.proto.id.endswith(key):
            return args
    raise AssertionError(f"no waveform with key {key}")


def pick_from_library(at: AppTest, prefix: str, item: Item, target: str = "source_id") -> None:
    at.radio(key=f"{prefix}.{target}.mode").set_value(LIBRARY).run()
    at.selectbox(key=f"{prefix}.{target}.pick").set_value(item.id).run()


def done(at: AppTest) -> bool:
    return any("Done in" in box.value for box in at.success)


# --- Edit --------------------------------------------------------------------------------


def test_edit_upload_region_from_the_waveform_and_fields_then_repaint(studio_env: None) -> None:
    at = page("4_Edit.py")
    assert not at.exception
    at.file_uploader(key="edit.source_id.upload").set_value(
        ("demo.wav", wav_bytes(12.0), "audio/wav")
    ).run()
    assert not at.exception, at.exception
    source_id = at.session_state["edit.source_id"]
    source = the_studio().library.get(source_id)
    assert source.kind == "upload" and source.duration == pytest.approx(12.0)

    # The waveform reports a region when ✓ is pressed: the fields follow it.
    first_key = at.session_state["edit.waveform_key"]
    at.session_state[first_key] = {
        "currentTime": 0.0,
        "selectedRegion": {"start": 2.04, "end": 5.513},
        "isPlaying": False,
    }
    at.run()
    assert at.number_input(key="edit.region_start").value == pytest.approx(2.04)
    assert at.number_input(key="edit.region_end").value == pytest.approx(5.51)
    # ...and the waveform is drawn again with the region on it.
    second_key = at.session_state["edit.waveform_key"]
    assert second_key != first_key
    regions = waveform_args(at, second_key)["customized_regions"]
    assert [(r["start"], r["end"]) for r in regions] == [(2.04, 5.51)]

    # Typing in a field moves the region on the waveform.
    at.number_input(key="edit.region_start").set_value(2.5).run()
    third_key = at.session_state["edit.waveform_key"]
    assert third_key != second_key
    regions = waveform_args(at, third_key)["customized_regions"]
    assert [(r["start"], r["end"]) for r in regions] == [(2.5, 5.51)]

    at.text_area(key="edit.caption").set_value("dusty soul ballad, rhodes, brushed drums")
    at.text_area(key="edit.lyrics").set_value("[Verse 1]\nold photographs\n\n[Chorus]\nstay")
    at.slider(key="edit.steps").set_value(2)
    next(b for b in at.button if b.label == "Repaint region").click().run()
    assert not errors(at), errors(at)
    assert at.query_params["region_start"] == ["2.5"] or at.query_params["region_start"] == "2.5"
    run_until(at, done)
    assert not at.exception, at.exception
    (take,) = the_studio().library.for_job(at.session_state["edit.job"])
    assert take.parent_id == source_id and take.operation == "edit"
    assert any("History: upload → edit 0:02–0:06" in caption.value for caption in at.caption)
    ab = at.get("button_group")
    assert ab and RESULT in [option.content for option in ab[0].proto.options]
    assert any(f"ab.{take.id}.b" in element.proto.id for element in at.get("component_instance"))
    assert any("Both played at" in caption.value for caption in at.caption)
    # The next step starts from this take: links to the other pages with it as the source.
    links = {link.proto.label: link.proto for link in at.get("page_link")}
    assert links["Extend this"].query_string == f"source_id={take.id}"
    assert links["Extend this"].page.endswith("Extend")
    assert {"Edit this", "Cover this"} <= set(links)


def test_edit_bad_input_gets_messages_and_queues_nothing(studio_env: None) -> None:
    at = page("4_Edit.py")
    at.file_uploader(key="edit.source_id.upload").set_value(
        ("broken.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" * 20, "audio/wav")
    ).run()
    assert "broken.wav could not be read as WAV" in errors(at)
    assert at.session_state["edit.source_id"] is None
    at.text_area(key="edit.caption").set_value("synthwave")
    next(b for b in at.button if b.label == "Repaint region").click().run()
    assert "Choose a source song" in errors(at)

    at = page("4_Edit.py")
    pick_from_library(at, "edit", add_upload(8.0))
    at.text_area(key="edit.caption").set_value("synthwave")
    at.number_input(key="edit.region_start").set_value(1.0).run()
    at.number_input(key="edit.region_end").set_value(2.0).run()
    assert any("a region must be 3–90 seconds long" in w.value for w in at.warning)
    next(b for b in at.button if b.label == "Repaint region").click().run()
    assert "The region must be 3–90 seconds long (it is 1.0 s)" in errors(at)
    at.number_input(key="edit.region_end").set_value(9.5).run()
    next(b for b in at.button if b.label == "Repaint region").click().run()
    assert "after the song's end" in errors(at)
    assert the_studio().jobs.active() == []
    assert "edit.job" not in at.session_state


def test_edit_snaps_the_region_to_bars_when_the_tempo_is_known(studio_env: None) -> None:
    at = page("4_Edit.py")
    pick_from_library(at, "edit", add_upload(20.0))
    assert at.checkbox(key="edit.snap_to_bars").disabled
    at.number_input(key="edit.bpm").set_value(120).run()
    at.checkbox(key="edit.snap_to_bars").check().run()
    at.session_state[at.session_state["edit.waveform_key"]] = {
        "currentTime": 0.0,
        "selectedRegion": {"start": 4.9, "end": 11.2},
        "isPlaying": False,
    }
    at.run()
    assert at.number_input(key="edit.region_start").value == 4.0
    assert at.number_input(key="edit.region_end").value == 12.0


# --- Extend ------------------------------------------------------------------------------


def test_extend_a_library_take_and_download_the_extension(studio_env: None) -> None:
    source = add_upload(7.0, "verse.wav")
    at = page("3_Extend.py")
    pick_from_library(at, "extend", source)
    assert at.session_state["extend.source_id"] == source.id
    at.slider(key="extend.extend_seconds").set_value(5.0).run()
    at.toggle(key="extend.context_all").set_value(False).run()
    at.slider(key="extend.context_seconds").set_value(5).run()
    assert any("The model hears 0:02.0–0:07.0" in c.value for c in at.caption)
    at.text_area(key="extend.caption").set_value("the song carries on, big final chorus")
    at.slider(key="extend.steps").set_value(2)
    next(b for b in at.button if b.label == "Extend").click().run()
    assert not errors(at), errors(at)
    run_until(at, done)
    assert not at.exception, at.exception
    (take,) = the_studio().library.for_job(at.session_state["extend.job"])
    assert take.duration == pytest.approx(12.0, abs=1 / RATE)
    assert take.meta["extension"]["context_seconds"] == 5.0
    labels = [button.label for button in at.get("download_button")]
    assert "Extension only · 5 s (WAV)" in labels
    assert any("History: upload → extend +5 s" in c.value for c in at.caption)


def test_extend_refuses_a_song_that_would_be_too_long(
    studio_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACE_STUDIO_MAX_DURATION", "12")
    st.cache_resource.clear()
    source = add_upload(10.0)
    at = page("3_Extend.py")
    pick_from_library(at, "extend", source)
    at.text_area(key="extend.caption").set_value("more")
    at.slider(key="extend.extend_seconds").set_value(5.0).run()
    next(b for b in at.button if b.label == "Extend").click().run()
    assert "The extended song would be 15 s long; the longest song is 12 s" in errors(at)
    assert the_studio().jobs.active() == []


# --- Cover -------------------------------------------------------------------------------


def test_cover_with_a_new_caption_and_strength(studio_env: None) -> None:
    source = add_upload(6.0, "original.wav")
    at = page("2_Cover.py")
    pick_from_library(at, "cover", source)
    assert any("**original** · upload · 0:06.0" in c.value for c in at.caption)
    # A reference can be picked and removed again.
    reference = add_upload(3.0, "voice.wav")
    pick_from_library(at, "cover", reference, target="reference_id")
    assert at.session_state["cover.reference_id"] == reference.id
    next(b for b in at.button if b.label == "Remove reference").click().run()
    assert at.session_state["cover.reference_id"] is None

    at.text_area(key="cover.caption").set_value("bossa nova cover, nylon guitar, soft vocals")
    at.slider(key="cover.cover_strength").set_value(0.5)
    at.slider(key="cover.steps").set_value(2)
    next(b for b in at.button if b.label == "Cover").click().run()
    assert not errors(at), errors(at)
    run_until(at, done)
    assert not at.exception, at.exception
    (take,) = the_studio().library.for_job(at.session_state["cover.job"])
    assert take.operation == "cover" and take.parent_id == source.id
    assert take.duration == pytest.approx(6.0)
    assert take.meta["cover"]["strength"] == 0.5
    assert any("History: upload → cover (0.5)" in c.value for c in at.caption)


def test_a_take_opens_on_another_page_as_the_source(studio_env: None) -> None:
    source = add_upload(6.0)
    at = page("3_Extend.py", {"source_id": source.id})
    assert at.session_state["extend.source_id"] == source.id
    assert at.radio(key="extend.source_id.mode").value == LIBRARY
    assert at.selectbox(key="extend.source_id.pick").value == source.id
