"""Songs that Cover, Extend and Edit start from: uploads, library picks, regions and A/B.

An upload becomes a library item of kind "upload" (a 48 kHz stereo FLAC master like any
take), so a take made from it links back to it and the history reads "upload → edit …".
The same file uploaded twice is stored once: Streamlit hands the page the same upload on
every rerun, and a musician often drops the same song again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import audio as audio_io
from core import loudness
from core.library import Item, Library
from core.request import SongRequest
from core.settings import Settings

SOURCE_KINDS = ("take", "upload")
MAX_LISTED_SOURCES = 200
AB_FOLDER = "ab"


# --- uploads -----------------------------------------------------------------------------


def store_upload(library: Library, settings: Settings, data: bytes, filename: str) -> Item:
    """Decode and check an uploaded file, then keep it in the library (once per content).

    Raises `audio.AudioError` naming the problem: too large, unknown format, corrupt, empty,
    silent, shorter than 1 s or longer than the Studio's longest song.
    """
    limit_mb = settings.max_upload_mb
    if len(data) > limit_mb * 1024 * 1024:
        raise audio_io.AudioError(
            f"{filename} is {len(data) / 1024 / 1024:.0f} MB; the upload limit is {limit_mb} MB."
        )
    digest = hashlib.sha256(data).hexdigest()
    existing = find_upload(library, digest)
    if existing is not None:
        return existing
    decoded = audio_io.decode(data, filename, max_seconds=float(settings.max_duration))
    title = Path(filename).stem or "upload"
    return library.add(
        "upload",
        {"filename": filename, "sha256": digest, "bytes": len(data)},
        samples=decoded.samples,
        title=title,
    )


def find_upload(library: Library, digest: str) -> Item | None:
    for item in library.list(("upload",), limit=MAX_LISTED_SOURCES):
        if item.meta.get("sha256") == digest:
            return item
    return None


def source_choices(library: Library, limit: int = MAX_LISTED_SOURCES) -> list[Item]:
    """Takes and uploads that hold audio, newest first: what a page can start from."""
    return [item for item in library.list(SOURCE_KINDS, limit=limit) if item.audio_file]


def describe_source(item: Item) -> str:
    """One line for a picker: title, kind and length."""
    kind = "upload" if item.kind == "upload" else "take"
    take = f" · take {item.take_index + 1}" if item.take_index is not None else ""
    length = clock(item.duration or 0.0)
    return f"{item.display_title}{take} · {kind} · {length}"


def source_request(item: Item) -> SongRequest | None:
    """The settings a take was made with, so a page can start from its caption and lyrics."""
    data = item.meta.get("request")
    return SongRequest.from_dict(data) if isinstance(data, dict) else None


def clock(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{secs:04.1f}"


# --- regions -----------------------------------------------------------------------------


def bar_seconds(bpm: float, beats_per_bar: int = 4) -> float:
    return beats_per_bar * 60.0 / bpm


def snap_to_bars(
    start: float, end: float, bpm: float, beats_per_bar: int, song_seconds: float
) -> tuple[float, float]:
    """Move a region's edges to the nearest bar lines (bar 1 starts at 0:00).

    The region keeps at least one bar and stays inside the song; an edge at the song's end
    stays there, because the last bar is rarely complete.
    """
    bar = bar_seconds(bpm, beats_per_bar)
    snapped_start = round(start / bar) * bar
    snapped_end = song_seconds if end >= song_seconds else round(end / bar) * bar
    if snapped_end - snapped_start < bar:
        snapped_end = snapped_start + bar
    snapped_end = min(snapped_end, song_seconds)
    snapped_start = max(0.0, min(snapped_start, snapped_end - bar))
    return round(snapped_start, 3), round(snapped_end, 3)


# --- A/B at matched loudness -------------------------------------------------------------


@dataclass(frozen=True)
class ABPair:
    """Source and result previews at one loudness, so the louder one does not win."""

    source_path: Path
    result_path: Path
    source_lufs: float
    result_lufs: float

    @property
    def matched_lufs(self) -> float:
        return min(self.source_lufs, self.result_lufs)

    def describe(self) -> str:
        if not (math.isfinite(self.source_lufs) and math.isfinite(self.result_lufs)):
            return "Played as they are: one of them is too quiet to measure."
        return (
            f"Both played at {self.matched_lufs:.1f} LUFS (source {self.source_lufs:.1f}, "
            f"result {self.result_lufs:.1f} LUFS)."
        )


def ab_pair(library: Library, cache_dir: Path, source_id: str, result_id: str) -> ABPair:
    """Loudness-matched MP3 previews of a source and a take made from it, made once."""
    folder = cache_dir / AB_FOLDER
    source_path = folder / f"{result_id}-source.mp3"
    result_path = folder / f"{result_id}-result.mp3"
    levels_path = folder / f"{result_id}-levels.json"
    if not (source_path.exists() and result_path.exists() and levels_path.exists()):
        source = library.read_audio(source_id).samples
        result = library.read_audio(result_id).samples
        levels = {"source_lufs": _lufs(source), "result_lufs": _lufs(result)}
        matched_source, matched_result = loudness.match_loudness(source, result)
        audio_io.write_atomic(source_path, audio_io.mp3_bytes(matched_source))
        audio_io.write_atomic(result_path, audio_io.mp3_bytes(matched_result))
        # JSON has no infinity: an unmeasurable (silent) signal is stored as null.
        stored = {k: (v if math.isfinite(v) else None) for k, v in levels.items()}
        audio_io.write_atomic(levels_path, json.dumps(stored).encode())
    stored = json.loads(levels_path.read_text())
    return ABPair(
        source_path,
        result_path,
        _finite_or_silent(stored["source_lufs"]),
        _finite_or_silent(stored["result_lufs"]),
    )


def _lufs(samples: np.ndarray) -> float:
    try:
        return loudness.integrated_lufs(samples)
    except loudness.LoudnessError:
        return -math.inf


def _finite_or_silent(value: float | None) -> float:
    return -math.inf if value is None else float(value)
