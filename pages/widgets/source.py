"""The song a page starts from: upload a file or pick a take, see its waveform, choose a region.

The chosen item's id lives in `st.session_state["<page>.source_id"]` (or `.reference_id`),
where the song form reads it into the request and mirrors it in the URL.

The region is drawn on the waveform (streamlit-advanced-audio: ✂ adds a region, ✓ sends
it) and mirrored in two number fields; either one edits the other. The player only reports
a region when ✓ is pressed, and it draws regions only when it mounts, so the waveform is
keyed by a region version that changes whenever the region does: it then mounts again with
the region drawn. The waveform never sits in a polling fragment: it embeds the whole file.
"""

from __future__ import annotations

import streamlit as st
from streamlit_advanced_audio import CustomizedRegion, RegionColorOptions, WaveSurferOptions, audix

from core import audio as audio_io
from core.library import Item
from core.request import EDIT_REGION_RANGE
from core.sources import (
    clock,
    describe_source,
    snap_to_bars,
    source_choices,
    source_request,
    store_upload,
)
from core.studio import Studio

from .song_form import form_key

UPLOAD, LIBRARY = "Upload a file", "From the library"
WAVEFORM = WaveSurferOptions(
    wave_color="#6b7280", progress_color="#a78bfa", height=96, bar_width=2, bar_gap=1
)
REGION_COLOR = "rgba(167, 139, 250, 0.35)"
REGION_COLORS = RegionColorOptions(interactive_region_color="rgba(250, 204, 21, 0.35)")
# What a page copies from a picked take into empty fields, so an edit keeps the song's words.
CARRIED_TEXT = ("caption", "lyrics")


# --- picking -----------------------------------------------------------------------------


def source_picker(
    studio: Studio,
    prefix: str,
    *,
    target: str = "source_id",
    label: str = "Song",
    carry: tuple[str, ...] = CARRIED_TEXT,
) -> Item | None:
    """Upload or pick a song; returns the chosen library item (or None).

    `carry` names the request fields copied from a picked source take into the page's
    empty fields (caption, lyrics; tempo, key and metre always come along when empty). A
    reference (`target="reference_id"`) lends only its sound, so nothing is copied from it.
    """
    state = st.session_state
    target_key = form_key(prefix, target)
    mode_key = form_key(prefix, f"{target}.mode")
    if mode_key not in state:
        state[mode_key] = LIBRARY if state.get(target_key) else UPLOAD
    mode = st.radio(label, (UPLOAD, LIBRARY), key=mode_key, horizontal=True)
    if mode == UPLOAD:
        _upload(studio, prefix, target)
    else:
        _library_pick(studio, prefix, target)
    item = _current(studio, state.get(target_key))
    if state.get(target_key) and item is None:
        st.warning("That song is no longer in the library; pick another one.")
        state[target_key] = None
    seen_key = form_key(prefix, f"{target}.seen")
    # A new source, or a page entered afresh (its widget values are gone), takes the
    # source's own settings into its empty fields.
    entering = form_key(prefix, "caption") not in state
    if item is not None and (state.get(seen_key) != item.id or entering):
        state[seen_key] = item.id
        if target == "source_id":
            _carry_settings(prefix, item, carry)
    return item


