"""The finishing and LoRA widgets under AppTest, on the tiny models: loudness figures, export,
stems in a take card, and the LoRA stack from upload to request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.request import LoraChoice
from tests.conftest import run_until
from tests.tiny.demucs import build_tiny_demucs
from tests.tiny.lora import build_ace_step_lora, build_diffusers_lora


@pytest.fixture(scope="module")
def tiny_demucs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_demucs(tmp_path_factory.mktemp("models") / "demucs")


@pytest.fixture
def finishing_env(
    studio_env: Path, tiny_demucs: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("ACE_STUDIO_DEMUCS_REPO", str(tiny_demucs))
    yield studio_env


def _add_take(seconds: float = 4.0, level: float = 0.891) -> str:
    """A take in the Studio's library, as the song engine stores one (peaks at −1 dBFS)."""
    from core.resources import get_studio

    rng = np.random.default_rng(0)
    frames = int(seconds * 48_000)
    t = np.arange(frames) / 48_000
    music = np.sin(2 * np.pi * 110 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    samples = np.stack([music, music]) + 0.2 * rng.standard_normal((2, frames))
    if level:
        samples *= level / np.max(np.abs(samples))
    else:
        samples[:] = 0.0
    item = get_studio().library.add(
        "take",
        {
            "request": {"caption": "dusty lo-fi", "lyrics": "[Verse]\nla", "loras": []},
            "seed": 5,
            "models": {"dit": {"source": "tiny", "revision": "main"}},
        },
        samples=samples.astype(np.float32),
        title="Window Rain",
        caption="dusty lo-fi",
        take_index=0,
    )
    return item.id


def take_page() -> None:
    """One take card with the finishing tools, as Generate and Home draw it."""
    import streamlit as st

    from core.resources import get_studio
    from pages.widgets.finishing import finishing_tools
    from pages.widgets.takes import take_card

    studio = get_studio()
    item = studio.library.get(st.session_state["take_id"])
    take_card(studio, item, waveform=False, tools=finishing_tools)


def lora_page() -> None:
    import streamlit as st

    from core.resources import get_studio
    from pages.widgets.lora import lora_expander

    lora_expander(get_studio(), "generate")
    st.markdown("stack: " + repr(st.session_state.get("generate.loras", ())))


def _take_app(take_id: str) -> AppTest:
    at = AppTest.from_function(take_page, default_timeout=60)
    at.session_state["take_id"] = take_id
    at.session_state[f"finish-{take_id}"] = True  # the musician opened "Finish"
    return at.run()


def _metrics(at: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def test_finish_panel_is_lazy_until_opened(finishing_env: Path) -> None:
    take_id = _add_take()
    at = AppTest.from_function(take_page, default_timeout=60)
    at.session_state["take_id"] = take_id
    at.run()
    assert not at.exception
    assert not at.metric  # nothing measured for a closed panel
    assert "Finish · loudness, export, stems" in [e.label for e in at.expander]


def test_loudness_figures_and_export_follow_the_choices(finishing_env: Path) -> None:
    at = _take_app(_add_take())
    assert not at.exception
    assert _metrics(at)["Integrated loudness"] == "-14.0 LUFS"
    true_peak = float(_metrics(at)["True peak"].split()[0])
    assert true_peak <= -1.0
    labels = [button.label for button in at.get("download_button")]
    assert "Download WAV 24-bit" in labels
    at.selectbox(key=f"finish.{at.session_state['take_id']}.loudness").set_value("broadcast").run()
    assert _metrics(at)["Integrated loudness"] == "-23.0 LUFS"
    at.selectbox(key=f"finish.{at.session_state['take_id']}.format").set_value("mp3").run()
    assert "Download MP3 320 kbps" in [button.label for button in at.get("download_button")]
    # The A/B plays both versions at the same loudness.
    at.toggle(key=f"finish.{at.session_state['take_id']}.ab").set_value(True).run()
    assert len(at.get("audio")) == 3  # the take's own player, then A and B
    assert any("B · Broadcast" in caption.value for caption in at.caption)


def test_a_silent_take_says_so(finishing_env: Path) -> None:
    at = _take_app(_add_take(level=0.0))
    assert not at.exception
    assert any("silent" in warning.value for warning in at.warning)
    assert any(button.label == "Download WAV 24-bit" for button in at.get("download_button"))


def test_stems_separate_then_play_and_download(finishing_env: Path) -> None:
    take_id = _add_take(seconds=3.0)
    at = _take_app(take_id)
    separate = next(button for button in at.button if button.label == "Separate stems")
    separate.click().run()
    assert not at.exception
    run_until(at, lambda page: len(page.get("audio")) >= 5)
    # The take's player, then one per stem, in the musician's order.
    stem_labels = [md.value.strip("*") for md in at.markdown]
    stem_labels = [label for label in stem_labels if label in ("Vocals", "Drums", "Bass", "Other")]
    assert stem_labels == ["Vocals", "Drums", "Bass", "Other"]
    labels = [button.label for button in at.get("download_button")]
    assert labels.count("WAV 24-bit") == 4
    assert "Download all stems (zip)" in labels


def test_lora_upload_lands_on_the_stack_and_duplicates_are_refused(
    finishing_env: Path, tiny_dit: Path, tmp_path: Path
) -> None:
    adapter = build_ace_step_lora(tmp_path / "a", tiny_dit / "transformer")
    at = AppTest.from_function(lora_page, default_timeout=60).run()
    assert not at.exception
    assert at.expander[0].label == "LoRA"
    at.file_uploader[0].set_value(
        [
            ("adapter_model.safetensors", adapter.path.read_bytes(), "application/octet-stream"),
            ("adapter_config.json", adapter.config_path.read_bytes(), "application/json"),
        ]
    ).run()
    assert not at.exception
    assert any("Added adapter_model" in s.value and "alpha 8" in s.value for s in at.success)
    assert at.expander[0].label == "LoRA · 1 active"
    assert "LoraChoice(name='adapter_model " in at.markdown[-1].value
    # The same file again: refused, the stack unchanged.
    at.file_uploader[0].set_value(
        ("copy.safetensors", adapter.path.read_bytes(), "application/octet-stream")
    ).run()
    assert any("already in the stack" in error.value for error in at.error)
    assert at.expander[0].label == "LoRA · 1 active"
    # The weight slider writes into the stack; Disable all empties it.
    slider = next(s for s in at.slider if s.label == "Weight")
    slider.set_value(0.55).run()
    stack = at.session_state["generate.loras"]
    assert stack[0].scale == pytest.approx(0.55)
    next(b for b in at.button if b.label == "Disable all").click().run()
    assert at.session_state["generate.loras"] == ()
    assert at.expander[0].label == "LoRA"


def test_incompatible_and_corrupt_loras_are_explained(
    finishing_env: Path, tiny_dit: Path, tmp_path: Path
) -> None:
    wide = build_diffusers_lora(tmp_path / "w", tiny_dit / "transformer", hidden=48)
    at = AppTest.from_function(lora_page, default_timeout=60).run()
    at.file_uploader[0].set_value(
        ("wide.safetensors", wide.path.read_bytes(), "application/octet-stream")
    ).run()
    assert any(
        "trained for a DiT with hidden size 48" in error.value
        and "Nothing was loaded" in error.value
        for error in at.error
    )
    at.file_uploader[0].set_value(
        ("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", "x")
    ).run()
    assert any("not a valid safetensors file" in error.value for error in at.error)
    assert "generate.loras" not in at.session_state or at.session_state["generate.loras"] == ()


def test_restored_stack_moves_the_sliders(
    finishing_env: Path, tiny_dit: Path, tmp_path: Path
) -> None:
    from core import lora
    from core.resources import get_studio

    adapter = build_diffusers_lora(tmp_path / "d", tiny_dit / "transformer")
    stored = lora.store_for(get_studio().settings).add_file(adapter.path, "warm tape.safetensors")
    at = AppTest.from_function(lora_page, default_timeout=60)
    # What load_request puts there when a take is restored.
    at.session_state["generate.loras"] = (LoraChoice(stored.name, stored.sha256, 0.7),)
    at.run()
    assert not at.exception
    assert next(s for s in at.slider if s.label == "Weight").value == pytest.approx(0.7)
    assert any("warm tape" in md.value for md in at.markdown)
    presets = [b for b in at.button if b.label == "Add"]
    # The manifest's presets are for other DiTs than the tiny one: offered, but disabled.
    assert presets and all(button.disabled for button in presets)
