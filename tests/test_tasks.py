"""Cover, extend and edit on the tiny DiT: the pipeline call each stage builds, and the takes
they make end to end (length, untouched audio, lineage, determinism)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core import audio as audio_io
from core import tasks
from core.jobs import DONE, FAILED
from core.library import Item, history_label
from core.request import InvalidRequest, SongRequest
from core.song import COVER_INSTRUCTION, Conditioning
from core.sources import store_upload
from core.studio import Studio
from tests.conftest import wait_for

RATE = audio_io.SAMPLE_RATE
FADE = round(tasks.CROSSFADE_SECONDS * RATE)
BASE = SongRequest(
    caption="warm indie rock, jangly guitars, male vocals",
    lyrics="[Verse 1]\nsummer on the porch\n\n[Chorus]\nwe were young",
    steps=2,
    guidance=1.0,
    seed=5,
)


def song(seconds: float, seed: int = 0) -> np.ndarray:
    """A little stereo song: chords, a pulse and some noise, never silent."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    pulse = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 2.0 * t))
    left = 0.4 * chord * pulse + 0.02 * rng.standard_normal(t.size)
    right = 0.4 * np.roll(chord, 100) * pulse + 0.02 * rng.standard_normal(t.size)
    return np.stack([left, right]).astype(np.float32)


def upload(studio: Studio, seconds: float, name: str = "demo.wav", seed: int = 0) -> Item:
    data = audio_io.encode(song(seconds, seed), "wav", "PCM_24")
    return store_upload(studio.library, studio.settings, data, name)


def run(studio: Studio, request: SongRequest) -> Item:
    job = wait_for(studio, tasks.submit(studio, request).id)
    assert job.status == DONE, job.error
    (item,) = studio.library.for_job(job.id)
    return item


def samples_of(studio: Studio, item_id: str) -> np.ndarray:
    return studio.library.read_audio(item_id).samples


def conditioning_for(studio: Studio, request: SongRequest) -> Conditioning:
    dit = studio.load_dit()
    source = studio.songs.source_audio(request)
    return studio.songs.condition(request, dit, source)


def test_install_registers_the_three_stages(studio: Studio) -> None:
    assert set(studio.task_stages) >= {"cover", "extend", "edit"}


# --- cover -------------------------------------------------------------------------------


def test_cover_sends_the_source_as_src_audio_with_the_cover_instruction(studio: Studio) -> None:
    source = upload(studio, 6.3)
    reference = upload(studio, 3.0, "voice.wav", seed=9)
    request = replace(
        BASE, task="cover", source_id=source.id, reference_id=reference.id, cover_strength=0.4
    )
    kwargs = conditioning_for(studio, request).kwargs
    assert kwargs["task_type"] == "cover"
    assert kwargs["instruction"] == COVER_INSTRUCTION
    assert kwargs["audio_cover_strength"] == 0.4
    original = samples_of(studio, source.id)
    src = kwargs["src_audio"]
    assert isinstance(src, torch.Tensor) and src.shape[0] == 2
    # Padded to whole latent frames with silence, the source itself untouched.
    assert src.shape[-1] == audio_io.round_to_latent(original.shape[-1])
    assert torch.equal(src[:, : original.shape[-1]], torch.from_numpy(original))
    assert torch.equal(
        kwargs["reference_audio"], torch.from_numpy(samples_of(studio, reference.id))
    )
    # The metadata line states the source's true duration, not diffusers' default 60 s.
    assert kwargs["audio_duration"] == pytest.approx(original.shape[-1] / RATE)

    take = run(studio, request)
    result = samples_of(studio, take.id)
    assert result.shape == original.shape  # the output follows the source
    assert np.abs(result).max() > 0.01
    assert take.parent_id == source.id and take.operation == "cover"
    assert take.meta["pipeline"]["task_type"] == "cover"
    assert take.meta["cover"]["reference_id"] == reference.id
    assert history_label(studio.library.lineage(take.id)) == "upload → cover (0.4)"


# --- extend ------------------------------------------------------------------------------


