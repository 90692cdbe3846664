"""Finishing tools under a take: loudness to a release target, a tagged export, and stems.

Everything sits in one lazy expander per take, so a page of takes measures nothing until
the musician opens one. Players are drawn in the ordinary script run; only the stems job's
status polls, in its own fragment, which reruns the page once when the stems are ready.
"""

from __future__ import annotations

import math
from dataclasses import replace

import streamlit as st

from core import audio as audio_io
from core import export, loudness
from core.export import FORMATS, SAMPLE_RATES, SongTags
from core.jobs import CANCELLED, FAILED, QUEUED, RUNNING, Job, StudioError
from core.library import Item
from core.loudness import PRESETS, LoudnessError, Normalised
from core.stems import STEM_LABELS, STEMS, stems_of, submit_stems
from core.studio import Studio

LOUDNESS_ORDER = ("streaming", "apple", "broadcast", "club", "off")
DEFAULT_FORMAT = "wav24"


def finishing_tools(studio: Studio, item: Item) -> None:
    """The "Finish" expander of one take: master (loudness + export) and stems."""
    if item.audio_file is None or item.kind == "stem":
        return
    with st.expander(
        "Finish · loudness, export, stems",
        icon=":material/equalizer:",
        key=f"finish-{item.id}",
        on_change="rerun",
    ) as panel:
        if not panel.open:
            return
        fmt, rate = _master(studio, item)
        st.divider()
        _stems(studio, item, fmt, rate)


# --- master: loudness and export -------------------------------------------------------------


def _master(studio: Studio, item: Item) -> tuple[str, int]:
    key = f"finish.{item.id}"
    preset_col, format_col, rate_col = st.columns([3, 2, 2])
    with preset_col:
        preset = st.selectbox(
            "Loudness",
            LOUDNESS_ORDER,
            format_func=lambda k: PRESETS[k].caption,
            key=f"{key}.loudness",
            help="Integrated loudness for the release, with true peaks held under −1 dBTP by a "
            "look-ahead limiter. Off keeps the take as generated (peaks at −1 dBFS).",
        )
    with format_col:
        fmt = st.selectbox(
            "Format",
            tuple(FORMATS),
            index=tuple(FORMATS).index(DEFAULT_FORMAT),
            format_func=lambda k: FORMATS[k].label,
            key=f"{key}.format",
        )
    with rate_col:
        rate = st.selectbox(
            "Sample rate",
            SAMPLE_RATES,
            format_func=lambda r: f"{r / 1000:g} kHz",
            key=f"{key}.rate",
        )
    try:
        with st.spinner("Measuring loudness…"):
            master = _normalised(studio, item.id, preset)
    except LoudnessError as error:
        st.warning(f"{error} The export keeps the take's own level.", icon=":material/volume_off:")
        master = None
    if master is not None:
        _figures(master)
    tags = export.tags_for(item)

    def export_bytes() -> bytes:
        samples = master.samples if master is not None else _samples(studio, item.id)
        return export.export_audio(samples, fmt, tags, rate)

    st.download_button(
        f"Download {FORMATS[fmt].label}",
        data=export_bytes,
        file_name=export.export_filename(tags, fmt),
        mime=FORMATS[fmt].mime,
        on_click="ignore",
        key=f"{key}.download",
        icon=":material/download:",
        type="primary",
        help="Tagged with the title, lyrics, caption, seed, models and LoRAs (MP3 and FLAC).",
    )
    st.caption(_tag_line(tags))
    if master is not None and master.target_lufs is not None:
        _ab(studio, item, preset)
    return fmt, rate


def _tag_line(tags: SongTags) -> str:
    """What the exported file says about the song, in one line."""
    parts = [f"“{tags.title}”"]
    if tags.seed is not None:
        parts.append(f"seed {tags.seed}")
    parts.extend(tags.models)
    if tags.loras:
        parts.append(
            "LoRAs: "
            + ", ".join(
                f"{lora.get('name')} @ {float(lora.get('scale', 1.0)):g}" for lora in tags.loras
            )
        )
    if tags.lyrics:
        parts.append("lyrics")
    return "Tagged with " + " · ".join(parts)


def _figures(master: Normalised) -> None:
    before, after = master.before, master.after
    loud_col, peak_col = st.columns(2)
    loud_col.metric(
        "Integrated loudness",
        f"{_db(after.integrated_lufs)} LUFS",
        delta=f"{master.gain_db:+.1f} dB from {_db(before.integrated_lufs)} LUFS"
        if master.target_lufs is not None
        else None,
        delta_color="off",
    )
    peak_col.metric(
        "True peak",
        f"{_db(after.true_peak_dbtp)} dBTP",
        delta=f"from {_db(before.true_peak_dbtp)} dBTP" if master.target_lufs is not None else None,
        delta_color="off",
    )
    if master.limited:
        st.caption(
            f"The limiter held the true peak under {master.ceiling_dbtp:g} dBTP; nothing clips."
        )


def _ab(studio: Studio, item: Item, preset: str) -> None:
    if not st.toggle(
        "A/B at matched loudness",
        key=f"finish.{item.id}.ab",
        help="Both versions play at the same loudness, so you hear the limiter, not the level.",
    ):
        return
    original, finished = _matched_previews(studio, item.id, preset)
    a, b = st.columns(2)
    with a:
        st.caption("A · as generated")
        st.audio(original, format="audio/mpeg")
    with b:
        st.caption(f"B · {PRESETS[preset].caption}")
        st.audio(finished, format="audio/mpeg")


