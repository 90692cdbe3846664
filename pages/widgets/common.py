"""Page set-up shared by every page: config, the Studio handle and the sidebar status."""

from __future__ import annotations

import streamlit as st

from core.models import READY
from core.resources import get_studio
from core.settings import SettingsError
from core.studio import Studio


def page_setup(title: str, icon: str) -> Studio:
    """Configure the page and return the shared Studio, or explain why it cannot start."""
    st.set_page_config(page_title=f"{title} · ACE Music Studio", page_icon=icon, layout="wide")
    try:
        studio = get_studio()
    except SettingsError as error:
        st.error(f"The Studio's settings are not valid: {error}")
        st.stop()
    sidebar_status(studio)
    return studio


def sidebar_status(studio: Studio) -> None:
    with st.sidebar:
        dit = studio.dit.status()
        state = "ready" if dit.state == READY else dit.state
        st.caption(f"{studio.device_info().label} · DiT {state}")
        active = studio.jobs.active()
        if active:
            st.caption(f"{len(active)} job{'s' if len(active) != 1 else ''} in the queue")


def show_problems(problems: list[str]) -> None:
    for message in problems:
        st.error(message, icon=":material/error:")
