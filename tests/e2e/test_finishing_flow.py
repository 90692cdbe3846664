"""Finishing a song as a new user would, in a real browser: upload a LoRA, generate with it,
master to −14 LUFS, download a tagged MP3, separate stems and play the vocals."""

from __future__ import annotations

import re
from pathlib import Path

import pyloudnorm
import soundfile as sf
from mutagen.id3 import ID3
from playwright.sync_api import Page, expect

from tests.e2e.conftest import JOB_TIMEOUT_MS, save_download, shot
from tests.tiny.lora import build_diffusers_lora


def _pick(page: Page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option).click()


def test_lora_master_mp3_and_stems(
    app_url: str, page: Page, tiny_models: dict[str, str], tmp_path: Path
) -> None:
    dit = Path(tiny_models["ACE_STUDIO_DIT_MODEL"])
    adapter = build_diffusers_lora(
        tmp_path, dit / "transformer", name="warm-tape.safetensors", seed=11
    )
    page.goto(f"{app_url}/Generate?caption=late+night+neo+soul+with+warm+keys&duration=10&steps=4")
    # The first page of a fresh server starts the Studio: allow for it.
    expect(page.get_by_role("textbox", name="Caption", exact=True)).to_have_value(
        "late night neo soul with warm keys", timeout=60_000
    )

    # A LoRA from disk, onto the stack.
    page.get_by_text("LoRA", exact=True).click()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files(
        str(adapter.path)
    )
    expect(page.get_by_text(re.compile(r"Added warm-tape"))).to_be_visible(timeout=30_000)
    expect(page.get_by_text("LoRA · 1 active")).to_be_visible(timeout=30_000)
    shot(page, "finishing-01-lora")

    page.get_by_role("button", name="Generate", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=JOB_TIMEOUT_MS)

    # Master the take: Streaming (−14 LUFS) is the default target.
    page.get_by_text("Finish · loudness, export, stems").click()
    expect(page.get_by_text("-14.0 LUFS")).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"LoRAs: warm-tape @ 1"))).to_be_visible(timeout=30_000)
    # The master measures −14 LUFS (a lossless copy: the tiny model's noise-like output has
    # real energy above MP3's 20 kHz low-pass, which real songs do not).
    _pick(page, "Format", "FLAC 24-bit")
    with page.expect_download() as flac_info:
        page.get_by_role("button", name="Download FLAC 24-bit").click()
    flac = save_download(flac_info.value, "finished.flac")
    audio, rate = sf.read(str(flac))
    assert rate == 48_000
    assert abs(pyloudnorm.Meter(rate).integrated_loudness(audio) - -14.0) < 0.5

    _pick(page, "Format", "MP3 320 kbps")
    shot(page, "finishing-02-master")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download MP3 320 kbps").click()
    assert re.fullmatch(
        r"late night neo soul with warm keys - \d{4}-\d\d-\d\d - take 1\.mp3",
        download_info.value.suggested_filename,
    )
    mp3 = save_download(download_info.value, "finished.mp3")
    tags = ID3(str(mp3))
    assert tags["TIT2"].text == ["late night neo soul with warm keys"]
    assert "late night neo soul" in tags["COMM:caption:eng"].text[0]
    assert int(tags["TXXX:SEED"].text[0]) > 0
    assert str(dit) in tags["TXXX:MODEL"].text[0]
    assert "warm-tape @ 1" in tags["TXXX:LORA"].text[0]
    assert sf.info(str(mp3)).samplerate == 48_000

    # Stems: separate, then play the vocals.
    page.get_by_role("button", name="Separate stems").click()
    expect(page.get_by_text("Vocals", exact=True)).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Download all stems (zip)")).to_be_visible(
        timeout=30_000
    )
    shot(page, "finishing-03-stems")
    vocals = page.locator('[data-testid="stAudio"]').first
    vocals.evaluate("el => el.play()")
    page.wait_for_function(
        "el => el.currentTime > 0 && !el.paused", arg=vocals.element_handle(), timeout=30_000
    )
    with page.expect_download() as zip_info:
        page.get_by_role("button", name="Download all stems (zip)").click()
    assert zip_info.value.suggested_filename.endswith(" - stems.zip")
