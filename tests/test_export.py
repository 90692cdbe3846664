"""Export: every format and rate round-trips, tags read back, names are readable."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mutagen.flac import FLAC
from mutagen.id3 import ID3
from mutagen.mp3 import MP3

from core import export
from core.db import Database
from core.export import ExportError, SongTags
from core.library import Library

SECONDS = 2.0
LORAS = ({"name": "Lo-fi Tape", "sha256": "ab" * 32, "scale": 0.8},)
TAGS = SongTags(
    title="Neon Rain",
    lyrics="[Verse 1]\nNeon on the water\n\n[Chorus]\nRain, rain",
    caption="dreamy synthwave, warm pads, female vocals",
    seed=1234,
    models=("ACE-Step/acestep-v15-xl-sft-diffusers", "ACE-Step/Ace-Step1.5@abc123"),
    loras=LORAS,
    date="2026-11-24",
    take_number=2,
    language="en",
)


def _song() -> np.ndarray:
    t = np.arange(int(SECONDS * 48_000)) / 48_000
    return np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)]).astype(
        np.float32
    )


def _dominant_hz(channel: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(channel * np.hanning(channel.size)))
    return float(np.argmax(spectrum) * rate / channel.size)


@pytest.mark.parametrize("rate", export.SAMPLE_RATES)
@pytest.mark.parametrize("fmt", ["wav16", "wav24", "flac"])
def test_lossless_formats_round_trip(fmt: str, rate: int) -> None:
    song = _song()
    payload = export.export_audio(song, fmt, TAGS, rate)
    decoded, decoded_rate = sf.read(io.BytesIO(payload), dtype="float32", always_2d=True)
    info = sf.info(io.BytesIO(payload))
    assert decoded_rate == rate
    assert info.subtype == ("PCM_16" if fmt == "wav16" else "PCM_24")
    assert decoded.shape == (round(SECONDS * rate), 2)
    expected = export.resample(song, rate).T
    # 16-bit with dither is within a couple of LSBs; 24-bit is within rounding.
    tolerance = 3 / 32768 if fmt == "wav16" else 2e-6
    assert np.max(np.abs(decoded - expected)) < tolerance


@pytest.mark.parametrize("rate", export.SAMPLE_RATES)
def test_mp3_is_320_cbr_and_sounds_like_the_song(rate: int) -> None:
    song = _song()
    payload = export.export_audio(song, "mp3", TAGS, rate)
    info = MP3(io.BytesIO(payload)).info
    assert info.bitrate == 320_000
    assert info.sample_rate == rate
    assert info.channels == 2
    decoded, decoded_rate = sf.read(io.BytesIO(payload), dtype="float32", always_2d=True)
    assert decoded_rate == rate
    # The decoder adds at most a frame or two of encoder delay and padding.
    assert round(SECONDS * rate) <= decoded.shape[0] <= round(SECONDS * rate) + 2 * 1152
    assert _dominant_hz(decoded[:, 0], rate) == pytest.approx(440, abs=2)
    assert _dominant_hz(decoded[:, 1], rate) == pytest.approx(660, abs=2)
    rms = float(np.sqrt(np.mean(decoded**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    # Every frame at 320 kbps: the file size is the bit rate times the duration.
    audio_bytes = len(payload) - ID3(io.BytesIO(payload)).size
    assert audio_bytes == pytest.approx(320_000 / 8 * info.length, rel=0.05)


def test_mp3_tags_read_back() -> None:
    id3 = ID3(io.BytesIO(export.export_audio(_song(), "mp3", TAGS)))
    assert id3["TIT2"].text == ["Neon Rain"]
    assert id3.getall("USLT")[0].text == TAGS.lyrics
    assert id3.getall("USLT")[0].lang == "eng"
    assert id3["COMM:caption:eng"].text == [TAGS.caption]
    assert id3["TXXX:SEED"].text == ["1234"]
    assert id3["TXXX:MODEL"].text == ["; ".join(TAGS.models)]
    assert "Lo-fi Tape @ 0.8" in id3["TXXX:LORA"].text[0]
    assert json.loads(id3["TXXX:LORA_JSON"].text[0]) == list(LORAS)
    assert str(id3["TDRC"].text[0]) == "2026-11-24"
    assert id3["TRCK"].text == ["2"]
    assert id3.version[:2] == (2, 3)


def test_flac_tags_read_back() -> None:
    tags = FLAC(io.BytesIO(export.export_audio(_song(), "flac", TAGS, 44_100)))
    assert tags["TITLE"] == ["Neon Rain"]
    assert tags["LYRICS"] == [TAGS.lyrics]
    assert tags["DESCRIPTION"] == [TAGS.caption]
    assert tags["SEED"] == ["1234"]
    assert tags["MODEL"] == list(TAGS.models)
    assert tags["LORA"][0].startswith("Lo-fi Tape @ 0.8 (sha256 abab")
    assert json.loads(tags["LORA_JSON"][0]) == list(LORAS)
    assert tags["DATE"] == ["2026-11-24"]
    assert tags.info.sample_rate == 44_100


def test_wav_carries_its_title() -> None:
    with sf.SoundFile(io.BytesIO(export.export_audio(_song(), "wav24", TAGS))) as handle:
        assert handle.title == "Neon Rain"
        assert handle.comment == TAGS.caption


def test_file_names_are_readable_and_safe() -> None:
    assert export.export_filename(TAGS, "mp3") == "Neon Rain - 2026-11-24 - take 2.mp3"
    risky = SongTags(title='AC/DC: "Back"  in *Black*?', date="2026-11-24", stem="vocals")
    assert export.export_filename(risky, "flac") == "AC DC Back in Black - 2026-11-24 - vocals.flac"
    assert export.export_filename(SongTags(title="  "), "wav16") == "Untitled.wav"


def test_bad_requests_get_messages() -> None:
    with pytest.raises(ExportError, match="Unknown export format"):
        export.export_audio(_song(), "ogg", TAGS)
    with pytest.raises(ExportError, match=r"48 kHz or 44\.1 kHz"):
        export.export_audio(_song(), "wav24", TAGS, 22_050)


def test_tags_come_from_the_library_item(tmp_path: Path) -> None:
    library = Library(tmp_path, Database(tmp_path / "studio.db"))
    take = library.add(
        "take",
        {
            "request": {"caption": "lofi beat", "lyrics": "[Verse]\nla", "loras": list(LORAS)},
            "seed": 77,
            "models": {
                "dit": {"source": "ACE-Step/acestep-v15-xl-sft-diffusers", "revision": "main"},
                "planner": {"source": "ACE-Step/Ace-Step1.5", "revision": "abc"},
                "device": "cpu",
            },
        },
        samples=_song(),
        title="Late Bus",
        caption="lofi beat",
        take_index=0,
    )
    stem = library.add("stem", {"stem": "vocals"}, samples=_song(), parent_id=take.id)
    tags = export.tags_for(take)
    assert (tags.title, tags.seed, tags.take_number) == ("Late Bus", 77, 1)
    assert tags.lyrics == "[Verse]\nla"
    assert tags.models == ("ACE-Step/acestep-v15-xl-sft-diffusers", "ACE-Step/Ace-Step1.5@abc")
    assert tags.loras == LORAS
    assert tags.date == time.strftime("%Y-%m-%d")
    stem_tags = export.tags_for(stem, song=take)
    assert stem_tags.display_title == "Late Bus (vocals)"
    assert export.export_filename(stem_tags, "wav24").endswith(" - take 1 - vocals.wav")


def test_instrumental_exports_carry_no_lyrics(tmp_path: Path) -> None:
    library = Library(tmp_path, Database(tmp_path / "studio.db"))
    take = library.add(
        "take",
        {"request": {"lyrics": "ignored", "instrumental": True}, "seed": 1},
        samples=_song(),
        title="Dub",
    )
    assert export.tags_for(take).lyrics == ""


def test_zip_holds_every_file() -> None:
    files = {"a - vocals.wav": b"one", "a - drums.wav": b"two"}
    with zipfile.ZipFile(io.BytesIO(export.zip_files(files))) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == files