def test_extend_at_the_end_adds_exactly_n_seconds_and_keeps_the_song(studio: Studio) -> None:
    source = upload(studio, 7.3)
    original = samples_of(studio, source.id)
    length = original.shape[-1]
    request = replace(BASE, task="extend", source_id=source.id, extend_seconds=5, context_seconds=5)
    kwargs = conditioning_for(studio, request).kwargs
    context = 5 * RATE // audio_io.SAMPLES_PER_LATENT * audio_io.SAMPLES_PER_LATENT
    padding = audio_io.round_to_latent(5 * RATE)
    # Only the context goes through the model, padded with silence that is repainted.
    assert kwargs["task_type"] == "repaint"
    assert kwargs["src_audio"].shape[-1] == context + padding
    assert torch.equal(kwargs["src_audio"][:, :context], torch.from_numpy(original[:, -context:]))
    assert not kwargs["src_audio"][:, context:].any()
    fps = 25
    assert int(kwargs["repainting_start"] * fps) == context // audio_io.SAMPLES_PER_LATENT
    assert int(kwargs["repainting_end"] * fps) == (context + padding) // audio_io.SAMPLES_PER_LATENT
    assert kwargs["audio_duration"] == pytest.approx((context + padding) / RATE)

    take = run(studio, request)
    result = samples_of(studio, take.id)
    assert result.shape[-1] == length + 5 * RATE
    np.testing.assert_array_equal(result[:, : length - FADE], original[:, : length - FADE])
    added = tasks.extension_only(result, take.meta)
    assert added is not None and added.shape[-1] == 5 * RATE
    assert np.sqrt(np.mean(added**2)) > 1e-3  # the new part is music, not the padding
    assert history_label(studio.library.lineage(take.id)) == "upload → extend +5 s"

    # Chaining: extending the extension makes the song longer again.
    longer = run(studio, replace(request, source_id=take.id, extend_seconds=6))
    longer_samples = samples_of(studio, longer.id)
    assert longer_samples.shape[-1] == length + 11 * RATE
    np.testing.assert_array_equal(
        longer_samples[:, : length + 5 * RATE - FADE], result[:, : length + 5 * RATE - FADE]
    )
    assert history_label(studio.library.lineage(longer.id)) == (
        "upload → extend +5 s → extend +6 s"
    )


def test_extend_at_the_start_with_the_whole_song_as_context(studio: Studio) -> None:
    source = upload(studio, 6.1)
    original = samples_of(studio, source.id)
    length = original.shape[-1]
    request = replace(
        BASE, task="extend", source_id=source.id, extend_seconds=5.5, extend_side="start"
    )
    kwargs = conditioning_for(studio, request).kwargs
    padding = audio_io.round_to_latent(round(5.5 * RATE))
    assert int(kwargs["repainting_start"] * 25) == 0
    assert int(kwargs["repainting_end"] * 25) == padding // audio_io.SAMPLES_PER_LATENT
    assert not kwargs["src_audio"][:, :padding].any()

    take = run(studio, request)
    result = samples_of(studio, take.id)
    added = round(5.5 * RATE)
    assert result.shape[-1] == length + added
    np.testing.assert_array_equal(result[:, added + FADE :], original[:, FADE:])
    extension = tasks.extension_only(result, take.meta)
    assert extension is not None
    np.testing.assert_array_equal(extension, result[:, :added])
    assert history_label(studio.library.lineage(take.id)) == "upload → extend +5.5 s before"


# --- edit --------------------------------------------------------------------------------


