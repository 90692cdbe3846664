"""Cover: the same song in a new style: its structure from the source, the rest from you."""

from __future__ import annotations

import streamlit as st

from core import tasks
from pages.widgets.ab import derived_take_tools
from pages.widgets.common import page_setup
from pages.widgets.finishing import finishing_tools
from pages.widgets.planner import understand_button
from pages.widgets.song_form import (
    sync_from_url,
    text_inputs,
)
from pages.widgets.song_page import advanced_expanders, results, submit_button, takes_choice
from pages.widgets.source import source_picker, waveform

PAGE = "cover"
JOB_KEY = "cover.job"

studio = page_setup("Cover", "🎭")
defaults = studio.variant_defaults()
sync_from_url(PAGE, defaults)

st.title("Cover")
st.caption(
    "A new version of a song: the source gives the structure (melody, rhythm, arrangement), "
    "your caption and lyrics the style and words. The cover is as long as the source."
)
form, output = st.columns([3, 2], gap="large")

with form:
    source = source_picker(studio, PAGE, label="Song to cover")
    if source is not None:
        waveform(studio, PAGE, source)
    understand_button(studio, PAGE, source)
    text_inputs(PAGE, caption_label="Caption of the cover", lyrics_label="Lyrics of the cover")
    st.slider(
        "Cover strength",
        0.0,
        1.0,
        step=0.05,
        key=f"{PAGE}.cover_strength",
        help="How strongly the source's structure steers the cover. 1 follows it closely; "
        "around 0.2–0.5 keeps a loose outline and lets your caption lead.",
    )
    st.caption(
        "Strength 1 keeps the source's melody and arrangement; lower values keep less of it "
        "and more of your caption (about 0.2 for a loose style transfer)."
    )
    with st.expander("Timbre reference (optional)", icon=":material/graphic_eq:"):
        st.caption(
            "A second clip whose sound (voice, instruments, production) colours the cover; "
            "its notes and words are not used."
        )
        reference = source_picker(studio, PAGE, target="reference_id", label="Reference clip")
        if reference is not None and st.button(
            "Remove reference", key=f"{PAGE}.remove_reference", icon=":material/close:"
        ):
            st.session_state[f"{PAGE}.reference_id"] = None
            st.session_state.pop(f"{PAGE}.reference_id.pick", None)
            st.rerun()
    takes_choice(studio, PAGE, "Each take is a different seed of the same settings.")
    advanced_expanders(studio, PAGE, defaults)
    submit_button(
        PAGE,
        "cover",
        JOB_KEY,
        "Cover",
        ":material/swap_horiz:",
        lambda request: tasks.submit(studio, request),
    )

with output:
    results(
        studio,
        JOB_KEY,
        empty_text="Your covers appear here, with an A/B against the source.",
        empty_icon=":material/swap_horiz:",
        tools=derived_take_tools(finishing_tools),
        waveform=False,
    )
