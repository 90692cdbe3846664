"""Extend: add new music after the end of a song or before its start."""

from __future__ import annotations

import streamlit as st

from core import tasks
from core.request import EXTEND_RANGE
from core.sources import clock
from pages.widgets.ab import derived_take_tools
from pages.widgets.common import page_setup
from pages.widgets.finishing import finishing_tools
from pages.widgets.planner import understand_button
from pages.widgets.song_form import (
    read_request,
    sync_from_url,
    text_inputs,
)
from pages.widgets.song_page import advanced_expanders, results, submit_button, takes_choice
from pages.widgets.source import source_picker, waveform

PAGE = "extend"
JOB_KEY = "extend.job"
SIDES = {"end": "After the end", "start": "Before the start"}
MIN_CONTEXT = 5

studio = page_setup("Extend", "➕")
defaults = studio.variant_defaults()
sync_from_url(PAGE, defaults)

st.title("Extend")
st.caption(
    "Add up to two minutes after the end of a song or before its start. The song itself "
    "stays untouched; extend an extension to keep going."
)
form, output = st.columns([3, 2], gap="large")

with form:
    source = source_picker(studio, PAGE, label="Song to extend", carry=("caption",))
    seconds = float(source.duration or 0.0) if source is not None else 0.0
    if source is not None:
        waveform(studio, PAGE, source)
    where, length = st.columns([2, 3])
    with where:
        st.radio(
            "Where",
            tuple(SIDES),
            format_func=SIDES.get,
            key=f"{PAGE}.extend_side",
            horizontal=True,
        )
    with length:
        low, high = EXTEND_RANGE
        st.slider("Seconds to add", low, high, step=1.0, key=f"{PAGE}.extend_seconds")
    context_all_key, context_key = f"{PAGE}.context_all", f"{PAGE}.context_seconds"
    short_song = source is not None and seconds <= MIN_CONTEXT
    if short_song:
        st.session_state[context_all_key] = True
    st.toggle(
        "Use the whole song as context",
        key=context_all_key,
        disabled=short_song,
        help="Only the context goes through the model; a shorter one is faster and keeps the "
        "new part close to how the song ends (or starts).",
    )
    if not st.session_state.get(context_all_key, True):
        top = max(int(seconds), MIN_CONTEXT + 1) if source is not None else 120
        current = st.session_state.get(context_key)
        if current is None or not MIN_CONTEXT <= current <= top:
            st.session_state[context_key] = min(max(int(current or 30), MIN_CONTEXT), top)
        st.slider("Context (seconds)", MIN_CONTEXT, top, step=1, key=context_key)
    request = read_request(PAGE, "extend")
    if source is not None:
        context = (
            seconds if request.context_seconds is None else min(request.context_seconds, seconds)
        )
        at_end = request.extend_side == "end"
        window = (seconds - context, seconds) if at_end else (0.0, context)
        st.caption(
            f"The model hears {clock(window[0])}–{clock(window[1])} and writes "
            f"{request.extend_seconds:g} s {'after' if at_end else 'before'} it; the result is "
            f"{clock(seconds + request.extend_seconds)} long."
        )
    understand_button(studio, PAGE, source)
    text_inputs(
        PAGE, caption_label="Caption of the new section", lyrics_label="Lyrics of the new section"
    )
    takes_choice(studio, PAGE, "Each take writes the new section with a different seed.")
    advanced_expanders(studio, PAGE, defaults)
    submit_button(
        PAGE,
        "extend",
        JOB_KEY,
        "Extend",
        ":material/arrow_range:",
        lambda request: tasks.submit(studio, request),
    )

with output:
    results(
        studio,
        JOB_KEY,
        empty_text="The extended song appears here, with the new section as its own download.",
        empty_icon=":material/arrow_range:",
        tools=derived_take_tools(finishing_tools),
        waveform=False,
    )
