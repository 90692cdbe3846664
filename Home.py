"""Home: is the Studio ready (device, models), and the song library, newest first."""

from __future__ import annotations

import streamlit as st

from core.models import DOWNLOADING, FAILED, LOADING, READY
from pages.widgets.common import page_setup
from pages.widgets.finishing import finishing_tools
from pages.widgets.jobs import format_seconds
from pages.widgets.takes import take_card

PAGE_SIZE = 10

studio = page_setup("Home", "🎛️")
st.title("ACE Music Studio")
st.caption("Write and produce songs with ACE-Step 1.5 on your own hardware.")


def _bytes(count: int | None) -> str:
    return "?" if count is None else f"{count / 1e9:.1f} GB"


@st.fragment(run_every=2.0)
def readiness() -> None:
    device = studio.device_info()
    columns = st.columns(len(studio.model_slots()) + 1)
    with columns[0], st.container(border=True):
        st.markdown(f"**Device** · {device.label}")
        st.caption(device.name or "")
        if device.total_bytes:
            st.caption(f"{_bytes(device.free_bytes)} free of {_bytes(device.total_bytes)}")
    for column, status in zip(columns[1:], studio.model_statuses(), strict=True):
        with column, st.container(border=True):
            icon = {READY: "🟢", FAILED: "🔴", DOWNLOADING: "🟡", LOADING: "🟡"}.get(
                status.state, "⚪"
            )
            st.markdown(f"**{status.label}** · {icon} {status.state}")
            st.caption(status.source)
            if status.state == READY and status.device:
                st.caption(f"on the {'GPU' if status.device in ('cuda', 'mps') else 'CPU'}")
            if status.state == DOWNLOADING and status.total_bytes:
                st.progress(
                    status.fraction or 0.0,
                    text=f"{status.fraction or 0.0:.0%} · {_bytes(status.downloaded_bytes)} of "
                    f"{_bytes(status.total_bytes)}",
                )
            if status.state == FAILED:
                st.error(status.message, icon=":material/error:")
            if status.state not in (READY, DOWNLOADING, LOADING) and st.button(
                "Load now", key=f"load-{status.key}", icon=":material/download:"
            ):
                studio.jobs.submit("load", {"model": status.key})
                st.toast(f"Queued loading of the {status.label}.")
    moves = list(studio.residency.events)[-3:]
    for message in reversed(moves):
        st.caption(f":material/swap_horiz: {message}")
    active = studio.jobs.active()
    if active:
        running = [job for job in active if job.status == "running"]
        text = f"{len(active)} job{'s' if len(active) > 1 else ''} in the queue"
        if running:
            text += f" · running for {format_seconds(running[0].elapsed)}"
        st.caption(text)


st.subheader("Studio")
readiness()

st.subheader("Library")
query = st.text_input("Search", placeholder="caption or title", label_visibility="collapsed")
limit = st.session_state.setdefault("home.limit", PAGE_SIZE)
takes = studio.library.search(query, kinds=("take",), limit=limit + 1)
if not takes:
    st.info(
        "No songs yet. Head to **Generate** to make your first one.",
        icon=":material/library_music:",
    )
for item in takes[:limit]:
    take_card(studio, item, waveform=False, allow_delete=True, tools=finishing_tools)
if len(takes) > limit and st.button("Show more", icon=":material/expand_more:"):
    st.session_state["home.limit"] = limit + PAGE_SIZE
    st.rerun()