def _upload(studio: Studio, prefix: str, target: str) -> None:
    state = st.session_state
    formats = ", ".join(fmt.upper() for fmt in audio_io.accepted_formats())
    limit_minutes = studio.settings.max_duration / 60
    uploaded = st.file_uploader(
        "Audio file",
        key=form_key(prefix, f"{target}.upload"),
        max_upload_size=studio.settings.max_upload_mb,
        help=f"{formats}; up to {studio.settings.max_upload_mb} MB, 1 second to "
        f"{limit_minutes:g} minutes. It is kept in the library as an upload.",
    )
    st.caption(
        f"{formats} · up to {studio.settings.max_upload_mb} MB · 1 s to {limit_minutes:g} min"
    )
    if uploaded is None:
        return
    handled_key = form_key(prefix, f"{target}.upload_handled")
    handled = state.get(handled_key)
    if handled is None or handled[0] != uploaded.file_id:
        try:
            with st.spinner(f"Reading {uploaded.name}…"):
                item = store_upload(
                    studio.library, studio.settings, uploaded.getvalue(), uploaded.name
                )
            handled = (uploaded.file_id, item.id, None)
        except audio_io.AudioError as error:
            handled = (uploaded.file_id, None, str(error))
        state[handled_key] = handled
        # A refused file leaves no source behind, so nothing can be queued from it.
        state[form_key(prefix, target)] = handled[1]
    if handled[2]:
        st.error(handled[2], icon=":material/error:")


def _library_pick(studio: Studio, prefix: str, target: str) -> None:
    state = st.session_state
    choices = {item.id: item for item in source_choices(studio.library)}
    current = state.get(form_key(prefix, target))
    if current and current not in choices:
        item = _current(studio, current)
        if item is not None:
            choices = {item.id: item, **choices}
    pick_key = form_key(prefix, f"{target}.pick")
    if current in choices:
        state[pick_key] = current
    if not choices:
        st.info("The library is empty: upload a file, or make a song on Generate first.")
        return

    def picked() -> None:
        state[form_key(prefix, target)] = state.get(pick_key)

    st.selectbox(
        "Take or upload",
        list(choices),
        format_func=lambda item_id: describe_source(choices[item_id]),
        index=None,
        placeholder="Choose a song from the library",
        key=pick_key,
        on_change=picked,
        label_visibility="collapsed",
    )


def _current(studio: Studio, item_id: str | None) -> Item | None:
    if not item_id:
        return None
    item = studio.library.find(item_id)
    return item if item is not None and item.audio_file is not None else None


def _carry_settings(prefix: str, item: Item, carry: tuple[str, ...]) -> None:
    """Fill the page's empty fields from the take's own settings (never overwrite)."""
    request = source_request(item)
    if request is None:
        return
    state = st.session_state
    for name in carry:
        value = getattr(request, name)
        if value and not str(state.get(form_key(prefix, name), "")).strip():
            state[form_key(prefix, name)] = value
    if request.bpm and not state.get(form_key(prefix, "bpm")):
        state[form_key(prefix, "bpm")] = request.bpm
    if request.key and not state.get(form_key(prefix, "key")):
        state[form_key(prefix, "key")] = request.key
    if request.time_signature and state.get(form_key(prefix, "time_signature")) in (None, "Auto"):
        state[form_key(prefix, "time_signature")] = request.time_signature
    if request.instrumental and not state.get(form_key(prefix, "lyrics")):
        state[form_key(prefix, "instrumental")] = True


# --- listening ---------------------------------------------------------------------------


def source_header(item: Item) -> None:
    st.caption(f"**{item.display_title}** · {item.kind} · {clock(item.duration or 0.0)}")


def waveform(studio: Studio, prefix: str, item: Item) -> None:
    """The source's waveform and player, without regions."""
    source_header(item)
    audix(
        str(studio.library.preview_path(item)),
        wavesurfer_options=WAVEFORM,
        key=form_key(prefix, f"wave.{item.id}"),
    )


# --- the region --------------------------------------------------------------------------


