"""A musician's own song, in a real browser: upload it on Edit, drag a region on the waveform,
repaint it, A/B the result against the original, extend the result by 10 s, and find both
takes, linked, in the library."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile as sf
from playwright.sync_api import Page, expect

from tests.e2e.conftest import JOB_TIMEOUT_MS, save_download, shot

CAPTION = "slow blues, crying electric guitar, hammond organ"
LYRICS = "[Verse 1]\nwoke up this morning\n\n[Chorus]\nrain keeps falling down"
# The waveform player loads the whole file before its buttons work.
PLAYER_READY_MS = 30_000
# The tiny VAE encodes and decodes every sample of the song on the CPU the browser and the
# server share; on a busy machine that alone can pass the Generate flow's two minutes.
AUDIO_JOB_TIMEOUT_MS = max(JOB_TIMEOUT_MS, 300_000)


def demo_song(folder: Path) -> Path:
    """An 8-second stereo WAV that rises and falls, like a phrase being played."""
    t = np.arange(8 * 48_000) / 48_000
    wave = 0.3 * np.sin(2 * np.pi * 196.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))
    path = folder / "my-blues-demo.wav"
    sf.write(path, np.stack([wave, 0.9 * wave], axis=1).astype(np.float32), 48_000)
    return path


def drag(page: Page, x: float, y: float, dx: float) -> None:
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y, steps=6)
    page.mouse.move(x + dx, y, steps=6)
    page.mouse.up()


def set_slider(page: Page, label: str, presses: list[str]) -> None:
    slider = page.get_by_role("slider", name=label)
    slider.focus()
    for key in presses:
        slider.press(key)


def play_ab(page: Page) -> None:
    """Press play on the A/B player and see it play.

    Switching A/B reruns the page, which redraws the player; a click that lands on the old
    one just before the redraw is lost, so look again and play the player that is there.
    """
    for _ in range(3):
        player = page.frame_locator('iframe[title*="audix"]').last
        play = player.locator("button:has(.anticon-play-circle)").first
        expect(play).to_be_visible(timeout=PLAYER_READY_MS)
        play.click()
        try:
            expect(player.locator(".anticon-pause-circle").first).to_be_visible(timeout=10_000)
            return
        except AssertionError:
            continue
    raise AssertionError("the A/B player never started playing")


def test_edit_a_region_ab_then_extend_and_find_both_in_the_library(
    app_url: str, page: Page, tmp_path: Path
) -> None:
    page.goto(f"{app_url}/Edit")
    expect(page.get_by_role("heading", name="Edit")).to_be_visible(timeout=60_000)
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Audio file")
    uploader.locator("input[type=file]").set_input_files(str(demo_song(tmp_path)))
    expect(page.get_by_text("my-blues-demo · upload · 0:08.0")).to_be_visible(timeout=30_000)
    waveform = page.frame_locator('iframe[title*="audix"]').first
    scissors = waveform.locator("button:has(.anticon-scissor)")
    expect(scissors).to_be_visible(timeout=PLAYER_READY_MS)
    expect(waveform.get_by_text(re.compile(r"^8\.\d\d$"))).to_be_visible(timeout=PLAYER_READY_MS)
    shot(page, "edit-01-uploaded")

    # ✂ adds a region over the first fifth; drag it along, stretch its end, ✓ sends it.
    scissors.click()
    region = waveform.locator('[part~="region"]').first
    expect(region).to_be_visible()
    wave_width = waveform.locator('[part="wrapper"]').first.bounding_box()["width"]
    box = region.bounding_box()
    drag(page, box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, wave_width * 0.3)
    handle = waveform.locator('[part~="region-handle-right"]').first.bounding_box()
    drag(
        page,
        handle["x"] + handle["width"] / 2,
        handle["y"] + handle["height"] / 2,
        wave_width * 0.25,
    )
    shot(page, "edit-02-region-dragged")
    waveform.locator("button:has(.anticon-check)").click()
    start_field = page.get_by_label("Start (s)")
    expect(start_field).not_to_have_value("", timeout=30_000)
    start = float(start_field.input_value())
    end = float(page.get_by_label("End (s)").input_value())
    # Moved 30 % along an 8 s song (about 2.4 s) and stretched by 25 % (about 2 s).
    assert 1.6 < start < 3.2, (start, end)
    assert 3.0 <= end - start <= 4.5, (start, end)
    region_note = re.compile(r"^Region 0:0\d\.\d – 0:0\d\.\d · \d\.\d s$")
    expect(page.get_by_text(region_note)).to_be_visible()
    shot(page, "edit-03-region-in-fields")

    page.get_by_role("textbox", name="Caption of the whole song").fill(CAPTION)
    page.get_by_role("textbox", name="Lyrics of the whole song").fill(LYRICS)
    page.get_by_role("textbox", name="Lyrics of the whole song").blur()
    page.get_by_text("Diffusion").click()
    set_slider(page, "Steps", ["Home", *["ArrowRight"] * 3])  # 4 steps
    page.get_by_role("button", name="Repaint region").click()
    expect(page).to_have_url(re.compile(r"job="))
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=AUDIO_JOB_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"History: upload → edit 0:0\d–0:0\d"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Both played at -?\d+\.\d LUFS"))).to_be_visible()
    page.get_by_role("radiogroup", name="A/B").scroll_into_view_if_needed()
    shot(page, "edit-04-repainted")

    # A/B: listen to the original, then the new take, at the same loudness.
    page.get_by_role("radio", name="A · original").click()
    play_ab(page)
    shot(page, "edit-05-ab-original-playing")
    page.get_by_role("radio", name="B · new take").click()
    play_ab(page)
    shot(page, "edit-06-ab-new-take-playing")

    # Extend the edited take by 10 s, straight from its card.
    page.get_by_role("link", name="Extend this").click()
    expect(page).to_have_url(re.compile(r"/Extend\?.*source_id="))
    expect(page.get_by_role("heading", name="Extend")).to_be_visible()
    expect(page.get_by_role("textbox", name="Caption of the new section")).to_have_value(CAPTION)
    set_slider(page, "Seconds to add", ["Home", *["ArrowRight"] * 5])  # 10 s
    # The last 5 s of the song are enough context here (and quick on a CPU).
    page.get_by_text("Use the whole song as context").click()
    set_slider(page, "Context (seconds)", ["Home"])
    plan = re.compile(r"hears 0:03\.0–0:08\.0 and writes 10 s after it; the result is 0:18\.0")
    expect(page.get_by_text(plan)).to_be_visible()
    page.get_by_text("Diffusion").click()
    set_slider(page, "Steps", ["Home", *["ArrowRight"] * 3])
    shot(page, "extend-01-form")
    page.get_by_role("button", name="Extend", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=AUDIO_JOB_TIMEOUT_MS)
    history = re.compile(r"History: upload → edit 0:0\d–0:0\d → extend \+10 s")
    expect(page.get_by_text(history)).to_be_visible()
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Extension only · 10 s (WAV)").click()
    extension = sf.info(str(save_download(download_info.value, "extension-only.wav")))
    assert extension.duration == 10.0 and extension.samplerate == 48_000
    with page.expect_download() as download_info:
        page.get_by_role("button", name="WAV", exact=True).first.click()
    whole = sf.info(str(save_download(download_info.value, "extended.wav")))
    assert abs(whole.duration - 18.0) < 1e-3
    page.get_by_role("radiogroup", name="A/B").scroll_into_view_if_needed()
    shot(page, "extend-02-done")

    # Both takes are in the library, and the newest shows the whole history.
    page.get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", name="ACE Music Studio")).to_be_visible()
    expect(page.get_by_text(history)).to_be_visible()
    expect(page.get_by_text(re.compile(r"^History: upload → edit 0:0\d–0:0\d$"))).to_be_visible()
    shot(page, "edit-extend-library")
