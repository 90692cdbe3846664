"""Cover, extend and edit: the song pipeline's stages for songs that start from audio.

Each stage turns the request and its source into the pipeline call (`Conditioning.kwargs`)
and into `finish`, which turns the pipeline's output into the take. They follow upstream
ACE-Step 1.5 and work around what diffusers' `AceStepPipeline` does not do:

- cover: the source goes in as `src_audio` with the cover instruction and carries the
  structure; an optional reference clip (`reference_audio`) carries the timbre.
- extend: the pipeline never makes audio longer than its source, so the context window is
  padded with silence and the new span repainted; the result is stitched back onto the
  untouched rest of the song.
- edit: the whole song goes in and only the region is repainted; outside the region the
  original audio is spliced back, so it is sample-identical (a VAE round trip is not).

Every output of the pipeline is peak-normalised to −1 dBFS, so before anything is stitched
to the original, the output is brought back to the original's level by comparing the part
both share (the context the model kept).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core import audio as audio_io
from core.jobs import Job, StudioError
from core.library import Item
from core.request import FieldProblem, InvalidRequest, SongRequest, validate
from core.song import COVER_INSTRUCTION, Conditioning, SourceAudio

if TYPE_CHECKING:
    from core.dit import LoadedDit
    from core.studio import Studio

SAMPLES_PER_LATENT = audio_io.SAMPLES_PER_LATENT
# Fades at the edges of an edit and at the seam of an extension; upstream has none, and
# 50 ms is short enough to keep a transient and long enough to hide a click.
CROSSFADE_SECONDS = 0.05
# Below this RMS the shared part is too quiet to tell the output's level from.
LEVEL_FLOOR = 1e-4
# ±24 dB: a larger correction means the model did not keep the context, not a level change.
MAX_LEVEL_GAIN = 16.0


def install(studio: Studio) -> None:
    studio.task_stages["cover"] = partial(cover_stage, studio)
    studio.task_stages["extend"] = partial(extend_stage, studio)
    studio.task_stages["edit"] = partial(edit_stage, studio)


# --- before queueing ---------------------------------------------------------------------


def source_problems(request: SongRequest, source_seconds: float, max_seconds: float) -> list[str]:
    """What is wrong with the request for this source (the region, the final length)."""
    problems: list[str] = []
    region_end = request.region_end
    if request.task == "edit" and region_end is not None and region_end > source_seconds + 0.05:
        problems.append(
            f"The region ends at {region_end:.1f} s, after the song's end ({source_seconds:.1f} s)."
        )
    if request.task == "extend":
        total = source_seconds + request.extend_seconds
        if total > max_seconds:
            problems.append(
                f"The extended song would be {total:.0f} s long; the longest song is "
                f"{max_seconds:.0f} s. Add at most {max(max_seconds - source_seconds, 0):.0f} s."
            )
    return problems


def submit(studio: Studio, request: SongRequest) -> Job:
    """Validate against the settings and the source, then queue. Raises InvalidRequest."""
    request = validate(request, studio.settings)
    problems: list[FieldProblem] = []
    for field_name, item_id in (("source", request.source_id), ("reference", request.reference_id)):
        if item_id and _audio_item(studio, item_id) is None:
            problems.append(
                FieldProblem(field_name, f"The {field_name} song is no longer in the library.")
            )
    source = _audio_item(studio, request.source_id) if request.source_id else None
    if source is not None:
        for message in source_problems(
            request, source.duration or 0.0, float(studio.settings.max_duration)
        ):
            problems.append(FieldProblem("source", message))
    if problems:
        raise InvalidRequest(problems)
    return studio.submit_song(request)


def _audio_item(studio: Studio, item_id: str) -> Item | None:
    item = studio.library.find(item_id)
    return item if item is not None and item.audio_file is not None else None


# --- cover -------------------------------------------------------------------------------


def cover_stage(
    studio: Studio,
    request: SongRequest,
    dit: LoadedDit,
    source: SourceAudio | None,
    conditioning: Conditioning,
) -> Conditioning:
    samples = _required(source).samples
    length = samples.shape[-1]
    kwargs = dict(conditioning.kwargs)
    kwargs.update(
        task_type="cover",
        instruction=COVER_INSTRUCTION,
        src_audio=_tensor(pad_to_latent(samples)),
        audio_cover_strength=float(request.cover_strength),
        # The output follows the source; the metadata line must say how long it really is.
        audio_duration=length / audio_io.SAMPLE_RATE,
    )
    if request.reference_id:
        kwargs["reference_audio"] = _tensor(_read_item(studio, request.reference_id, "reference"))
    return replace(
        conditioning,
        kwargs=kwargs,
        finish=lambda output: _fit(output, length),
        extra_meta={
            "cover": {
                "strength": request.cover_strength,
                "reference_id": request.reference_id,
                "source_seconds": round(length / audio_io.SAMPLE_RATE, 3),
            }
        },
    )


# --- extend ------------------------------------------------------------------------------


def extend_stage(
    studio: Studio,
    request: SongRequest,
    dit: LoadedDit,
    source: SourceAudio | None,
    conditioning: Conditioning,
) -> Conditioning:
    samples = _required(source).samples
    length = samples.shape[-1]
    max_seconds = float(studio.settings.max_duration)
    problems = source_problems(request, length / audio_io.SAMPLE_RATE, max_seconds)
    if problems:
        raise StudioError(" ".join(problems))
    added = audio_io.seconds_to_samples(request.extend_seconds)
    # The new span is whole latent frames long; the part of it furthest from the song is cut.
    padding = audio_io.round_to_latent(added)
    wanted_context = (
        length
        if request.context_seconds is None
        else audio_io.seconds_to_samples(request.context_seconds)
    )
    # Whole frames of context, so the repainted span starts exactly at the seam (a source
    # is at least a second long, so there is always a frame).
    context = max(audio_io.floor_to_latent(min(wanted_context, length)), SAMPLES_PER_LATENT)
    at_end = request.extend_side == "end"
    silence = np.zeros((2, padding), dtype=np.float32)
    if at_end:
        window = np.concatenate([samples[:, length - context :], silence], axis=1)
        new_frames = (context // SAMPLES_PER_LATENT, (context + padding) // SAMPLES_PER_LATENT)
    else:
        window = np.concatenate([silence, samples[:, :context]], axis=1)
        new_frames = (0, padding // SAMPLES_PER_LATENT)
    frames_per_second = float(dit.pipe.latents_per_second)
    kwargs = dict(conditioning.kwargs)
    kwargs.update(
        task_type="repaint",
        src_audio=_tensor(window),
        repainting_start=frame_seconds(new_frames[0], frames_per_second),
        repainting_end=frame_seconds(new_frames[1], frames_per_second),
        # The model sees the window (context + new span), so that is the song's length to it.
        audio_duration=window.shape[-1] / audio_io.SAMPLE_RATE,
    )
    fade = min(audio_io.seconds_to_samples(CROSSFADE_SECONDS), context // 2)
    level: dict[str, float] = {}

    def finish(output: np.ndarray) -> np.ndarray:
        output = _fit(output, window.shape[-1])
        if at_end:
            kept, original = output[:, :context], samples[:, length - context :]
        else:
            kept, original = output[:, padding : padding + context], samples[:, :context]
        gain = level_match_gain(original, kept)
        level["gain_db"] = round(float(20 * np.log10(gain)), 2)
        output = output * gain
        if at_end:
            new_part = output[:, context : context + added]
            seam = output[:, context - fade : context]
            song = np.concatenate([samples, new_part], axis=1)
            song[:, length - fade : length] = audio_io.equal_power_crossfade(
                samples[:, length - fade :], seam
            )
        else:
            new_part = output[:, padding - added : padding]
            seam = output[:, padding : padding + fade]
            song = np.concatenate([new_part, samples], axis=1)
            song[:, added : added + fade] = audio_io.equal_power_crossfade(seam, samples[:, :fade])
        return np.clip(song, -1.0, 1.0).astype(np.float32)

    start = length if at_end else 0
    extra_meta: dict[str, Any] = {
        "extension": {
            "side": request.extend_side,
            "seconds": round(added / audio_io.SAMPLE_RATE, 3),
            "start_seconds": round(start / audio_io.SAMPLE_RATE, 6),
            "end_seconds": round((start + added) / audio_io.SAMPLE_RATE, 6),
            "context_seconds": round(context / audio_io.SAMPLE_RATE, 3),
            "source_seconds": round(length / audio_io.SAMPLE_RATE, 3),
            "crossfade_seconds": round(fade / audio_io.SAMPLE_RATE, 3),
        },
        "level_match": level,
    }
    return replace(conditioning, kwargs=kwargs, finish=finish, extra_meta=extra_meta)


def extension_only(samples: np.ndarray, meta: dict[str, Any]) -> np.ndarray | None:
    """The added section of an extended take, for its own download."""
    extension = meta.get("extension")
    if not extension:
        return None
    start = audio_io.seconds_to_samples(extension["start_seconds"])
    end = audio_io.seconds_to_samples(extension["end_seconds"])
    return samples[:, start:end]


# --- edit --------------------------------------------------------------------------------


def edit_stage(
    studio: Studio,
    request: SongRequest,
    dit: LoadedDit,
    source: SourceAudio | None,
    conditioning: Conditioning,
) -> Conditioning:
    samples = _required(source).samples
    length = samples.shape[-1]
    seconds = length / audio_io.SAMPLE_RATE
    problems = source_problems(request, seconds, float(studio.settings.max_duration))
    if problems or request.region_start is None or request.region_end is None:
        raise StudioError(" ".join(problems) or "Choose a region to repaint.")
    start = audio_io.seconds_to_samples(request.region_start)
    end = min(audio_io.seconds_to_samples(request.region_end), length)
    padded = pad_to_latent(samples)
    # The repainted frames cover the region; the splice below trims them back to it.
    first_frame = start // SAMPLES_PER_LATENT
    last_frame = -(-end // SAMPLES_PER_LATENT)
    frames_per_second = float(dit.pipe.latents_per_second)
    kwargs = dict(conditioning.kwargs)
    kwargs.update(
        task_type="repaint",
        src_audio=_tensor(padded),
        repainting_start=frame_seconds(first_frame, frames_per_second),
        repainting_end=frame_seconds(last_frame, frames_per_second),
        audio_duration=seconds,
    )
    fade = min(audio_io.seconds_to_samples(CROSSFADE_SECONDS), (end - start) // 2)
    level: dict[str, float] = {}

    def finish(output: np.ndarray) -> np.ndarray:
        output = _fit(output, length)
        outside = np.ones(length, dtype=bool)
        outside[start:end] = False
        gain = level_match_gain(samples[:, outside], output[:, outside])
        level["gain_db"] = round(float(20 * np.log10(gain)), 2)
        repainted = np.clip(output * gain, -1.0, 1.0)
        return audio_io.crossfade_splice(samples, repainted, start, end, fade).astype(np.float32)

    extra_meta = {
        "region": {
            "start_seconds": round(start / audio_io.SAMPLE_RATE, 6),
            "end_seconds": round(end / audio_io.SAMPLE_RATE, 6),
            "repainted_seconds": [
                round(first_frame / frames_per_second, 3),
                round(last_frame / frames_per_second, 3),
            ],
            "crossfade_seconds": round(fade / audio_io.SAMPLE_RATE, 3),
        },
        "level_match": level,
    }
    return replace(conditioning, kwargs=kwargs, finish=finish, extra_meta=extra_meta)


# --- shared ------------------------------------------------------------------------------


def pad_to_latent(samples: np.ndarray) -> np.ndarray:
    """Silence after the end up to whole latent frames: the VAE drops a partial last frame."""
    missing = audio_io.round_to_latent(samples.shape[-1]) - samples.shape[-1]
    if missing == 0:
        return samples
    return np.pad(samples, ((0, 0), (0, missing)))


def frame_seconds(frame: int, frames_per_second: float) -> float:
    """The time of latent frame `frame`, as the pipeline reads it back with int(t · fps).

    Half a frame in, so float rounding can never land on the frame before.
    """
    return (frame + 0.5) / frames_per_second


def level_match_gain(original: np.ndarray, output: np.ndarray) -> float:
    """The gain that brings `output` to the level of `original` over the part both share."""
    original_rms = float(np.sqrt(np.mean(np.square(original, dtype=np.float64))))
    output_rms = float(np.sqrt(np.mean(np.square(output, dtype=np.float64))))
    if original_rms < LEVEL_FLOOR or output_rms < LEVEL_FLOOR:
        return 1.0
    return float(np.clip(original_rms / output_rms, 1 / MAX_LEVEL_GAIN, MAX_LEVEL_GAIN))


def _fit(output: np.ndarray, length: int) -> np.ndarray:
    """The pipeline's output trimmed (or, defensively, padded) to `length` samples."""
    if output.shape[-1] >= length:
        return output[:, :length]
    return np.pad(output, ((0, 0), (0, length - output.shape[-1])))


def _required(source: SourceAudio | None) -> SourceAudio:
    if source is None:
        raise StudioError("Choose a source song: upload a file or pick a take from the library.")
    return source


def _read_item(studio: Studio, item_id: str, what: str) -> np.ndarray:
    if _audio_item(studio, item_id) is None:
        raise StudioError(f"The {what} song is no longer in the library; pick another one.")
    return studio.library.read_audio(item_id).samples


def _tensor(samples: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
