"""Thinking in a real browser: a musician turns the planner on, sees its plan while the song is
made, then drafts a sample from an idea and uses it."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.e2e.conftest import JOB_TIMEOUT_MS, shot


def test_generate_with_thinking_then_create_a_sample(app_url: str, page: Page) -> None:
    page.goto(f"{app_url}/Generate")
    caption = page.get_by_role("textbox", name="Caption", exact=True)
    caption.fill("uplifting synth pop with bright pads")
    page.get_by_role("textbox", name="Lyrics", exact=True).fill("[Verse 1]\nneon on the water")
    page.get_by_role("textbox", name="Lyrics", exact=True).blur()
    slider = page.get_by_role("slider", name="Duration (seconds)")
    slider.focus()
    slider.press("Home")  # 10 s
    page.get_by_text("Diffusion").click()
    steps = page.get_by_role("slider", name="Steps")
    steps.focus()
    steps.press("Home")
    page.get_by_text("Thinking").click()
    page.get_by_text("Plan with the 5 Hz LM").click()
    shot(page, "planner-01-thinking-on")

    page.get_by_role("button", name="Generate").click()
    # While the page redraws, the running panel's copy of the plan can still be on screen.
    plan = page.get_by_text("Planner", exact=True).first
    expect(plan).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"Your caption: uplifting synth pop")).first).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible(timeout=JOB_TIMEOUT_MS)
    expect(page.get_by_text("50 audio codes (10 s of music)").first).to_be_visible()
    expect(page.locator('iframe[title*="audix"]')).to_have_count(1, timeout=30_000)
    shot(page, "planner-02-plan-and-take")

    page.get_by_role("button", name="Create sample").click()
    page.get_by_role("textbox", name="Your idea").fill("a lullaby for a rainy night")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.get_by_text(re.compile(r"^Create sample · "))).to_be_visible(
        timeout=JOB_TIMEOUT_MS
    )  # the draft streams in while the planner writes it
    use_it = page.get_by_role("button", name="Use it")
    # A random tiny model rarely stops early: its sample can run to the full token budget.
    expect(use_it).to_be_visible(timeout=3 * JOB_TIMEOUT_MS)
    shot(page, "planner-03-sample")
    use_it.click()
    expect(use_it).to_have_count(0, timeout=30_000)
    expect(caption).not_to_have_value("uplifting synth pop with bright pads", timeout=30_000)
    shot(page, "planner-04-sample-used")
