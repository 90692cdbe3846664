"""Generate: caption + lyrics (+ metadata) → takes."""

from __future__ import annotations

import streamlit as st

from pages.widgets.common import page_setup
from pages.widgets.finishing import finishing_tools
from pages.widgets.planner import plan_view, sample_tools
from pages.widgets.song_form import sync_from_url, text_inputs
from pages.widgets.song_page import advanced_expanders, results, submit_button, takes_choice

PAGE = "generate"
JOB_KEY = "generate.job"

studio = page_setup("Generate", "🎵")
defaults = studio.variant_defaults()
sync_from_url(PAGE, defaults)

st.title("Generate")
form, output = st.columns([3, 2], gap="large")

with form:
    sample_tools(studio, PAGE)
    text_inputs(PAGE)
    length, takes = st.columns([3, 2])
    with length:
        st.slider(
            "Duration (seconds)",
            10,
            studio.settings.max_duration,
            step=5,
            key=f"{PAGE}.duration",
        )
    with takes:
        takes_choice(studio, PAGE)
    advanced_expanders(studio, PAGE, defaults, thinking=True)
    submit_button(
        PAGE, "generate", JOB_KEY, "Generate", ":material/play_arrow:", studio.submit_song
    )

with output:
    results(
        studio,
        JOB_KEY,
        empty_text="Your takes appear here.",
        empty_icon=":material/queue_music:",
        tools=finishing_tools,
        job_extra=plan_view,
    )
