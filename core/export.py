"""Export a take (or its stems) as a file to release: WAV, FLAC or MP3, tagged, well named.

The master in the library is a 48 kHz 24-bit FLAC. Exports resample with soxr when 44.1 kHz
is asked for, dither when they drop to 16 bits, and carry the song's story in their tags
(title, lyrics, caption, seed, model ids, LoRAs) so a file that leaves the Studio can
still say how it was made: ID3 for MP3, Vorbis comments for FLAC, an INFO chunk for WAV.
"""

from __future__ import annotations

import io
import json
import re
import time
import unicodedata
import zipfile
from dataclasses import dataclass, field
from typing import Any

import lameenc
import numpy as np
import soundfile as sf
import soxr
from mutagen.flac import FLAC
from mutagen.id3 import COMM, ID3, TDRC, TIT2, TRCK, TSSE, TXXX, USLT

from core.audio import SAMPLE_RATE

SOFTWARE = "ACE Music Studio"
MP3_BITRATE_KBPS = 320
SAMPLE_RATES = (48_000, 44_100)
FILENAME_MAX_CHARS = 120


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class ExportFormat:
    key: str
    label: str
    extension: str
    mime: str


FORMATS: dict[str, ExportFormat] = {
    fmt.key: fmt
    for fmt in (
        ExportFormat("wav16", "WAV 16-bit", "wav", "audio/wav"),
        ExportFormat("wav24", "WAV 24-bit", "wav", "audio/wav"),
        ExportFormat("flac", "FLAC 24-bit", "flac", "audio/flac"),
        ExportFormat("mp3", "MP3 320 kbps", "mp3", "audio/mpeg"),
    )
}


@dataclass(frozen=True)
class SongTags:
    """What a released file says about its song."""

    title: str
    lyrics: str = ""
    caption: str = ""
    seed: int | None = None
    models: tuple[str, ...] = ()
    loras: tuple[dict[str, Any], ...] = ()
    date: str = ""  # YYYY-MM-DD
    take_number: int | None = None
    stem: str = ""
    language: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def lora_lines(self) -> list[str]:
        return [
            f"{lora.get('name', '?')} @ {float(lora.get('scale', 1.0)):g} "
            f"(sha256 {lora.get('sha256', '?')})"
            for lora in self.loras
        ]

    @property
    def display_title(self) -> str:
        return f"{self.title} ({self.stem})" if self.stem else self.title


def tags_for(item: Any, song: Any | None = None) -> SongTags:
    """Tags for a library item; a stem takes its song's story from `song` (its take)."""
    source = song if song is not None else item
    meta = source.meta or {}
    request = meta.get("request") or {}
    lyrics = "" if request.get("instrumental") else str(request.get("lyrics") or "")
    return SongTags(
        title=source.title or (source.caption or "Untitled")[:60],
        lyrics=lyrics,
        caption=source.caption or str(request.get("caption") or ""),
        seed=meta.get("seed"),
        models=model_ids(meta),
        loras=tuple(request.get("loras") or ()),
        date=time.strftime("%Y-%m-%d", time.localtime(source.created)),
        take_number=source.take_index + 1 if source.take_index is not None else None,
        stem=str((item.meta or {}).get("stem") or "") if song is not None else "",
        language=str(request.get("language") or ""),
    )


def model_ids(meta: dict[str, Any]) -> tuple[str, ...]:
    """Every model a take's sidecar names, as `source@revision`, in a stable order."""
    ids: list[str] = []
    for value in (meta.get("models") or {}).values():
        if isinstance(value, dict) and value.get("source"):
            revision = value.get("revision")
            suffix = f"@{revision}" if revision and revision != "main" else ""
            ids.append(f"{value['source']}{suffix}")
    return tuple(ids)


# --- file names --------------------------------------------------------------------------


def export_filename(tags: SongTags, fmt: str) -> str:
    """`Title - 2026-11-24 - take 2.mp3`; stems add ` - vocals`."""
    parts = [_safe_name(tags.title) or "Untitled"]
    if tags.date:
        parts.append(tags.date)
    if tags.take_number is not None:
        parts.append(f"take {tags.take_number}")
    if tags.stem:
        parts.append(tags.stem)
    stem = " - ".join(parts)[:FILENAME_MAX_CHARS].rstrip(" .-")
    return f"{stem}.{FORMATS[fmt].extension}"


