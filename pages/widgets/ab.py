"""Under a take made from another song: A/B against that song at matched loudness, the
extension on its own, and the next step (edit, extend or cover this take).

The A/B plays loudness-matched previews (core.sources.ab_pair), so the louder version does
not win by default. It is drawn in the ordinary script run, never in a polling fragment.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from streamlit_advanced_audio import CustomizedRegion, WaveSurferOptions, audix

from core import audio as audio_io
from core.export import export_filename, tags_for
from core.library import Item
from core.sources import ab_pair
from core.studio import Studio
from core.tasks import extension_only

from .takes import PAGE_FOR_TASK

SOURCE, RESULT = "A · original", "B · new take"
PLAYER = WaveSurferOptions(
    wave_color="#6b7280", progress_color="#a78bfa", height=56, bar_width=2, bar_gap=1
)
CHANGED_COLOR = "rgba(167, 139, 250, 0.30)"
NEXT_STEPS = (
    ("edit", "Edit this", ":material/content_cut:"),
    ("extend", "Extend this", ":material/arrow_range:"),
    ("cover", "Cover this", ":material/swap_horiz:"),
)


def ab_switch(studio: Studio, item: Item) -> None:
    """Switch between the take and the song it came from, at one loudness."""
    source = studio.library.find(item.parent_id) if item.parent_id else None
    if source is None or source.audio_file is None:
        return
    with st.spinner("Matching loudness…"):
        pair = ab_pair(studio.library, studio.settings.data_dir / "cache", source.id, item.id)
    choice = st.segmented_control(
        "A/B",
        (SOURCE, RESULT),
        default=RESULT,
        required=True,
        key=f"ab.{item.id}",
        help="Both play at the same loudness (LUFS), so you compare the music, not the level.",
    )
    playing_source = choice == SOURCE
    path = pair.source_path if playing_source else pair.result_path
    audix(
        str(path),
        wavesurfer_options=PLAYER,
        customized_regions=_changed(item, playing_source),
        key=f"ab.{item.id}.{'a' if playing_source else 'b'}",
    )
    st.caption(pair.describe())


def _changed(item: Item, playing_source: bool) -> list[CustomizedRegion]:
    """The part of the song the operation changed, shaded on the player."""
    region = item.meta.get("region")
    if region:
        return [CustomizedRegion(region["start_seconds"], region["end_seconds"], CHANGED_COLOR)]
    extension = item.meta.get("extension")
    if extension and not playing_source:
        return [
            CustomizedRegion(extension["start_seconds"], extension["end_seconds"], CHANGED_COLOR)
        ]
    return []


def extension_download(studio: Studio, item: Item) -> None:
    if not item.meta.get("extension"):
        return

    def wav() -> bytes:
        samples = studio.library.read_audio(item.id).samples
        return audio_io.encode(extension_only(samples, item.meta), "wav", "PCM_24")

    seconds = item.meta["extension"]["seconds"]
    st.download_button(
        f"Extension only · {seconds:g} s (WAV)",
        data=wav,
        file_name=export_filename(tags_for(item), "wav24").removesuffix(".wav")
        + " - extension.wav",
        mime="audio/wav",
        on_click="ignore",
        key=f"extension-{item.id}",
        icon=":material/download:",
        width="stretch",
    )


def next_steps(item: Item) -> None:
    """Links that start another operation on this take, with the take as the source."""
    with st.container(horizontal=True, gap="small"):
        for task, label, icon in NEXT_STEPS:
            page, _ = PAGE_FOR_TASK[task]
            st.page_link(page, label=label, icon=icon, query_params={"source_id": item.id})


def derived_take_tools(
    extra: Callable[[Studio, Item], None] | None = None,
) -> Callable[[Studio, Item], None]:
    """The take card's tools on Cover, Extend and Edit; `extra` follows (e.g. finishing)."""

    def tools(studio: Studio, item: Item) -> None:
        ab_switch(studio, item)
        extension_download(studio, item)
        next_steps(item)
        if extra is not None:
            extra(studio, item)

    return tools
