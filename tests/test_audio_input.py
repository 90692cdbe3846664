"""Audio the musician brings: every supported format decodes to 48 kHz stereo float, and each
kind of bad file is refused with a message that names the file and the problem."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core import audio as audio_io
from core.audio import AudioError, decode

RATE = 44_100  # uploads rarely arrive at 48 kHz: every format below is resampled


def tone(seconds: float, rate: int = RATE, channels: int = 2) -> np.ndarray:
    """(frames, channels) like soundfile writes them."""
    t = np.arange(round(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 440.0 * t)
    right = 0.3 * np.sin(2 * np.pi * 660.0 * t)
    return np.stack([left, right][:channels], axis=1).astype(np.float32)


def encoded(fmt: str, seconds: float = 2.0, channels: int = 2, rate: int = RATE) -> bytes:
    data = tone(seconds, rate, channels)
    buffer = io.BytesIO()
    if fmt == "mp3":
        return audio_io.mp3_bytes(
            np.ascontiguousarray(np.repeat(data, 2 // channels, axis=1).T), sample_rate=rate
        )
    subtype = {"wav": "PCM_16", "flac": "PCM_16", "ogg": "VORBIS"}[fmt]
    sf.write(buffer, data, rate, format=fmt.upper(), subtype=subtype)
    return buffer.getvalue()


def ffmpeg_encoded(suffix: str, tmp_path: Path) -> bytes:
    wav = tmp_path / "in.wav"
    wav.write_bytes(encoded("wav"))
    out = tmp_path / f"out.{suffix}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(wav), "-c:a", "aac", str(out)], check=True
    )
    return out.read_bytes()


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg"])
def test_each_format_decodes_to_48k_stereo(fmt: str) -> None:
    audio = decode(encoded(fmt), f"song.{fmt}", max_seconds=600)
    assert audio.samples.dtype == np.float32
    assert audio.samples.shape[0] == 2
    assert audio.sample_rate == 48_000
    # Codecs add a little padding (MP3 ~50 ms); the length stays the song's.
    assert audio.seconds == pytest.approx(2.0, abs=0.08)
    # The 440 Hz tone stays a 440 Hz tone after resampling (left channel's spectral peak).
    spectrum = np.abs(np.fft.rfft(audio.samples[0]))
    assert np.fft.rfftfreq(audio.samples.shape[-1], 1 / 48_000)[spectrum.argmax()] == (
        pytest.approx(440.0, abs=2.0)
    )


def test_mono_becomes_two_identical_channels() -> None:
    audio = decode(encoded("wav", channels=1), "voice.wav", max_seconds=600)
    assert audio.samples.shape[0] == 2
    np.testing.assert_array_equal(audio.samples[0], audio.samples[1])


@pytest.mark.parametrize("suffix", ["m4a", "aac"])
def test_aac_needs_ffmpeg(suffix: str, tmp_path: Path) -> None:
    if shutil.which("ffmpeg"):
        audio = decode(ffmpeg_encoded(suffix, tmp_path), f"memo.{suffix}", max_seconds=600)
        assert audio.samples.shape[0] == 2
        assert audio.seconds == pytest.approx(2.0, abs=0.1)
        with pytest.raises(AudioError, match=rf"memo\.{suffix} could not be decoded"):
            decode(b"\x00\x01garbage" * 50, f"memo.{suffix}", max_seconds=600)
    else:
        assert suffix not in audio_io.accepted_formats()
        with pytest.raises(AudioError, match="not supported"):
            decode(b"anything", f"memo.{suffix}", max_seconds=600)


def test_unknown_format_names_the_allowed_ones() -> None:
    with pytest.raises(AudioError) as refused:
        decode(encoded("wav"), "song.xyz", max_seconds=600)
    message = str(refused.value)
    assert "song.xyz: .xyz files are not supported" in message
    for fmt in ("wav", "flac", "mp3", "ogg"):
        assert fmt in message


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"", "empty.wav", "empty.wav is empty"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10, "broken.wav", "could not be read as WAV"),
        (np.random.default_rng(0).bytes(4096), "noise.flac", "could not be read as FLAC"),
        (encoded("flac")[:200], "cut.flac", "cut.flac"),
    ],
)
def test_corrupt_and_empty_files_are_named(data: bytes, name: str, message: str) -> None:
    with pytest.raises(AudioError, match=re.escape(message)):
        decode(data, name, max_seconds=600)


def test_silent_short_long_and_invalid_audio_are_refused() -> None:
    silent = io.BytesIO()
    sf.write(silent, np.zeros((RATE * 2, 2), np.float32), RATE, format="WAV")
    with pytest.raises(AudioError, match=r"quiet\.wav is silent"):
        decode(silent.getvalue(), "quiet.wav", max_seconds=600)
    with pytest.raises(AudioError, match=r"blip.wav is 0.50 s long; it must be at least 1 second"):
        decode(encoded("wav", seconds=0.5), "blip.wav", max_seconds=600)
    with pytest.raises(AudioError, match=r"long.ogg is 6.0 s long; the limit is 5.0 s"):
        decode(encoded("ogg", seconds=6.0), "long.ogg", max_seconds=5)
    nan = io.BytesIO()
    data = tone(2.0)
    data[100] = np.nan
    sf.write(nan, data, RATE, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match="invalid samples"):
        decode(nan.getvalue(), "nan.wav", max_seconds=600)
