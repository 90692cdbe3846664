"""Edit: repaint a region of a song; outside the region it stays exactly as it was."""

from __future__ import annotations

import streamlit as st

from core import tasks
from core.request import InvalidRequest
from pages.widgets.ab import derived_take_tools
from pages.widgets.common import page_setup, show_problems
from pages.widgets.finishing import finishing_tools
from pages.widgets.jobs import current_job_id, follow_job, job_panel
from pages.widgets.lora import lora_expander
from pages.widgets.song_form import (
    diffusion_expander,
    metadata_expander,
    read_request,
    sync_from_url,
    text_inputs,
    write_to_url,
)
from pages.widgets.source import region_editor, source_picker
from pages.widgets.takes import take_card

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
    st.radio(
        "Takes",
        list(range(1, studio.settings.max_takes + 1)),
        horizontal=True,
        key=f"{PAGE}.takes",
        help="Each take repaints the region with a different seed.",
    )
    diffusion_expander(PAGE, defaults)
    metadata_expander(PAGE)
    lora_expander(studio, PAGE)
    if st.button("Repaint region", type="primary", icon=":material/brush:", width="stretch"):
        try:
            follow_job(JOB_KEY, tasks.submit(studio, read_request(PAGE, "edit")))
        except InvalidRequest as invalid:
            show_problems([problem.message for problem in invalid.problems])
    write_to_url(PAGE, read_request(PAGE, "edit"))

with output:
    job_id = current_job_id(JOB_KEY)
    if not job_id:
        st.info(
            "Your edited takes appear here, with an A/B against the original.",
            icon=":material/content_cut:",
        )
    else:
        job_panel(studio, job_id, state_key=JOB_KEY)
        for item in studio.library.for_job(job_id):
            take_card(
                studio,
                item,
                waveform=False,
                on_new_job=lambda new: follow_job(JOB_KEY, new),
                tools=derived_take_tools(finishing_tools),
            )
