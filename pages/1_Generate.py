"""Generate: caption + lyrics (+ metadata) → takes."""

from __future__ import annotations

import streamlit as st

from core.request import InvalidRequest
from pages.widgets.common import page_setup, show_problems
from pages.widgets.finishing import finishing_tools
from pages.widgets.jobs import current_job_id, follow_job, job_panel
from pages.widgets.lora import lora_expander
from pages.widgets.planner import plan_view, sample_tools
from pages.widgets.song_form import (
    diffusion_expander,
    metadata_expander,
    read_request,
    sync_from_url,
    text_inputs,
    thinking_expander,
    write_to_url,
)
from pages.widgets.takes import take_card

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
        st.radio(
            "Takes",
            list(range(1, studio.settings.max_takes + 1)),
            horizontal=True,
            key=f"{PAGE}.takes",
            help="Each take is a different seed of the same settings.",
        )
    diffusion_expander(PAGE, defaults)
    metadata_expander(PAGE)
    thinking_expander(PAGE, studio.settings)
    lora_expander(studio, PAGE)
    if st.button("Generate", type="primary", icon=":material/play_arrow:", width="stretch"):
        try:
            follow_job(JOB_KEY, studio.submit_song(read_request(PAGE, "generate")))
        except InvalidRequest as invalid:
            show_problems([problem.message for problem in invalid.problems])
    write_to_url(PAGE, read_request(PAGE, "generate"))

with output:
    job_id = current_job_id(JOB_KEY)
    if not job_id:
        st.info("Your takes appear here.", icon=":material/queue_music:")
    else:
        job = job_panel(studio, job_id, state_key=JOB_KEY, running_extra=plan_view)
        if job is not None and job.is_finished:
            plan_view(job)
        for item in studio.library.for_job(job_id):
            take_card(
                studio,
                item,
                on_new_job=lambda new: follow_job(JOB_KEY, new),
                tools=finishing_tools,
            )
