"""Loudness: measure integrated LUFS and true peak, and normalise a take to a release target.

The pipeline already peak-normalises every take to −1 dBFS, so a take arrives here loud
enough for peaks but at no particular loudness. Normalising is one gain to the target,
then, only where that gain pushes inter-sample peaks over the ceiling, a look-ahead
true-peak brick-wall limiter (pedalboard's) instead of clipping. The limiter takes a
little loudness away, so the gain in front of it is corrected until the result lands on
the target.

Arrays are (channels, samples) float32, like the rest of the Studio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyloudnorm
import soxr
from pedalboard import BrickwallLimiter

from core.audio import SAMPLE_RATE

TRUE_PEAK_CEILING_DBTP = -1.0
# BS.1770 gates everything under −70 LUFS: quieter than that there is nothing to measure.
ABSOLUTE_GATE_LUFS = -70.0
# pyloudnorm measures in 400 ms blocks; a shorter signal has no integrated loudness.
MIN_SECONDS = 0.4
TOLERANCE_LU = 0.1
# The limiter's own true-peak detector is 4x oversampled too, but its reconstruction is
# not BS.1770's: start this far under the ceiling and tighten when the meter disagrees.
LIMITER_MARGIN_DB = 0.5
MAX_PASSES = 6
TYPICAL_SLOPE = 0.85


class LoudnessError(ValueError):
    """The audio cannot be measured or normalised; the message says why."""


@dataclass(frozen=True)
class LoudnessPreset:
    key: str
    label: str
    target_lufs: float | None  # None: leave the take as the pipeline made it

    @property
    def caption(self) -> str:
        if self.target_lufs is None:
            return self.label
        return f"{self.label} ({self.target_lufs:g} LUFS)"


PRESETS: dict[str, LoudnessPreset] = {
    preset.key: preset
    for preset in (
        LoudnessPreset("off", "Off", None),
        LoudnessPreset("streaming", "Streaming", -14.0),
        LoudnessPreset("apple", "Apple Music", -16.0),
        LoudnessPreset("broadcast", "Broadcast (EBU R128)", -23.0),
        LoudnessPreset("club", "Club", -9.0),
    )
}


@dataclass(frozen=True)
class Loudness:
    """What a meter says about a signal. Silence reads −inf."""

    integrated_lufs: float
    true_peak_dbtp: float
    sample_peak_dbfs: float

    def describe(self) -> str:
        return f"{_db(self.integrated_lufs)} LUFS · true peak {_db(self.true_peak_dbtp)} dBTP"

    def to_dict(self) -> dict[str, float | None]:
        return {
            "integrated_lufs": _finite(self.integrated_lufs),
            "true_peak_dbtp": _finite(self.true_peak_dbtp),
            "sample_peak_dbfs": _finite(self.sample_peak_dbfs),
        }


@dataclass(frozen=True)
class Normalised:
    samples: np.ndarray
    before: Loudness
    after: Loudness
    gain_db: float
    limited: bool
    target_lufs: float | None
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP


# --- measuring ---------------------------------------------------------------------------


def true_peak_db(samples: np.ndarray) -> float:
    """The 4x-oversampled peak in dBTP, as BS.1770-4 Annex 2 estimates inter-sample peaks."""
    data = _channels(samples)
    if data.shape[-1] == 0:
        return -math.inf
    # soxr's linear-phase sinc is a closer reconstruction than BS.1770's 48-tap example
    # filter, and four times faster than a polyphase one in numpy.
    oversampled = soxr.resample(np.ascontiguousarray(data.T, dtype=np.float32), 1, 4, quality="HQ")
    peak = max(float(np.max(np.abs(oversampled))), float(np.max(np.abs(data))))
    return _to_db(peak)


def integrated_lufs(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    data = _channels(samples)
    if data.shape[-1] < MIN_SECONDS * rate:
        raise LoudnessError(
            f"The audio is {data.shape[-1] / rate:.2f} s long; loudness needs at least "
            f"{MIN_SECONDS:g} s."
        )
    meter = pyloudnorm.Meter(rate)
    with np.errstate(divide="ignore"):
        return float(meter.integrated_loudness(data.T.astype(np.float64)))


def measure(samples: np.ndarray, rate: int = SAMPLE_RATE) -> Loudness:
    data = _channels(samples)
    return Loudness(
        integrated_lufs=integrated_lufs(data, rate),
        true_peak_dbtp=true_peak_db(data),
        sample_peak_dbfs=_to_db(float(np.max(np.abs(data))) if data.size else 0.0),
    )


# --- normalising -------------------------------------------------------------------------


def normalise(
    samples: np.ndarray,
    target_lufs: float | None,
    rate: int = SAMPLE_RATE,
    ceiling_dbtp: float = TRUE_PEAK_CEILING_DBTP,
) -> Normalised:
    """The take at `target_lufs` with true peaks at or under `ceiling_dbtp`; never clipped.

    `target_lufs=None` (the "off" preset) measures and returns the take unchanged.
    """
    data = _channels(samples).astype(np.float32)
    before = measure(data, rate)
    if target_lufs is None:
        return Normalised(data, before, before, 0.0, False, None, ceiling_dbtp)
    if not math.isfinite(before.integrated_lufs) or before.integrated_lufs < ABSOLUTE_GATE_LUFS:
        raise LoudnessError(
            "The take is silent or nearly so (below −70 LUFS): there is no loudness to normalise."
        )
    gain_db = target_lufs - before.integrated_lufs
    plain = data * _gain(gain_db)
    plain_peak = true_peak_db(plain)
    if plain_peak <= ceiling_dbtp:
        # Peaks scale with the gain; loudness is measured again because the −70 LUFS gate
        # lets different blocks through at another level.
        after = Loudness(
            integrated_lufs(plain, rate), plain_peak, before.sample_peak_dbfs + gain_db
        )
        return Normalised(plain, before, after, gain_db, False, target_lufs, ceiling_dbtp)
    limited, gain_db, after = _limit_to_target(data, gain_db, target_lufs, rate, ceiling_dbtp)
    return Normalised(limited, before, after, gain_db, True, target_lufs, ceiling_dbtp)


def normalise_to_preset(
    samples: np.ndarray, preset_key: str, rate: int = SAMPLE_RATE
) -> Normalised:
    try:
        preset = PRESETS[preset_key]
    except KeyError:
        raise LoudnessError(
            f"Unknown loudness preset {preset_key!r}; choose one of {', '.join(PRESETS)}."
        ) from None
    return normalise(samples, preset.target_lufs, rate)


def _limit_to_target(
    data: np.ndarray, gain_db: float, target_lufs: float, rate: int, ceiling_dbtp: float
) -> tuple[np.ndarray, float, Loudness]:
    """Gain into the limiter, corrected until the limited result measures the target.

    The limiter gives back part of every extra dB, so the correction follows the measured
    slope (a secant step) rather than one dB out per dB in. Driven far past its knee the
    limiter's output gets quieter again, so the search keeps the gains known to be too low
    and too high and bisects between them when a step leaves that bracket; the pass
    closest to the target wins.
    """
    margin = LIMITER_MARGIN_DB
    tried: list[tuple[float, float]] = []  # (gain into the limiter, loudness out)
    low = high = None  # gains known to give too little / too much (or past the knee)
    best: tuple[float, np.ndarray, float, float, float] | None = None
    for _ in range(MAX_PASSES):
        limiter = BrickwallLimiter(ceiling_db=ceiling_dbtp - margin, true_peak=True)
        limited = limiter.process(data * _gain(gain_db), rate)
        peak = true_peak_db(limited)
        if peak > ceiling_dbtp:
            margin += peak - ceiling_dbtp + 0.05
            tried.clear()  # another ceiling is another curve
            low = high = None
            continue
        loudness = integrated_lufs(limited, rate)
        error = target_lufs - loudness
        if best is None or abs(error) < best[0]:
            best = (abs(error), limited, gain_db, loudness, peak)
        if abs(error) <= TOLERANCE_LU:
            break
        past_knee = any(gain < gain_db and loud > loudness for gain, loud in tried)
        if error > 0 and not past_knee:
            low = gain_db if low is None else max(low, gain_db)
        else:
            high = gain_db if high is None else min(high, gain_db)
        tried.append((gain_db, loudness))
        step = gain_db + error / _slope(tried)
        if low is not None and high is not None and not low < step < high:
            step = (low + high) / 2
        elif past_knee:
            step = (low + gain_db) / 2 if low is not None else gain_db - 3.0
        gain_db = step
    if best is None:  # every pass overshot the ceiling: trim the last one under it
        best = (math.inf, limited, gain_db, integrated_lufs(limited, rate), peak)
    _, limited, gain_db, loudness, peak = best
    # The last word is the meter's: whatever the limiter let through is trimmed under the
    # ceiling by plain gain, which can only lower peaks.
    if peak > ceiling_dbtp:
        trim = ceiling_dbtp - peak - 0.01
        limited = limited * _gain(trim)
        loudness, peak = integrated_lufs(limited, rate), peak + trim
    limited = limited.astype(np.float32)
    after = Loudness(loudness, peak, _to_db(float(np.max(np.abs(limited)))))
    return limited, gain_db, after


def _slope(tried: list[tuple[float, float]]) -> float:
    """dB of loudness out per dB of gain in, from the last two passes.

    Before there are two, the typical give-back of a few dB of limiting on music.
    """
    if len(tried) < 2:
        return TYPICAL_SLOPE
    (gain_a, loud_a), (gain_b, loud_b) = tried[-2], tried[-1]
    if gain_b == gain_a:
        return TYPICAL_SLOPE
    return min(max((loud_b - loud_a) / (gain_b - gain_a), 0.2), 1.0)


# --- A/B ---------------------------------------------------------------------------------


def match_loudness(
    first: np.ndarray, second: np.ndarray, rate: int = SAMPLE_RATE
) -> tuple[np.ndarray, np.ndarray]:
    """Both signals at the loudness of the quieter one, so an A/B compares sound, not level.

    Only the louder one is turned down, so neither can clip.
    """
    a, b = _channels(first).astype(np.float32), _channels(second).astype(np.float32)
    loud_a, loud_b = integrated_lufs(a, rate), integrated_lufs(b, rate)
    if not (math.isfinite(loud_a) and math.isfinite(loud_b)):
        return a, b
    quieter = min(loud_a, loud_b)
    return a * _gain(quieter - loud_a), b * _gain(quieter - loud_b)


# --- helpers -----------------------------------------------------------------------------


def _channels(samples: np.ndarray) -> np.ndarray:
    data = np.asarray(samples)
    return data[None, :] if data.ndim == 1 else data


def _gain(db: float) -> np.float32:
    return np.float32(10.0 ** (db / 20.0))


def _to_db(amplitude: float) -> float:
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


def _finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def _db(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else "−∞"
