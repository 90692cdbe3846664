"""Where Cover, Extend and Edit start: uploads kept as library items, the source picker,
snapping a region to bars, and the loudness-matched A/B."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core import audio as audio_io
from core import loudness
from core.audio import AudioError
from core.db import Database
from core.library import Library
from core.settings import Settings
from core.sources import (
    ab_pair,
    describe_source,
    snap_to_bars,
    source_choices,
    source_request,
    store_upload,
)

RATE = audio_io.SAMPLE_RATE


def stereo(seconds: float, amplitude: float, freq: float = 330.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([wave, wave]).astype(np.float32)


@pytest.fixture
def library(tmp_path: Path) -> Library:
    db = Database(tmp_path / "studio.db")
    yield Library(tmp_path, db)
    db.close()


@pytest.fixture
def limits(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, max_upload_mb=1, max_duration=30)


def test_an_upload_becomes_a_48k_stereo_library_item_once(
    library: Library, limits: Settings
) -> None:
    data = audio_io.encode(stereo(3.0, 0.5)[:1].repeat(2, 0), "flac", "PCM_16")
    item = store_upload(library, limits, data, "My Demo.flac")
    assert item.kind == "upload"
    assert item.title == "My Demo"
    assert item.duration == pytest.approx(3.0)
    assert library.read_audio(item.id).samples.shape == (2, 3 * RATE)
    # Streamlit hands the page the same file on every rerun: it is stored once.
    again = store_upload(library, limits, data, "My Demo.flac")
    assert again.id == item.id
    assert len(library.list(("upload",))) == 1


def test_bad_uploads_name_the_problem_and_store_nothing(library: Library, limits: Settings) -> None:
    too_big = b"\x00" * (limits.max_upload_mb * 1024 * 1024 + 1)
    with pytest.raises(AudioError, match=r"big\.wav is 1 MB; the upload limit is 1 MB"):
        store_upload(library, limits, too_big, "big.wav")
    too_long = audio_io.mp3_bytes(stereo(31.0, 0.5), bitrate_kbps=32)
    with pytest.raises(AudioError, match=r"long\.mp3 is 31\.\d s long; the limit is 30\.0 s"):
        store_upload(library, limits, too_long, "long.mp3")
    with pytest.raises(AudioError, match="not supported"):
        store_upload(library, limits, b"MThd", "song.mid")
    with pytest.raises(AudioError, match="is silent"):
        store_upload(library, limits, audio_io.encode(stereo(2.0, 0.0), "wav"), "blank.wav")
    assert library.list(("upload",)) == []


def test_the_picker_lists_takes_and_uploads_with_their_settings(library: Library) -> None:
    upload = library.add("upload", {}, samples=stereo(2.0, 0.3), title="demo")
    take = library.add(
        "take",
        {
            "request": {
                "task": "generate",
                "caption": "dream pop",
                "lyrics": "[Verse]\nla",
                "bpm": 96,
            }
        },
        samples=stereo(4.0, 0.3),
        caption="dream pop",
        take_index=1,
    )
    library.add("lyrics", {"text": "words"})
    choices = source_choices(library)
    assert [item.id for item in choices] == [take.id, upload.id]
    assert describe_source(choices[0]) == "dream pop · take 2 · take · 0:04.0"
    assert describe_source(choices[1]) == "demo · upload · 0:02.0"
    request = source_request(take)
    assert request is not None and request.caption == "dream pop" and request.bpm == 96
    assert source_request(upload) is None


def test_snap_to_bars() -> None:
    # 120 bpm in 4/4: a bar is 2 s.
    assert snap_to_bars(4.9, 11.2, 120, 4, 60.0) == (4.0, 12.0)
    # 3/4 at 90 bpm: a bar is 2 s as well; 6/4 at 120: 3 s.
    assert snap_to_bars(3.1, 9.2, 90, 3, 60.0) == (4.0, 10.0)
    assert snap_to_bars(7.0, 13.0, 120, 6, 60.0) == (6.0, 12.0)
    # Never shorter than a bar, never past the end; an edge at the end stays there.
    assert snap_to_bars(5.1, 5.4, 120, 4, 60.0) == (6.0, 8.0)
    assert snap_to_bars(50.0, 59.3, 120, 4, 59.3) == (50.0, 59.3)
    assert snap_to_bars(58.9, 59.3, 120, 4, 59.3) == (57.3, 59.3)


def test_ab_plays_source_and_result_at_the_same_loudness(library: Library, tmp_path: Path) -> None:
    source = library.add("upload", {}, samples=stereo(4.0, 0.1))
    result = library.add(
        "take", {}, samples=stereo(4.0, 0.6, freq=440.0), parent_id=source.id, operation="edit"
    )
    pair = ab_pair(library, tmp_path / "cache", source.id, result.id)
    source_lufs = loudness.integrated_lufs(stereo(4.0, 0.1))
    assert pair.source_lufs == pytest.approx(source_lufs, abs=0.01)
    assert pair.result_lufs > pair.source_lufs + 10
    played = [audio_io.read(path).samples for path in (pair.source_path, pair.result_path)]
    levels = [loudness.integrated_lufs(samples) for samples in played]
    # MP3 moves the level a little; both land on the quieter one's loudness.
    assert levels[0] == pytest.approx(pair.matched_lufs, abs=0.3)
    assert levels[1] == pytest.approx(pair.matched_lufs, abs=0.3)
    assert f"Both played at {pair.matched_lufs:.1f} LUFS" in pair.describe()
    # Made once: a second call reuses the files (and does not need the audio again).
    stamp = pair.result_path.stat().st_mtime_ns
    assert ab_pair(library, tmp_path / "cache", source.id, result.id) == pair
    assert pair.result_path.stat().st_mtime_ns == stamp
