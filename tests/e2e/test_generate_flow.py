"""A new user's first song, in a real browser: Home → Generate → two takes → play, download,
reload, and cancel a long run."""

from __future__ import annotations

import re

import soundfile as sf
from playwright.sync_api import Page, expect

from tests.e2e.conftest import JOB_TIMEOUT_MS, save_download, shot


def _set_slider(page: Page, label: str, presses: list[str]) -> None:
    slider = page.get_by_role("slider", name=label)
    slider.focus()
    for key in presses:
        slider.press(key)


def test_first_song_two_takes_play_download_reload(app_url: str, page: Page) -> None:
    page.goto(app_url)
    expect(page.get_by_role("heading", name="ACE Music Studio")).to_be_visible()
    expect(page.get_by_text("DiT pipeline")).to_be_visible()
    shot(page, "generate-01-home")

    page.get_by_role("link", name="Generate").click()
    expect(page).to_have_url(re.compile(r"/Generate"))
    page.get_by_role("textbox", name="Caption", exact=True).fill(
        "warm lo-fi hip hop, dusty vinyl drums, mellow keys"
    )
    page.get_by_role("textbox", name="Lyrics", exact=True).fill(
        "[Verse 1]\nrain on the window\n\n[Chorus]\nstay a while"
    )
    page.get_by_role("textbox", name="Lyrics", exact=True).blur()
    _set_slider(page, "Duration (seconds)", ["Home"])  # 10 s
    page.get_by_text("2", exact=True).click()  # two takes
    page.get_by_text("Diffusion").click()
    _set_slider(page, "Steps", ["Home", *["ArrowRight"] * 29])  # 30 steps
    shot(page, "generate-02-form")

    page.get_by_role("button", name="Generate").click()
    expect(page.locator('[data-testid="stProgress"]')).to_be_visible(timeout=JOB_TIMEOUT_MS)
    shot(page, "generate-03-progress")
    expect(page).to_have_url(re.compile(r"job="))
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=JOB_TIMEOUT_MS)
    players = page.frame_locator('iframe[title*="audix"]')
    expect(page.locator('iframe[title*="audix"]')).to_have_count(2, timeout=30_000)
    expect(page.get_by_text("take 2")).to_be_visible()
    shot(page, "generate-04-takes")

    first_player = page.frame_locator('iframe[title*="audix"]').first
    first_player.locator("button:has(.anticon-play-circle)").first.click()
    expect(first_player.locator(".anticon-pause-circle").first).to_be_visible()
    del players

    with page.expect_download() as download_info:
        page.get_by_role("button", name="FLAC").first.click()
    flac = save_download(download_info.value, "take1.flac")
    info = sf.info(str(flac))
    assert info.samplerate == 48000
    assert info.channels == 2
    assert abs(info.duration - 10.0) < 0.05
    assert flac.name.endswith(".flac")
    assert download_info.value.suggested_filename.endswith(" - take 1.flac")

    url = page.url
    page.reload()
    expect(page.locator('iframe[title*="audix"]')).to_have_count(2, timeout=30_000)
    expect(page.get_by_role("textbox", name="Caption", exact=True)).to_have_value(
        "warm lo-fi hip hop, dusty vinyl drums, mellow keys"
    )
    assert page.url.split("job=")[1][:12] == url.split("job=")[1][:12]
    shot(page, "generate-05-after-reload")

    page.get_by_role("link", name="Home").click()
    expect(page.get_by_text("warm lo-fi hip hop, dusty vinyl drums").first).to_be_visible()
    shot(page, "generate-06-library")


def test_cancel_a_running_job(app_url: str, page: Page) -> None:
    page.goto(f"{app_url}/Generate?caption=a+long+ambient+drone&duration=120&steps=200")
    expect(page.get_by_role("textbox", name="Caption", exact=True)).to_have_value(
        "a long ambient drone"
    )
    page.get_by_role("button", name="Generate").click()
    expect(page.locator('[data-testid="stProgress"]')).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"Diffusion · step \d+/200"))).to_be_visible(
        timeout=JOB_TIMEOUT_MS
    )
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_text("Cancelled. Nothing was saved.")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.locator('iframe[title*="audix"]')).to_have_count(0)
    shot(page, "generate-07-cancelled")
