"""Loudness: measuring, normalising to each preset under a true-peak ceiling, and the A/B."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core import loudness
from core.loudness import PRESETS, TRUE_PEAK_CEILING_DBTP, LoudnessError

RATE = 48_000
SECONDS = 8


def _sine(amplitude: float, frequency: float = 997.0, seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    tone = amplitude * np.sin(2 * np.pi * frequency * t)
    return np.stack([tone, tone]).astype(np.float32)


def _peak_normalised(x: np.ndarray) -> np.ndarray:
    """What the pipeline hands over: peaks at −1 dBFS."""
    return (x * (0.891 / np.max(np.abs(x)))).astype(np.float32)


def _noise() -> np.ndarray:
    rng = np.random.default_rng(7)
    return _peak_normalised(rng.standard_normal((2, SECONDS * RATE)))


def _drums() -> np.ndarray:
    """Sharp kicks over a quiet bed: a crest factor a limiter has to work on."""
    rng = np.random.default_rng(3)
    n = SECONDS * RATE
    kick = np.zeros(n)
    hit = np.arange(2400)
    for start in range(0, n - hit.size, RATE // 2):
        kick[start : start + hit.size] += np.sin(2 * np.pi * 55 * hit / RATE) * np.exp(-hit / 500)
    bed = 0.03 * rng.standard_normal((2, n))
    return _peak_normalised(kick[None, :] + bed)


SIGNALS = {
    "noise": _noise,
    "sine": lambda: _sine(0.891),
    "near-silent": lambda: _sine(0.891 * 10 ** (-58 / 20)),  # about −59 LUFS
    "drums": _drums,
}


@pytest.mark.parametrize("signal", list(SIGNALS))
@pytest.mark.parametrize("preset", ["streaming", "apple", "broadcast", "club"])
def test_normalise_hits_target_under_the_ceiling(signal: str, preset: str) -> None:
    samples = SIGNALS[signal]()
    target = PRESETS[preset].target_lufs
    result = loudness.normalise_to_preset(samples, preset)
    measured = loudness.integrated_lufs(result.samples)
    assert abs(measured - target) <= 0.5, f"{signal} → {measured:.2f} LUFS, wanted {target}"
    assert loudness.true_peak_db(result.samples) <= TRUE_PEAK_CEILING_DBTP + 1e-6
    # Never clipped: no sample anywhere near full scale.
    assert np.max(np.abs(result.samples)) < 0.95
    assert result.samples.shape == samples.shape
    assert result.samples.dtype == np.float32
    assert abs(result.after.integrated_lufs - measured) < 1e-6
    assert result.before.integrated_lufs == pytest.approx(loudness.integrated_lufs(samples))


def test_loud_master_is_limited_not_clipped() -> None:
    result = loudness.normalise_to_preset(_drums(), "streaming")
    # Kicks peaking at −1 dBFS read far under −14 LUFS: the gain needs the limiter.
    assert result.limited
    assert result.after.true_peak_dbtp <= TRUE_PEAK_CEILING_DBTP
    # A plain gain of the same size would have pushed peaks over full scale.
    assert result.before.sample_peak_dbfs + result.gain_db > 0


def test_turning_down_needs_no_limiter() -> None:
    samples = _noise()
    result = loudness.normalise_to_preset(samples, "broadcast")
    assert not result.limited
    # A pure gain: the waveform is the same shape.
    ratio = result.samples[np.abs(samples) > 0.1] / samples[np.abs(samples) > 0.1]
    assert np.allclose(ratio, ratio[0], rtol=1e-5)


def test_off_leaves_the_take_alone() -> None:
    samples = _noise()
    result = loudness.normalise_to_preset(samples, "off")
    assert np.array_equal(result.samples, samples)
    assert result.gain_db == 0.0
    assert result.before == result.after


def test_measure_knows_a_sine() -> None:
    # A stereo 997 Hz sine at amplitude A reads 20·log10(A) LUFS (BS.1770's calibration).
    measured = loudness.measure(_sine(0.5))
    assert measured.integrated_lufs == pytest.approx(20 * math.log10(0.5), abs=0.1)
    assert measured.sample_peak_dbfs == pytest.approx(20 * math.log10(0.5), abs=0.01)


def test_true_peak_sees_between_samples() -> None:
    # A quarter-rate sine sampled at 45°: every sample is at 0.707 of the real peak.
    n = np.arange(RATE)
    tone = 0.9 * np.sin(np.pi / 2 * n + np.pi / 4)
    samples = np.stack([tone, tone]).astype(np.float32)
    sample_peak = 20 * math.log10(np.max(np.abs(samples)))
    true_peak = loudness.true_peak_db(samples)
    assert true_peak == pytest.approx(20 * math.log10(0.9), abs=0.2)
    assert true_peak - sample_peak > 2.5


def test_silence_and_short_audio_get_clear_messages() -> None:
    with pytest.raises(LoudnessError, match="silent"):
        loudness.normalise(np.zeros((2, RATE * 2), np.float32), -14.0)
    with pytest.raises(LoudnessError, match=r"at least 0\.4 s"):
        loudness.normalise(_sine(0.5, seconds=0.2), -14.0)
    with pytest.raises(LoudnessError, match="Unknown loudness preset"):
        loudness.normalise_to_preset(_sine(0.5), "loudest")


def test_match_loudness_turns_the_louder_one_down() -> None:
    quiet, loud = _sine(0.1, 440), _noise()
    matched_quiet, matched_loud = loudness.match_loudness(quiet, loud)
    assert loudness.integrated_lufs(matched_quiet) == pytest.approx(
        loudness.integrated_lufs(matched_loud), abs=0.05
    )
    assert np.array_equal(matched_quiet, quiet)
    assert np.max(np.abs(matched_loud)) < np.max(np.abs(loud))
