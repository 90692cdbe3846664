"""The planner's widgets: the plan in the job panel, Create sample and Format on Generate, and
Understand on Cover and Extend.

Create sample, Format and Understand are jobs on the Studio's queue. While one runs, a
fragment polls it and shows the text as the planner writes it; when it is done the result
waits for "Use it", so nothing the musician typed is overwritten unasked. "Use it" fills the
form in a button callback, before the form's widgets are drawn again.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import music
from core.jobs import CANCELLED, DONE, FAILED, Job
from core.library import Item
from core.studio import Studio

from .song_form import AUTO, form_key

KINDS = {
    "create_sample": "Create sample",
    "format": "Format",
    "understand": "Understand",
}


MARKDOWN_SPECIALS = "\\`*_{}[]()<>#+-.!|~$"


def plain(text: str) -> str:
    """Text shown through st.markdown exactly as written: a caption with "*" or "~" in it
    must not turn into formatting."""
    return "".join(f"\\{char}" if char in MARKDOWN_SPECIALS else char for char in text)


# --- The plan of a song job ---------------------------------------------------------------------


def plan_view(job: Job) -> None:
    """What the planner decided: shown from the end of its reasoning, while the DiT runs."""
    plan = job.plan
    if not plan:
        return
    with st.container(border=True):
        st.markdown(
            "**Planner**" + (" · reasoning skipped" if plan.get("skipped_reasoning") else "")
        )
        caption = plan.get("caption")
        if caption:
            st.markdown(f"_{plain(str(caption))}_")
            st.caption(f"Your caption: {plain(str(plan.get('user_caption', '')))}")
        facts = describe_metadata(plan)
        if facts:
            st.markdown(" · ".join(facts))
        codes = int(plan.get("codes") or 0)
        if codes:
            seconds = plan.get("seconds")
            took = f", planned in {float(seconds):.1f} s" if seconds is not None else ""
            st.caption(f"{codes} audio codes ({codes / 5:g} s of music){took}")
        elif job.status not in (DONE, FAILED, CANCELLED):
            st.caption("Writing the audio codes…")


def describe_metadata(values: dict[str, Any]) -> list[str]:
    """Short facts for a plan or a planner result: tempo, key, metre, length, language."""
    facts = []
    if values.get("bpm"):
        facts.append(f"{values['bpm']} BPM")
    if values.get("key"):
        facts.append(str(values["key"]))
    if values.get("time_signature"):
        facts.append(f"{values['time_signature']}/4")
    if values.get("duration"):
        facts.append(f"{values['duration']} s")
    language = values.get("language")
    if language:
        facts.append(music.LANGUAGE_NAMES.get(str(language), str(language)))
    return facts


# --- Create sample and Format (Generate) --------------------------------------------------------


def sample_tools(studio: Studio, prefix: str) -> None:
    """Create sample (an idea becomes caption, lyrics and metadata) and Format (polish the
    caption and lyrics in the form), with the result waiting for "Use it"."""
    state = st.session_state
    create, polish = st.columns(2)
    with create, st.popover("Create sample", icon=":material/auto_awesome:", width="stretch"):
        st.text_area(
            "Your idea",
            key=form_key(prefix, "planner.idea"),
            placeholder="a soft Bengali love song for a quiet evening",
            help="A few words are enough; empty lets the planner invent one.",
            height=80,
        )
        st.checkbox("Instrumental", key=form_key(prefix, "planner.idea_instrumental"))
        if st.button("Create", key=form_key(prefix, "planner.create"), type="primary"):
            language = state.get(form_key(prefix, "language"), "unknown")
            _submit(
                studio,
                prefix,
                "create_sample",
                {
                    "idea": state.get(form_key(prefix, "planner.idea"), ""),
                    "instrumental": bool(state.get(form_key(prefix, "planner.idea_instrumental"))),
                    "language": language,
                    "planner_size": _planner_size(studio, prefix),
                },
            )
    with polish:
        if st.button(
            "Format",
            key=form_key(prefix, "planner.format"),
            icon=":material/format_paint:",
            width="stretch",
            help="The planner rewrites your caption in more detail and tidies the lyrics; "
            "tempo, key, metre and language you set stay as they are.",
        ):
            _submit(studio, prefix, "format", _form_values(studio, prefix))
    assistant_panel(studio, prefix)


def _form_values(studio: Studio, prefix: str) -> dict[str, Any]:
    state = st.session_state
    meter = state.get(form_key(prefix, "time_signature"), AUTO)
    return {
        "caption": state.get(form_key(prefix, "caption"), ""),
        "lyrics": state.get(form_key(prefix, "lyrics"), ""),
        "bpm": state.get(form_key(prefix, "bpm")),
        "key": state.get(form_key(prefix, "key")) or None,
        "time_signature": None if meter == AUTO else meter,
        "duration": state.get(form_key(prefix, "duration")),
        "language": state.get(form_key(prefix, "language"), "unknown"),
        "planner_size": _planner_size(studio, prefix),
    }


def _planner_size(studio: Studio, prefix: str) -> str:
    return str(
        st.session_state.get(form_key(prefix, "thinking.planner_size"))
        or studio.settings.planner_size
    )


# --- Understand (Cover, Extend) ----------------------------------------------------------------


def understand_button(studio: Studio, prefix: str, source: Item | None) -> None:
    """Listen to the source and prefill the caption and lyrics (and empty metadata) from it."""
    if (
        st.button(
            "Understand the source",
            key=form_key(prefix, "planner.understand"),
            icon=":material/hearing:",
            disabled=source is None,
            help="The planner listens to the song and writes a caption, its tempo, key and metre, "
            "and the lyrics it hears. You choose whether to use them.",
        )
        and source is not None
    ):
        _submit(
            studio,
            prefix,
            "understand",
            {"item_id": source.id, "planner_size": _planner_size(studio, prefix)},
        )
    assistant_panel(studio, prefix)


# --- The job and its result --------------------------------------------------------------------


def _submit(studio: Studio, prefix: str, kind: str, payload: dict[str, Any]) -> None:
    job = studio.jobs.submit(kind, payload)
    st.session_state[form_key(prefix, "planner.job")] = job.id


def assistant_panel(studio: Studio, prefix: str) -> None:
    """The running planner job (text as it is written), or its result with "Use it"."""
    state = st.session_state
    job_id = state.get(form_key(prefix, "planner.job"))
    if not job_id:
        return
    job = studio.jobs.get(job_id)
    if job is None:
        state.pop(form_key(prefix, "planner.job"), None)
        return
    label = KINDS.get(job.kind, job.kind)
    if not job.is_finished:

        @st.fragment(run_every=studio.settings.poll_seconds)
        def running() -> None:
            current = studio.jobs.get(job_id)
            if current is None or current.is_finished:
                st.rerun()
                return
            text = current.phase.capitalize() or "Waiting for the planner"
            if current.status == "queued":
                text = "Queued"
            st.progress(current.fraction, text=f"{label} · {text}")
            if current.partial_text:
                st.code(current.partial_text[-1500:], language=None, wrap_lines=True)
            if st.button("Cancel", key=form_key(prefix, "planner.cancel")):
                studio.jobs.cancel(job_id)

        running()
        return
    if job.status == FAILED:
        st.error(f"{label} failed: {job.error}", icon=":material/error:")
    elif job.status == CANCELLED:
        st.info(f"{label} was cancelled.", icon=":material/block:")
    elif job.status == DONE and job.result:
        # Understand describes a source whose length is fixed: it never sets the duration.
        sets_length = job.kind != "understand"
        _result(prefix, label, job.result, sets_length, studio.settings.max_duration)
        return
    st.button("Dismiss", key=form_key(prefix, "planner.dismiss"), on_click=_dismiss, args=(prefix,))


def _result(
    prefix: str, label: str, result: dict[str, Any], sets_length: bool, max_duration: int
) -> None:
    with st.container(border=True):
        st.markdown(f"**{label}**")
        if result.get("caption"):
            st.markdown(f"_{plain(str(result['caption']))}_")
        facts = describe_metadata(result)
        if result.get("genres"):
            facts.append(str(result["genres"]))
        if facts:
            st.caption(plain(" · ".join(facts)))
        if result.get("lyrics"):
            st.text(result["lyrics"][:1200] + ("…" if len(result["lyrics"]) > 1200 else ""))
        use, dismiss = st.columns(2)
        use.button(
            "Use it",
            key=form_key(prefix, "planner.use"),
            type="primary",
            icon=":material/check:",
            on_click=apply_result,
            args=(prefix, result, sets_length, max_duration),
            width="stretch",
        )
        dismiss.button(
            "Dismiss",
            key=form_key(prefix, "planner.dismiss"),
            on_click=_dismiss,
            args=(prefix,),
            width="stretch",
        )


def apply_result(
    prefix: str, result: dict[str, Any], sets_length: bool = True, max_duration: int = 600
) -> None:
    """Fill the form from a planner result (a button callback, so before widgets redraw).

    Caption and lyrics are replaced; tempo, key and metre are filled where the form has none
    (Format keeps the musician's own), the language when it is "unknown", and the length
    when `sets_length`."""
    state = st.session_state
    if result.get("caption"):
        state[form_key(prefix, "caption")] = str(result["caption"])
    if result.get("lyrics"):
        state[form_key(prefix, "lyrics")] = str(result["lyrics"])
    if "instrumental" in result:
        state[form_key(prefix, "instrumental")] = bool(result["instrumental"])
    if result.get("bpm") and not state.get(form_key(prefix, "bpm")):
        state[form_key(prefix, "bpm")] = int(result["bpm"])
    if result.get("key") and not state.get(form_key(prefix, "key")):
        state[form_key(prefix, "key")] = str(result["key"])
    meter = result.get("time_signature")
    if meter and state.get(form_key(prefix, "time_signature"), AUTO) == AUTO:
        state[form_key(prefix, "time_signature")] = int(meter)
    language = result.get("language")
    if language in music.LANGUAGES and state.get(form_key(prefix, "language")) in (None, "unknown"):
        state[form_key(prefix, "language")] = language
    duration = result.get("duration")
    if duration and sets_length:
        # The Generate slider moves in 5 s steps within the Studio's limits.
        state[form_key(prefix, "duration")] = int(
            min(max(round(int(duration) / 5) * 5, 10), max_duration)
        )
    _dismiss(prefix)


def _dismiss(prefix: str) -> None:
    st.session_state.pop(form_key(prefix, "planner.job"), None)