def region_editor(studio: Studio, prefix: str, item: Item) -> tuple[float, float] | None:
    """Waveform with the region, mirrored in start/end fields; returns the region if set."""
    state = st.session_state
    seconds = float(item.duration or 0.0)
    start_key, end_key = form_key(prefix, "region_start"), form_key(prefix, "region_end")
    version_key = form_key(prefix, "region_version")
    bpm, beats = _tempo(prefix)
    snap_key = form_key(prefix, "snap_to_bars")
    snapping = bool(state.get(snap_key)) and bpm is not None

    source_header(item)
    wave_key = form_key(prefix, f"wave.{item.id}.{state.get(version_key, 0)}")
    # Tests (and curious readers) find the live waveform's key here.
    state[form_key(prefix, "waveform_key")] = wave_key
    region = _region(state.get(start_key), state.get(end_key))
    value = audix(
        str(studio.library.preview_path(item)),
        wavesurfer_options=WAVEFORM,
        region_color_options=REGION_COLORS,
        customized_regions=[CustomizedRegion(*region, color=REGION_COLOR)] if region else [],
        key=wave_key,
    )
    selected = (value or {}).get("selectedRegion")
    applied_key = form_key(prefix, "region_applied")
    if selected and state.get(applied_key) != (wave_key, selected):
        state[applied_key] = (wave_key, selected)
        start, end = float(selected["start"]), min(float(selected["end"]), seconds)
        if snapping:
            start, end = snap_to_bars(start, end, bpm, beats, seconds)
        state[start_key], state[end_key] = round(start, 2), round(end, 2)
        _redraw(prefix)
        st.rerun()

    st.caption(
        "Drag a region on the waveform: ✂ adds one, drag or stretch it, then press ✓. "
        "Or type the start and end."
    )
    start_col, end_col, snap_col = st.columns([2, 2, 3], vertical_alignment="bottom")
    with start_col:
        st.number_input(
            "Start (s)",
            min_value=0.0,
            value=None,
            step=0.1,
            format="%.2f",
            key=start_key,
            on_change=_fields_changed,
            args=(prefix, seconds),
        )
    with end_col:
        st.number_input(
            "End (s)",
            min_value=0.0,
            value=None,
            step=0.1,
            format="%.2f",
            key=end_key,
            on_change=_fields_changed,
            args=(prefix, seconds),
        )
    with snap_col:
        st.checkbox(
            "Snap to bars",
            key=snap_key,
            disabled=bpm is None,
            on_change=_fields_changed,
            args=(prefix, seconds),
            help=f"Move the edges to the nearest bar line ({bpm:g} BPM, {beats}/4)."
            if bpm
            else "Set the BPM under Music metadata to snap the region to bars.",
        )
    region = _region(state.get(start_key), state.get(end_key))
    if region is None:
        return None
    low, high = EDIT_REGION_RANGE
    length = region[1] - region[0]
    note = f"Region {clock(region[0])} – {clock(region[1])} · {length:.1f} s"
    if region[1] > seconds + 0.05:
        st.warning(f"{note}: it ends after the song ({clock(seconds)}).")
    elif not low <= length <= high:
        st.warning(f"{note}: a region must be {low:g}–{high:g} seconds long.")
    else:
        st.caption(note)
    return region


def _fields_changed(prefix: str, seconds: float) -> None:
    state = st.session_state
    start_key, end_key = form_key(prefix, "region_start"), form_key(prefix, "region_end")
    bpm, beats = _tempo(prefix)
    region = _region(state.get(start_key), state.get(end_key))
    if region and bpm is not None and state.get(form_key(prefix, "snap_to_bars")):
        state[start_key], state[end_key] = snap_to_bars(*region, bpm, beats, seconds)
    _redraw(prefix)


def _redraw(prefix: str) -> None:
    version_key = form_key(prefix, "region_version")
    st.session_state[version_key] = st.session_state.get(version_key, 0) + 1


def _region(start: float | None, end: float | None) -> tuple[float, float] | None:
    if start is None or end is None or end <= start:
        return None
    return float(start), float(end)


def _tempo(prefix: str) -> tuple[float | None, int]:
    state = st.session_state
    bpm = state.get(form_key(prefix, "bpm"))
    signature = state.get(form_key(prefix, "time_signature"))
    beats = signature if isinstance(signature, int) else 4
    return (float(bpm) if bpm else None), beats