# --- stems -----------------------------------------------------------------------------------


def _stems(studio: Studio, item: Item, fmt: str, rate: int) -> None:
    st.markdown("**Stems**")
    found = stems_of(studio, item.id)
    if len(found) == len(STEMS):
        _stem_players(studio, item, found, fmt, rate)
        return
    job = _stems_job(studio, item.id)
    if job is not None and not job.is_finished:
        _stems_status(studio, job.id)
        return
    if job is not None and job.status == FAILED:
        st.error(job.error or "The separation failed.", icon=":material/error:")
    elif job is not None and job.status == CANCELLED:
        st.caption("Separation cancelled.")
    st.caption("Split the take into vocals, drums, bass and other with HT-Demucs.")
    if st.button(
        "Separate stems",
        key=f"finish.{item.id}.separate",
        icon=":material/call_split:",
    ):
        try:
            new = submit_stems(studio, item.id)
        except StudioError as error:
            st.error(str(error), icon=":material/error:")
            return
        st.session_state[_job_key(item.id)] = new.id
        st.rerun()


def _stem_players(studio: Studio, item: Item, found: dict[str, Item], fmt: str, rate: int) -> None:
    song_tags = export.tags_for(item)
    files: dict[str, tuple[SongTags, Item]] = {}
    for name, stem in found.items():
        tags = export.tags_for(stem, song=item)
        files[name] = (tags, stem)
        label_col, player_col, download_col = st.columns([1, 4, 2], vertical_alignment="center")
        label_col.markdown(f"**{STEM_LABELS[name]}**")
        with player_col:
            st.audio(str(studio.library.preview_path(stem)), format="audio/mpeg")
        with download_col:
            st.download_button(
                FORMATS[fmt].label,
                data=_stem_export(studio, stem.id, fmt, tags, rate),
                file_name=export.export_filename(tags, fmt),
                mime=FORMATS[fmt].mime,
                on_click="ignore",
                key=f"finish.{item.id}.stem.{name}",
                icon=":material/download:",
                width="stretch",
            )

    def zip_bytes() -> bytes:
        return export.zip_files(
            {
                export.export_filename(tags, fmt): export.export_audio(
                    _samples(studio, stem.id), fmt, tags, rate
                )
                for tags, stem in files.values()
            }
        )

    zip_name = export.export_filename(replace(song_tags, stem="stems"), fmt)
    st.download_button(
        "Download all stems (zip)",
        data=zip_bytes,
        file_name=zip_name.rsplit(".", 1)[0] + ".zip",
        mime="application/zip",
        on_click="ignore",
        key=f"finish.{item.id}.stems-zip",
        icon=":material/folder_zip:",
    )
    st.caption("Stems keep their own levels, so together they add back up to the take.")


def _stem_export(studio: Studio, stem_id: str, fmt: str, tags: SongTags, rate: int):
    def build() -> bytes:
        return export.export_audio(_samples(studio, stem_id), fmt, tags, rate)

    return build


def _job_key(item_id: str) -> str:
    return f"finish.{item_id}.stems_job"


def _stems_job(studio: Studio, item_id: str) -> Job | None:
    """This take's latest stems job: the session's, or one still queued or running."""
    job_id = st.session_state.get(_job_key(item_id))
    if job_id:
        job = studio.jobs.get(job_id)
        if job is not None:
            return job
    for job in studio.jobs.active():
        if job.kind == "stems" and job.payload.get("item_id") == item_id:
            st.session_state[_job_key(item_id)] = job.id
            return job
    return None


def _stems_status(studio: Studio, job_id: str) -> None:
    @st.fragment(run_every=studio.settings.poll_seconds)
    def status() -> None:
        job = studio.jobs.get(job_id)
        if job is None or job.is_finished:
            # One full rerun stops the timer and draws the players outside this fragment.
            st.rerun()
            return
        if job.status == QUEUED:
            ahead = (job.position or 1) - 1
            st.info(
                "Separation queued · " + ("next in line" if ahead == 0 else f"{ahead} ahead"),
                icon=":material/schedule:",
            )
        elif job.status == RUNNING:
            text = (job.phase or "starting").capitalize()
            if job.total_steps and job.phase == "separating":
                text += f" · {job.fraction:.0%}"
            st.progress(job.fraction, text=text)
        if job.cancel_requested:
            st.caption("Cancelling…")
        elif st.button("Cancel", key=f"cancel-stems-{job.id}", icon=":material/stop_circle:"):
            studio.jobs.cancel(job.id)
            st.rerun(scope="fragment")

    status()


# --- cached work -----------------------------------------------------------------------------


def _samples(studio: Studio, item_id: str):
    return studio.library.read_audio(item_id).samples


@st.cache_resource(max_entries=6, ttl=1800, show_spinner=False)
def _normalised(_studio: Studio, item_id: str, preset: str) -> Normalised:
    # Library audio never changes under an id, so the id is a safe key.
    return loudness.normalise_to_preset(_samples(_studio, item_id), preset)


@st.cache_resource(max_entries=4, ttl=1800, show_spinner=False)
def _matched_previews(_studio: Studio, item_id: str, preset: str) -> tuple[bytes, bytes]:
    master = _normalised(_studio, item_id, preset)
    original, finished = loudness.match_loudness(_samples(_studio, item_id), master.samples)
    return audio_io.mp3_bytes(original), audio_io.mp3_bytes(finished)


def _db(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "−∞"