def _safe_name(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = re.sub(r'[\\/:*?"<>|\x00-\x1f\x7f]', " ", text)
    return re.sub(r"\s+", " ", text).strip(" .")


# --- encoding ----------------------------------------------------------------------------


def export_audio(
    samples: np.ndarray, fmt: str, tags: SongTags, sample_rate: int = SAMPLE_RATE
) -> bytes:
    """Encode (2, n) float audio at 48 kHz as `fmt` at `sample_rate`, tagged."""
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if sample_rate not in SAMPLE_RATES:
        raise ExportError("Export at 48 kHz or 44.1 kHz.")
    data = resample(samples, sample_rate)
    if fmt == "mp3":
        return _tag_mp3(encode_mp3(data, sample_rate), tags)
    if fmt == "flac":
        return _tag_flac(_encode_soundfile(data, sample_rate, "FLAC", "PCM_24", tags), tags)
    if fmt == "wav24":
        return _encode_soundfile(data, sample_rate, "WAV", "PCM_24", tags)
    return _encode_soundfile(to_int16(data), sample_rate, "WAV", "PCM_16", tags)


def resample(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float32)
    if sample_rate == SAMPLE_RATE:
        return data
    frames = soxr.resample(np.ascontiguousarray(data.T), SAMPLE_RATE, sample_rate, quality="VHQ")
    return np.ascontiguousarray(frames.T, dtype=np.float32)


def to_int16(samples: np.ndarray, seed: int = 0) -> np.ndarray:
    """16-bit PCM with TPDF dither, so quiet fades stay smooth instead of turning to grit."""
    rng = np.random.default_rng(seed)
    scaled = np.asarray(samples, dtype=np.float64) * 32767.0
    dither = rng.random(scaled.shape) - rng.random(scaled.shape)
    return np.clip(np.round(scaled + dither), -32768, 32767).astype(np.int16)


def encode_mp3(samples: np.ndarray, sample_rate: int) -> bytes:
    """MP3 at 320 kbps constant bit rate (lameenc, quality 2)."""
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BITRATE_KBPS)
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_channels(2)
    encoder.set_quality(2)
    pcm = np.ascontiguousarray(to_int16(samples).T)  # interleaved L R L R …
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def _encode_soundfile(
    data: np.ndarray, sample_rate: int, container: str, subtype: str, tags: SongTags
) -> bytes:
    buffer = io.BytesIO()
    with sf.SoundFile(
        buffer,
        "w",
        samplerate=sample_rate,
        channels=data.shape[0],
        format=container,
        subtype=subtype,
    ) as handle:
        if container == "WAV":
            # RIFF INFO holds only short plain fields; the full story goes in MP3 and FLAC.
            handle.title = tags.display_title
            handle.comment = tags.caption[:1000]
            handle.software = SOFTWARE
            if tags.date:
                handle.date = tags.date
        handle.write(data.T)
    return buffer.getvalue()


def _tag_mp3(payload: bytes, tags: SongTags) -> bytes:
    id3 = ID3()
    id3.add(TIT2(encoding=3, text=tags.display_title))
    if tags.lyrics:
        id3.add(USLT(encoding=3, lang=_id3_language(tags.language), desc="", text=tags.lyrics))
    if tags.caption:
        id3.add(COMM(encoding=3, lang="eng", desc="caption", text=tags.caption))
    if tags.seed is not None:
        id3.add(TXXX(encoding=3, desc="SEED", text=str(tags.seed)))
    if tags.models:
        # ID3 v2.3 has no multi-value frames (it joins them with "/", which model ids
        # contain), so several values share one frame.
        id3.add(TXXX(encoding=3, desc="MODEL", text="; ".join(tags.models)))
    if tags.loras:
        id3.add(TXXX(encoding=3, desc="LORA", text="; ".join(tags.lora_lines)))
        id3.add(TXXX(encoding=3, desc="LORA_JSON", text=json.dumps(list(tags.loras))))
    if tags.stem:
        id3.add(TXXX(encoding=3, desc="STEM", text=tags.stem))
    if tags.take_number is not None:
        id3.add(TRCK(encoding=3, text=str(tags.take_number)))
    if tags.date:
        id3.add(TDRC(encoding=3, text=tags.date))
    id3.add(TSSE(encoding=3, text=SOFTWARE))
    buffer = io.BytesIO(payload)
    # v2.3: the version Windows, older iTunes and most car stereos read.
    id3.save(buffer, v2_version=3)
    return buffer.getvalue()


def _tag_flac(payload: bytes, tags: SongTags) -> bytes:
    buffer = io.BytesIO(payload)
    flac = FLAC(buffer)
    comments: dict[str, list[str]] = {"TITLE": [tags.display_title], "ENCODER": [SOFTWARE]}
    if tags.lyrics:
        comments["LYRICS"] = [tags.lyrics]
    if tags.caption:
        comments["DESCRIPTION"] = [tags.caption]
    if tags.seed is not None:
        comments["SEED"] = [str(tags.seed)]
    if tags.models:
        comments["MODEL"] = list(tags.models)
    if tags.loras:
        comments["LORA"] = tags.lora_lines
        comments["LORA_JSON"] = [json.dumps(list(tags.loras))]
    if tags.stem:
        comments["STEM"] = [tags.stem]
    if tags.take_number is not None:
        comments["TRACKNUMBER"] = [str(tags.take_number)]
    if tags.date:
        comments["DATE"] = [tags.date]
    for key, values in comments.items():
        flac[key] = values
    buffer.seek(0)
    flac.save(buffer)
    return buffer.getvalue()


def _id3_language(code: str) -> str:
    """ID3 wants ISO 639-2 (three letters); 'XXX' is its 'unknown'."""
    return _ISO639_2.get(code, "XXX")


_ISO639_2 = {
    "en": "eng", "zh": "zho", "ja": "jpn", "ko": "kor", "es": "spa", "fr": "fra", "de": "deu",
    "it": "ita", "pt": "por", "ru": "rus", "ar": "ara", "hi": "hin", "nl": "nld", "sv": "swe",
    "pl": "pol", "tr": "tur", "vi": "vie", "th": "tha", "id": "ind", "uk": "ukr",
}  # fmt: skip


# --- several files at once ---------------------------------------------------------------


def zip_files(files: dict[str, bytes]) -> bytes:
    """A zip of already-encoded files (audio is compressed already: store, don't deflate)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, payload in files.items():
            archive.writestr(name, payload)
    return buffer.getvalue()
