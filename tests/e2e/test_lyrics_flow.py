"""A new user drafts lyrics in a real browser: write, watch them stream in, edit a line,
keep the draft, and take it to Generate, where the form is filled in."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import JOB_TIMEOUT_MS, shot

BRIEF = "A late-night drive through a rainy city, missing someone"


def test_write_stream_edit_keep_and_use_in_generate(app_url: str, page: Page) -> None:
    page.goto(app_url)
    page.get_by_role("link", name="Lyrics").click()
    expect(page).to_have_url(re.compile(r"/Lyrics"))
    # The first visit may start the Studio (imports, the worker) before the page draws.
    expect(page.get_by_role("heading", name="Lyrics")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    page.get_by_role("textbox", name="Brief").fill(BRIEF)
    page.get_by_role("textbox", name="Tone / mood").fill("bittersweet")
    page.get_by_text("Sampling").click()
    max_tokens = page.get_by_role("slider", name="Max tokens")
    max_tokens.focus()
    # The longest draft: on an idle machine the tiny writer is fast enough that a short one
    # can finish between two polls of the page, and then there is no streaming to watch.
    max_tokens.press("End")
    shot(page, "lyrics-01-form")

    page.get_by_role("button", name="Write").click()
    # The Studio may still be loading the DiT next door: give each rerun time.
    expect(page).to_have_url(re.compile(r"job="), timeout=JOB_TIMEOUT_MS)
    # While the writer writes, the draft shows as it grows, above a Cancel button.
    streaming = page.locator('[data-testid="stCode"]')
    expect(page.get_by_text("Draft · writing…")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    page.wait_for_function(
        "() => { const c = document.querySelector('[data-testid=\"stCode\"]');"
        " return c && c.innerText.trim() && !c.innerText.includes('The first lines appear'); }",
        timeout=JOB_TIMEOUT_MS,
    )
    first = streaming.inner_text().strip()
    shot(page, "lyrics-02-streaming")
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(streaming).to_have_count(0)

    editor = page.get_by_role("textbox", name="Draft")
    expect(editor).to_be_enabled(timeout=JOB_TIMEOUT_MS)
    written = editor.input_value()
    assert first and written and written != first
    expect(page.get_by_text(f"{len(written)} / 4096 characters")).to_be_visible(
        timeout=JOB_TIMEOUT_MS
    )
    shot(page, "lyrics-03-done")

    lines = written.split("\n")
    # Edit the first line (and tag it), keep the rest as written.
    edited = "\n".join(["[Verse 1]", f"{lines[0]}, wipers keep the time", *lines[1:]])
    editor.fill(edited)
    editor.blur()
    expect(page.get_by_text(f"{len(edited)} / 4096 characters")).to_be_visible(
        timeout=JOB_TIMEOUT_MS
    )
    page.get_by_role("button", name="Keep").click()
    expect(page.get_by_text("Kept drafts (1)")).to_be_visible(timeout=JOB_TIMEOUT_MS)
    caption = page.get_by_role("textbox", name="Caption for Generate")
    expect(caption).to_have_value(
        "bittersweet, a late-night drive through a rainy city, missing someone"
    )
    shot(page, "lyrics-04-edited-and-kept")

    page.get_by_role("button", name="Use in Generate").click()
    expect(page).to_have_url(re.compile(r"/Generate"), timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_role("textbox", name="Lyrics", exact=True)).to_have_value(
        edited.strip(), timeout=JOB_TIMEOUT_MS
    )
    expect(page.get_by_role("textbox", name="Caption", exact=True)).to_have_value(
        "bittersweet, a late-night drive through a rainy city, missing someone"
    )
    shot(page, "lyrics-05-generate-filled")
