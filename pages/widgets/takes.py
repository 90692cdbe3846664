"""The take card: player, downloads, metadata, history and actions, for one library take."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from streamlit_advanced_audio import WaveSurferOptions, audix

from core.export import FORMATS, export_audio, export_filename, tags_for
from core.library import Item, history_label
from core.request import SongRequest, to_query
from core.studio import Studio

WAVEFORM = WaveSurferOptions(
    wave_color="#6b7280", progress_color="#a78bfa", height=72, bar_width=2, bar_gap=1
)

# Page that each operation's settings are restored into.
PAGE_FOR_TASK = {
    "generate": ("pages/1_Generate.py", "Generate"),
    "cover": ("pages/2_Cover.py", "Cover"),
    "extend": ("pages/3_Extend.py", "Extend"),
    "edit": ("pages/4_Edit.py", "Edit"),
}


def take_card(
    studio: Studio,
    item: Item,
    *,
    waveform: bool = True,
    allow_delete: bool = False,
    on_new_job: Callable[[object], None] | None = None,
    tools: Callable[[Studio, Item], None] | None = None,
) -> None:
    """One take. `waveform` uses the interactive player; lists use the light one."""
    library = studio.library
    with st.container(border=True):
        head, meta_col = st.columns([3, 2])
        with head:
            take = f" · take {item.take_index + 1}" if item.take_index is not None else ""
            st.markdown(f"**{item.display_title}**{take}")
            chain = library.lineage(item.id)
            if len(chain) > 1:
                st.caption(f"History: {history_label(chain)}")
            loras = item.meta.get("request", {}).get("loras") or []
            if loras:
                stack = ", ".join(f"{lora['name']} × {lora['scale']:g}" for lora in loras)
                st.caption(f":material/layers: LoRA: {stack}")
        with meta_col:
            seed = item.meta.get("seed")
            duration = item.duration or 0.0
            st.caption(
                f"{duration:.1f} s · seed {seed}" if seed is not None else f"{duration:.1f} s"
            )
        preview = library.preview_path(item)
        if waveform:
            _waveform_player(str(preview), f"player-{item.id}")
        else:
            st.audio(str(preview), format="audio/mpeg")
        _downloads(studio, item)
        _actions(studio, item, on_new_job)
        if allow_delete:
            _delete(studio, item)
        if tools is not None:
            tools(studio, item)
        with st.expander("Details"):
            request = item.meta.get("request", {})
            st.caption(request.get("caption", ""))
            if request.get("lyrics"):
                st.text(request["lyrics"])
            st.json(item.meta, expanded=False)


@st.fragment
def _waveform_player(path: str, key: str) -> None:
    """The interactive player. It reports play, pause and seek back to Python, and each
    report reruns the script; inside a fragment that rerun is the player's alone, so the
    rest of the page (a download the musician just clicked, say) is left as it was."""
    audix(path, wavesurfer_options=WAVEFORM, key=key)


def _downloads(studio: Studio, item: Item) -> None:
    """WAV and FLAC masters, tagged and named like every export (title, date, take)."""
    tags = tags_for(item)
    for column, fmt, label in zip(st.columns(2), ("wav24", "flac"), ("WAV", "FLAC"), strict=True):

        def encoded(fmt: str = fmt) -> bytes:
            return export_audio(studio.library.read_audio(item.id).samples, fmt, tags)

        with column:
            st.download_button(
                label,
                data=encoded,
                file_name=export_filename(tags, fmt),
                mime=FORMATS[fmt].mime,
                on_click="ignore",
                key=f"{fmt}-{item.id}",
                icon=":material/download:",
                width="stretch",
            )


def _actions(studio: Studio, item: Item, on_new_job: Callable[[object], None] | None) -> None:
    request_data = item.meta.get("request")
    retake_col, open_col = st.columns(2)
    if request_data and on_new_job is not None:
        with retake_col:
            if st.button(
                "Retake",
                key=f"retake-{item.id}",
                icon=":material/casino:",
                width="stretch",
                help="Same settings, new seed.",
            ):
                on_new_job(studio.retake(item.id))
    if request_data:
        request = SongRequest.from_dict(request_data)
        page, page_name = PAGE_FOR_TASK.get(request.task, PAGE_FOR_TASK["generate"])
        with open_col:
            if st.button(
                f"Open in {page_name}",
                key=f"open-{item.id}",
                icon=":material/tune:",
                width="stretch",
                help="Restore this take's settings, seed included.",
            ):
                st.switch_page(page, query_params=to_query(request))


def _delete(studio: Studio, item: Item) -> None:
    confirm_key = f"confirm-delete-{item.id}"
    if not st.session_state.get(confirm_key):
        if st.button("Delete", key=f"delete-{item.id}", icon=":material/delete:"):
            st.session_state[confirm_key] = True
            st.rerun()
        return
    st.warning("Delete this take and its stems for good?")
    yes, no = st.columns(2)
    if yes.button("Delete for good", key=f"delete-yes-{item.id}", type="primary"):
        studio.library.delete(item.id)
        st.session_state.pop(confirm_key, None)
        st.toast("Take deleted.")
        st.rerun()
    if no.button("Keep it", key=f"delete-no-{item.id}"):
        st.session_state.pop(confirm_key, None)
        st.rerun()
