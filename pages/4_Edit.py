"""Edit: repaint a region of a song; outside the region it stays exactly as it was."""

from __future__ import annotations

import streamlit as st

from core import tasks
from pages.widgets.ab import derived_take_tools
from pages.widgets.common import page_setup
from pages.widgets.finishing import finishing_tools
from pages.widgets.song_form import (
    sync_from_url,
    text_inputs,
)
from pages.widgets.song_page import advanced_expanders, results, submit_button, takes_choice
from pages.widgets.source import region_editor, source_picker

PAGE = "edit"
JOB_KEY = "edit.job"

studio = page_setup("Edit", "✂️")
defaults = studio.variant_defaults()
sync_from_url(PAGE, defaults)

st.title("Edit")
st.caption(
    "Repaint a region of a song, 3 to 90 seconds long. Everything outside the region stays "
    "sample for sample as it was."
)
form, output = st.columns([3, 2], gap="large")

with form:
    source = source_picker(studio, PAGE, label="Song to edit")
    if source is not None:
        region_editor(studio, PAGE, source)
    text_inputs(
        PAGE, caption_label="Caption of the whole song", lyrics_label="Lyrics of the whole song"
    )
    st.caption(
        "The model hears the whole song: describe all of it, and keep all of its lyrics. To "
        "change the words, change only the lines sung inside the region."
    )
    takes_choice(studio, PAGE, "Each take repaints the region with a different seed.")
    advanced_expanders(studio, PAGE, defaults)
    submit_button(
        PAGE,
        "edit",
        JOB_KEY,
        "Repaint region",
        ":material/brush:",
        lambda request: tasks.submit(studio, request),
    )

with output:
    results(
        studio,
        JOB_KEY,
        empty_text="Your edited takes appear here, with an A/B against the original.",
        empty_icon=":material/content_cut:",
        tools=derived_take_tools(finishing_tools),
        waveform=False,
    )
