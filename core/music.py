"""The musical vocabulary ACE-Step was trained on: keys, languages, time signatures, tempo."""

from __future__ import annotations

import re

NOTES = ("A", "B", "C", "D", "E", "F", "G")
ACCIDENTALS = ("", "#", "b", "♯", "♭")
MODES = ("major", "minor")

# The 70 key names the planner's constrained decoder allows, spelled as ACE-Step spells them.
KEYS: tuple[str, ...] = tuple(
    f"{note}{accidental} {mode}" for note in NOTES for accidental in ACCIDENTALS for mode in MODES
)

# The 51 vocal-language codes ACE-Step knows; "unknown" lets the planner detect the language.
LANGUAGES: tuple[str, ...] = tuple(
    "ar az bg bn ca cs da de el en es fa fi fr he hi hr ht hu id is it ja ko la lt ms ne nl no "
    "pa pl pt ro ru sa sk sr sv sw ta te th tl tr uk ur vi yue zh unknown".split()
)

LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic", "az": "Azerbaijani", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan",
    "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fa": "Persian", "fi": "Finnish", "fr": "French", "he": "Hebrew",
    "hi": "Hindi", "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian",
    "id": "Indonesian", "is": "Icelandic", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "la": "Latin", "lt": "Lithuanian", "ms": "Malay", "ne": "Nepali", "nl": "Dutch",
    "no": "Norwegian", "pa": "Punjabi", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sa": "Sanskrit", "sk": "Slovak", "sr": "Serbian", "sv": "Swedish",
    "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "th": "Thai", "tl": "Tagalog",
    "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese", "yue": "Cantonese",
    "zh": "Chinese", "unknown": "Unknown / detect",
}  # fmt: skip

TIME_SIGNATURES: tuple[int, ...] = (2, 3, 4, 6)
BPM_RANGE = (30, 300)
INSTRUMENTAL_LYRICS = "[Instrumental]"

_KEY_PATTERN = re.compile(
    r"^\s*([A-Ga-g])\s*(#|b|♯|♭|sharp|flat)?\s*"
    r"(major|minor|maj|min|m|M)?\s*$"
)
_ACCIDENTAL_WORDS = {"sharp": "#", "flat": "b"}


def normalise_key(text: str) -> str | None:
    """Turn a key as a musician types it ("Am", "f# minor", "Bb") into ACE-Step's spelling.

    Returns None when the text is not one of the 70 keys ACE-Step knows.
    """
    match = _KEY_PATTERN.match(text)
    if not match:
        return None
    note, accidental, mode = match.groups()
    accidental = _ACCIDENTAL_WORDS.get(accidental or "", accidental or "")
    mode_name = "minor" if mode in ("minor", "min", "m") else "major"
    key = f"{note.upper()}{accidental} {mode_name}"
    return key if key in KEYS else None


def parse_time_signature(value: object) -> int | None:
    """Accept 4, "4" or "4/4"; ACE-Step counts beats per bar."""
    text = str(value).strip()
    if "/" in text:
        text = text.split("/", 1)[0]
    try:
        beats = int(text)
    except ValueError:
        return None
    return beats if beats in TIME_SIGNATURES else None


def bar_seconds(bpm: float, beats_per_bar: int) -> float:
    return 60.0 / bpm * beats_per_bar
