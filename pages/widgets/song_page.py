"""The parts every song page shares: takes, the advanced expanders, the submit button, and
the results column (job panel, then a card per take)."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.jobs import Job
from core.request import InvalidRequest, SongRequest
from core.studio import Studio
from vendor.models import VariantDefaults

from .common import show_problems
from .jobs import current_job_id, follow_job, job_panel
from .lora import lora_expander
from .song_form import (
    diffusion_expander,
    metadata_expander,
    read_request,
    thinking_expander,
    write_to_url,
)
from .takes import take_card

TakeTools = Callable[[Studio, object], None]


def takes_choice(
    studio: Studio,
    prefix: str,
    help_text: str = "Each take is a different seed of the same settings.",
) -> None:
    st.radio(
        "Takes",
        list(range(1, studio.settings.max_takes + 1)),
        horizontal=True,
        key=f"{prefix}.takes",
        help=help_text,
    )


def advanced_expanders(
    studio: Studio, prefix: str, defaults: VariantDefaults, *, thinking: bool = False
) -> None:
    diffusion_expander(prefix, defaults)
    metadata_expander(prefix)
    if thinking:
        thinking_expander(prefix, studio.settings)
    lora_expander(studio, prefix)


def submit_button(
    prefix: str,
    task: str,
    job_key: str,
    label: str,
    icon: str,
    submit: Callable[[SongRequest], Job],
) -> None:
    """Queue the form's request (every problem shown by field), then mirror it in the URL."""
    if st.button(label, type="primary", icon=icon, width="stretch"):
        try:
            follow_job(job_key, submit(read_request(prefix, task)))
        except InvalidRequest as invalid:
            show_problems([problem.message for problem in invalid.problems])
    write_to_url(prefix, read_request(prefix, task))


def results(
    studio: Studio,
    job_key: str,
    *,
    empty_text: str,
    empty_icon: str,
    tools: TakeTools,
    waveform: bool = True,
    job_extra: Callable[[Job], None] | None = None,
) -> None:
    """The page's current job and its takes; `job_extra` draws more about the job (a plan)."""
    job_id = current_job_id(job_key)
    if not job_id:
        st.info(empty_text, icon=empty_icon)
        return
    job = job_panel(studio, job_id, state_key=job_key, running_extra=job_extra)
    if job_extra is not None and job is not None and job.is_finished:
        job_extra(job)
    for item in studio.library.for_job(job_id):
        take_card(
            studio,
            item,
            waveform=waveform,
            on_new_job=lambda new: follow_job(job_key, new),
            tools=tools,
        )
