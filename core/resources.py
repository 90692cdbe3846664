"""The one module in `core/` that imports Streamlit: the process-wide cached Studio.

`st.cache_resource` runs `get_studio` once per process even when several sessions ask at
the same moment, so every browser tab shares one worker, one set of models and one library.
"""

from __future__ import annotations

import atexit

import streamlit as st

from core.settings import Settings
from core.studio import Studio


@st.cache_resource(show_spinner="Starting the Studio…")
def get_studio() -> Studio:
    studio = Studio(Settings.from_env()).start()
    atexit.register(studio.stop)
    return studio
