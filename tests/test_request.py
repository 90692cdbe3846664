"""The song request: validation messages, key and language rules, URL round trip."""

from __future__ import annotations

import pytest

from core import music
from core.request import (
    InvalidRequest,
    LoraChoice,
    SongRequest,
    Thinking,
    from_query,
    take_seeds,
    to_query,
    validate,
)
from core.settings import Settings


@pytest.fixture
def limits() -> Settings:
    return Settings()


def problems_of(request: SongRequest, settings: Settings) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as caught:
        validate(request, settings)
    return {problem.field: problem.message for problem in caught.value.problems}


def test_the_vocabulary_has_70_keys_and_51_languages() -> None:
    assert len(music.KEYS) == 70
    assert len(set(music.KEYS)) == 70
    assert len(music.LANGUAGES) == 51
    assert "unknown" in music.LANGUAGES
    assert set(music.LANGUAGE_NAMES) == set(music.LANGUAGES)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("Am", "A minor"),
        ("a minor", "A minor"),
        ("F#m", "F# minor"),
        ("Bb", "Bb major"),
        ("C", "C major"),
        ("Ebmaj", "Eb major"),
        ("g sharp minor", "G# minor"),
        ("D♭ major", "D♭ major"),
        ("C min", "C minor"),
    ],
)
def test_keys_are_normalised_to_acestep_spelling(typed: str, expected: str) -> None:
    assert music.normalise_key(typed) == expected
    assert expected in music.KEYS


@pytest.mark.parametrize("typed", ["H minor", "C dorian", "A##", "", "minor", "123"])
def test_unknown_keys_are_refused(typed: str, limits: Settings) -> None:
    assert music.normalise_key(typed) is None
    if typed:
        request = SongRequest(caption="x", key=typed)
        assert "not one ACE-Step knows" in problems_of(request, limits)["key"]


def test_validation_normalises_key_language_and_caption(limits: Settings) -> None:
    request = validate(SongRequest(caption="  synth pop  ", key="Am", language="EN"), limits)
    assert request.key == "A minor"
    assert request.language == "en"
    assert request.caption == "synth pop"


def test_every_problem_names_its_field_and_range(limits: Settings) -> None:
    request = SongRequest(
        caption="",
        duration=700,
        takes=5,
        bpm=20,
        time_signature=5,
        language="xx",
        steps=0,
        guidance=20,
        shift=0.5,
        cfg_start=0.8,
        cfg_end=0.2,
        infer_method="heun",
        seed=2**31,
    )
    problems = problems_of(request, limits)
    assert "required" in problems["caption"]
    assert "between 10 and 600 seconds" in problems["duration"]
    assert "between 1 and 4" in problems["takes"]
    assert "between 30 and 300" in problems["bpm"]
    assert "2, 3, 4 or 6" in problems["time_signature"]
    assert "51 codes" in problems["language"]
    assert "between 1 and 200" in problems["steps"]
    assert "between 1 and 15" in problems["guidance"]
    assert "between 1 and 5" in problems["shift"]
    assert "start < end" in problems["cfg_interval"]
    assert "ode or sde" in problems["infer_method"]
    assert "Seed" in problems["seed"]


def test_limits_come_from_settings() -> None:
    short = Settings(max_duration=120, max_takes=2)
    problems = problems_of(SongRequest(caption="x", duration=300, takes=3), short)
    assert "between 10 and 120 seconds" in problems["duration"]
    assert "between 1 and 2" in problems["takes"]


def test_instrumental_always_wins_over_typed_lyrics() -> None:
    assert SongRequest(lyrics="[Verse]\nla", instrumental=True).sung_lyrics == "[Instrumental]"
    assert SongRequest(lyrics="   ").sung_lyrics == "[Instrumental]"
    assert SongRequest(lyrics="[Verse]\nla").sung_lyrics == "[Verse]\nla"


def test_songs_from_audio_need_a_source_and_valid_ranges(limits: Settings) -> None:
    assert "source" in problems_of(SongRequest(task="cover", caption="x"), limits)
    extend = SongRequest(task="extend", caption="x", source_id="a", extend_seconds=200)
    assert "between 5 and 120" in problems_of(extend, limits)["extend_seconds"]
    edit = SongRequest(task="edit", caption="x", source_id="a", region_start=10, region_end=11)
    assert "3–90 seconds" in problems_of(edit, limits)["region"]


def test_take_seeds_are_consecutive_so_each_take_replays_alone() -> None:
    assert take_seeds(41, 3) == [41, 42, 43]
    assert take_seeds(2**31 - 1, 2) == [2**31 - 1, 0]


def test_request_survives_json_and_the_url() -> None:
    request = SongRequest(
        caption="dark techno",
        lyrics="[Verse 1]\nline",
        duration=42,
        seed=7,
        takes=2,
        bpm=128,
        key="A minor",
        time_signature=4,
        language="de",
        steps=30,
        guidance=5.5,
        infer_method="sde",
        thinking=Thinking(enabled=True, temperature=0.7),
        loras=(LoraChoice(name="tape", sha256="ab" * 32, scale=0.8),),
    )
    assert SongRequest.from_json(request.to_json()) == request
    query = to_query(request)
    assert all(isinstance(value, str) for value in query.values())
    assert from_query(query) == request


def test_url_with_bad_values_keeps_defaults() -> None:
    request = from_query({"duration": "long", "bpm": "fast", "caption": "ok", "thinking": "{"})
    assert request.duration == SongRequest().duration
    assert request.bpm is None
    assert request.caption == "ok"