def test_edit_repaints_the_region_and_leaves_the_rest_sample_identical(studio: Studio) -> None:
    source = upload(studio, 9.0)
    original = samples_of(studio, source.id)
    request = replace(BASE, task="edit", source_id=source.id, region_start=2.3, region_end=5.7)
    kwargs = conditioning_for(studio, request).kwargs
    assert kwargs["task_type"] == "repaint"
    # The whole song goes in: the segment is never sent alone.
    assert kwargs["src_audio"].shape[-1] == audio_io.round_to_latent(original.shape[-1])
    assert kwargs["prompt"] == BASE.caption and kwargs["lyrics"] == BASE.lyrics
    assert int(kwargs["repainting_start"] * 25) == int(2.3 * RATE) // audio_io.SAMPLES_PER_LATENT
    assert int(kwargs["repainting_end"] * 25) == -(-int(5.7 * RATE) // audio_io.SAMPLES_PER_LATENT)

    take = run(studio, request)
    result = samples_of(studio, take.id)
    start, end = round(2.3 * RATE), round(5.7 * RATE)
    assert result.shape == original.shape
    np.testing.assert_array_equal(result[:, :start], original[:, :start])
    np.testing.assert_array_equal(result[:, end:], original[:, end:])
    # Inside, past the ≤50 ms fades, it is the model's new take on the region.
    inner = slice(start + FADE, end - FADE)
    assert not np.allclose(result[:, inner], original[:, inner], atol=1e-3)
    assert take.meta["region"]["crossfade_seconds"] <= 0.05
    assert history_label(studio.library.lineage(take.id)) == "upload → edit 0:02–0:06"


def test_edit_up_to_the_end_of_the_song(studio: Studio) -> None:
    source = upload(studio, 7.0)
    original = samples_of(studio, source.id)
    take = run(
        studio, replace(BASE, task="edit", source_id=source.id, region_start=3.5, region_end=7.0)
    )
    result = samples_of(studio, take.id)
    np.testing.assert_array_equal(result[:, : round(3.5 * RATE)], original[:, : round(3.5 * RATE)])
    assert result.shape == original.shape


# --- determinism -------------------------------------------------------------------------


def test_same_source_settings_and_seed_give_identical_audio(studio: Studio) -> None:
    # diffusers VAE-encodes the source without the generator: only the engine's seeding of
    # torch's global RNG makes these repeatable.
    source = upload(studio, 6.0)
    edit = replace(BASE, task="edit", source_id=source.id, region_start=1.0, region_end=4.5)
    first = samples_of(studio, run(studio, edit).id)
    np.testing.assert_array_equal(first, samples_of(studio, run(studio, edit).id))
    assert not np.array_equal(first, samples_of(studio, run(studio, replace(edit, seed=6)).id))
    cover = replace(BASE, task="cover", source_id=source.id, cover_strength=0.7)
    np.testing.assert_array_equal(
        samples_of(studio, run(studio, cover).id), samples_of(studio, run(studio, cover).id)
    )


# --- bad requests ------------------------------------------------------------------------


def test_bad_regions_and_lengths_are_refused_before_queueing(studio: Studio) -> None:
    source = upload(studio, 8.0)
    cases = {
        "after the song's end": replace(
            BASE, task="edit", source_id=source.id, region_start=4.0, region_end=9.5
        ),
        "must be 3–90 seconds long": replace(
            BASE, task="edit", source_id=source.id, region_start=1.0, region_end=2.0
        ),
        "Choose a region": replace(BASE, task="edit", source_id=source.id),
        "between 5 and 120 seconds": replace(
            BASE, task="extend", source_id=source.id, extend_seconds=200
        ),
        "Choose a source song": replace(BASE, task="cover"),
        "no longer in the library": replace(BASE, task="cover", source_id="0123456789ab"),
    }
    for message, request in cases.items():
        with pytest.raises(InvalidRequest) as refused:
            tasks.submit(studio, request)
        assert message in str(refused.value), str(refused.value)
    assert studio.jobs.active() == []


def test_extension_past_the_longest_song_is_refused(studio: Studio) -> None:
    source = upload(studio, 8.0)
    problems = tasks.source_problems(
        replace(BASE, task="extend", source_id=source.id, extend_seconds=100), 550.0, 600.0
    )
    assert problems == [
        "The extended song would be 650 s long; the longest song is 600 s. Add at most 50 s."
    ]
    # A job that bypassed the page (e.g. queued before a setting changed) fails with words.
    short = replace(studio.settings, max_duration=10)
    studio.settings = short
    job = wait_for(
        studio,
        studio.submit_song(replace(BASE, task="extend", source_id=source.id, extend_seconds=5)).id,
    )
    assert job.status == FAILED
    assert "longest song is 10 s" in (job.error or "")
