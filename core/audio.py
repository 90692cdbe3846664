"""Audio in and out: decode any supported file to 48 kHz stereo float, encode masters.

Arrays here are shaped (channels, samples), as torch and the pipeline use them. soundfile
wants (frames, channels), so the transposes live in this module only.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 48_000
# One 25 Hz latent frame of the ACE-Step VAE: every duration is rounded up to this.
SAMPLES_PER_LATENT = 1920
SOUNDFILE_FORMATS = ("wav", "flac", "mp3", "ogg")
FFMPEG_FORMATS = ("m4a", "aac")
MIN_SOURCE_SECONDS = 1.0
SILENCE_PEAK = 1e-4


class AudioError(ValueError):
    """The audio cannot be used; the message names the problem for the musician."""


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, (2, n) at SAMPLE_RATE
    sample_rate: int = SAMPLE_RATE

    @property
    def seconds(self) -> float:
        return self.samples.shape[-1] / self.sample_rate


def accepted_formats() -> tuple[str, ...]:
    """Upload formats: m4a/aac only when ffmpeg is there to decode them."""
    return SOUNDFILE_FORMATS + (FFMPEG_FORMATS if shutil.which("ffmpeg") else ())


def to_stereo_48k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, channels) or (frames,) at any rate → float32 (2, n) at 48 kHz."""
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.shape[1] == 1:
        data = np.repeat(data, 2, axis=1)
    elif data.shape[1] > 2:
        data = data[:, :2]
    if sample_rate != SAMPLE_RATE:
        data = soxr.resample(data, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(data.T)


def decode(data: bytes, filename: str, max_seconds: float) -> Audio:
    """Decode an uploaded file, checking format, emptiness, silence and length."""
    suffix = Path(filename).suffix.lower().lstrip(".")
    if suffix not in accepted_formats():
        allowed = ", ".join(accepted_formats())
        raise AudioError(f"{filename}: .{suffix or '?'} files are not supported; use {allowed}.")
    if not data:
        raise AudioError(f"{filename} is empty.")
    if suffix in FFMPEG_FORMATS:
        samples = _decode_with_ffmpeg(data, filename)
    else:
        try:
            raw, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as error:
            raise AudioError(
                f"{filename} could not be read as {suffix.upper()}: the file is corrupt or "
                "not really that format."
            ) from error
        samples = to_stereo_48k(raw, rate)
    return checked(Audio(samples), filename, max_seconds)


def checked(audio: Audio, name: str, max_seconds: float) -> Audio:
    if audio.samples.shape[-1] == 0:
        raise AudioError(f"{name} holds no audio.")
    if not np.all(np.isfinite(audio.samples)):
        raise AudioError(f"{name} holds invalid samples (NaN or infinity).")
    if audio.seconds < MIN_SOURCE_SECONDS:
        raise AudioError(f"{name} is {audio.seconds:.2f} s long; it must be at least 1 second.")
    if audio.seconds > max_seconds:
        raise AudioError(
            f"{name} is {_length(audio.seconds)} long; the limit is {_length(max_seconds)}."
        )
    if float(np.max(np.abs(audio.samples))) < SILENCE_PEAK:
        raise AudioError(f"{name} is silent.")
    return audio


def _length(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} minutes"


def _decode_with_ffmpeg(data: bytes, filename: str) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=Path(filename).suffix) as handle:
        handle.write(data)
        handle.flush()
        result = subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-i",
                handle.name,
                "-f",
                "f32le",
                "-ac",
                "2",
                "-ar",
                "48000",
                "-",
            ],
            capture_output=True,
            check=False,
        )
    if result.returncode != 0 or not result.stdout:
        raise AudioError(f"{filename} could not be decoded: the file is corrupt or not AAC.")
    return np.frombuffer(result.stdout, "<f4").reshape(-1, 2).T.copy()


def read(path: Path) -> Audio:
    raw, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return Audio(to_stereo_48k(raw, rate))


def encode(samples: np.ndarray, fmt: str, subtype: str | None = None) -> bytes:
    """Encode (2, n) float audio at 48 kHz as FLAC or WAV bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, samples.T, SAMPLE_RATE, format=fmt.upper(), subtype=subtype)
    return buffer.getvalue()


def write_atomic(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a crash leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def seconds_to_samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def round_to_latent(samples: int) -> int:
    """Round a length up to whole VAE frames (40 ms), as the pipeline does."""
    return -(-samples // SAMPLES_PER_LATENT) * SAMPLES_PER_LATENT


def floor_to_latent(samples: int) -> int:
    """Round a length down to whole VAE frames."""
    return samples // SAMPLES_PER_LATENT * SAMPLES_PER_LATENT


def equal_power_crossfade(outgoing: np.ndarray, incoming: np.ndarray) -> np.ndarray:
    """Fade from `outgoing` to `incoming` (same length) at constant power."""
    ramp = np.sin(np.linspace(0.0, np.pi / 2, outgoing.shape[-1], dtype=np.float32)) ** 2
    return outgoing * (1 - ramp) + incoming * ramp


def crossfade_splice(
    base: np.ndarray, insert: np.ndarray, start: int, end: int, fade: int
) -> np.ndarray:
    """`base` with samples [start, end) taken from `insert` (same length as `base`).

    Equal-power crossfades of `fade` samples sit inside the region, so everything outside
    [start, end) stays sample-identical to `base`.
    """
    out = base.copy()
    out[:, start:end] = insert[:, start:end]
    fade_in = min(fade, (end - start) // 2)
    if fade_in > 0:
        if start > 0:
            head = slice(start, start + fade_in)
            out[:, head] = equal_power_crossfade(base[:, head], insert[:, head])
        if end < base.shape[-1]:
            tail = slice(end - fade_in, end)
            out[:, tail] = equal_power_crossfade(insert[:, tail], base[:, tail])
    return out


def mp3_bytes(
    samples: np.ndarray, bitrate_kbps: int = 192, sample_rate: int = SAMPLE_RATE
) -> bytes:
    """Encode (2, n) float audio as CBR MP3 with LAME."""
    import lameenc

    pcm = (np.clip(samples.T, -1.0, 1.0) * 32767.0).astype("<i2")
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(2)
    encoder.set_quality(2)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())
