"""The job panel: status, progress, ETA, queue position and cancel, polled by a fragment.

The fragment polls only while the job is queued or running; when it finishes, one full
rerun draws the results outside the fragment, so heavy players never sit in a polling loop.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job
from core.studio import Studio

JOB_QUERY_KEY = "job"


def current_job_id(state_key: str) -> str | None:
    """The page's job: from the URL first (reload, shared link), then the session."""
    job_id = st.query_params.get(JOB_QUERY_KEY) or st.session_state.get(state_key)
    if job_id:
        st.session_state[state_key] = job_id
        st.query_params[JOB_QUERY_KEY] = job_id
    return job_id


def follow_job(state_key: str, job: Job) -> None:
    """Make `job` the page's job, in the session and in the URL."""
    st.session_state[state_key] = job.id
    st.query_params[JOB_QUERY_KEY] = job.id


def format_seconds(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{secs} s"


def job_panel(
    studio: Studio,
    job_id: str,
    *,
    state_key: str,
    running_extra: Callable[[Job], None] | None = None,
) -> Job | None:
    """Draw the job's live status. Returns the job as it was at the start of this run."""
    job = studio.jobs.get(job_id)
    if job is None:
        st.warning("That job is not in this Studio's queue any more.")
        return None
    live = not job.is_finished

    @st.fragment(run_every=studio.settings.poll_seconds if live else None)
    def status() -> None:
        current = studio.jobs.get(job_id)
        if current is None:
            return
        _draw_status(studio, current, state_key, running_extra)
        if live and current.is_finished:
            # One full rerun stops the timer and draws the results outside the fragment.
            st.rerun()

    status()
    return job


def _draw_status(
    studio: Studio,
    job: Job,
    state_key: str,
    running_extra: Callable[[Job], None] | None,
) -> None:
    if job.status == QUEUED:
        ahead = (job.position or 1) - 1
        where = "next in line" if ahead == 0 else f"{ahead} job{'s' if ahead > 1 else ''} ahead"
        st.info(f"Queued · {where}", icon=":material/schedule:")
        _cancel_button(studio, job)
    elif job.status == RUNNING:
        text = job.phase.capitalize() or "Starting"
        if job.total_steps and job.phase != "loading model":
            text += f" · step {job.step}/{job.total_steps}"
        if job.eta_seconds is not None:
            text += f" · about {format_seconds(job.eta_seconds)} left"
        st.progress(job.fraction, text=text)
        if job.message:
            st.caption(job.message)
        if running_extra is not None:
            running_extra(job)
        _cancel_button(studio, job)
    elif job.status == DONE:
        st.success(f"Done in {format_seconds(job.elapsed)}", icon=":material/check_circle:")
        if job.message:
            st.caption(job.message)
    elif job.status == FAILED:
        st.error(job.error or "The job failed.", icon=":material/error:")
        if st.button("Retry", key=f"retry-{job.id}", icon=":material/replay:"):
            follow_job(state_key, studio.retry(job.id))
            st.rerun()
    elif job.status == CANCELLED:
        st.info("Cancelled. Nothing was saved.", icon=":material/block:")


def _cancel_button(studio: Studio, job: Job) -> None:
    if job.cancel_requested:
        st.caption("Cancelling after the current step…")
    elif st.button("Cancel", key=f"cancel-{job.id}", icon=":material/stop_circle:"):
        studio.jobs.cancel(job.id)
        st.rerun(scope="fragment")
