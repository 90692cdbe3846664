"""A song request: one typed object from the form to the pipeline, validated in one place.

The same object is stored with the job, written into every take's sidecar and mirrored in
the page URL, so a take, a queued job and a shared link all describe a song the same way.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from core import music
from core.settings import Settings

Task = Literal["generate", "cover", "extend", "edit"]
TASKS: tuple[str, ...] = ("generate", "cover", "extend", "edit")
INFER_METHODS = ("ode", "sde")
SEED_MAX = 2**31 - 1

CAPTION_MAX_CHARS = 512
LYRICS_MAX_CHARS = 4096
EXTEND_RANGE = (5.0, 120.0)
EDIT_REGION_RANGE = (3.0, 90.0)
DURATION_MIN = 10


@dataclass(frozen=True)
class Thinking:
    """The 5 Hz LM planner's options. Defaults follow upstream ACE-Step 1.5."""

    enabled: bool = False
    use_cot_caption: bool = True
    use_cot_metas: bool = True
    use_cot_language: bool = True
    temperature: float = 0.85
    top_p: float = 0.9
    top_k: int = 0
    cfg_scale: float = 2.0
    negative_prompt: str = "NO USER INPUT"
    planner_size: str = "1.7B"


@dataclass(frozen=True)
class LoraChoice:
    """One adapter in the LoRA stack, pinned by the sha256 of its file."""

    name: str
    sha256: str
    scale: float = 1.0


@dataclass(frozen=True)
class SongRequest:
    task: str = "generate"
    title: str = ""
    caption: str = ""
    lyrics: str = ""
    instrumental: bool = False
    duration: float = 60.0
    seed: int | None = None
    takes: int = 1
    bpm: int | None = None
    key: str | None = None
    time_signature: int | None = None
    language: str = "en"
    steps: int | None = None
    guidance: float | None = None
    shift: float = 3.0
    cfg_start: float = 0.0
    cfg_end: float = 1.0
    infer_method: str = "ode"
    # Songs that start from audio: library item ids (uploads are library items too).
    source_id: str | None = None
    reference_id: str | None = None
    cover_strength: float = 1.0
    region_start: float | None = None
    region_end: float | None = None
    extend_seconds: float = 30.0
    extend_side: str = "end"
    context_seconds: float | None = None
    thinking: Thinking = field(default_factory=Thinking)
    audio_codes: str | None = None
    loras: tuple[LoraChoice, ...] = ()

    @property
    def sung_lyrics(self) -> str:
        """What the DiT reads as lyrics: instrumental always wins over typed lyrics."""
        if self.instrumental or not self.lyrics.strip():
            return music.INSTRUMENTAL_LYRICS
        return self.lyrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SongRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("thinking"), dict):
            thinking_known = {f.name for f in fields(Thinking)}
            values["thinking"] = Thinking(
                **{k: v for k, v in values["thinking"].items() if k in thinking_known}
            )
        values["loras"] = tuple(
            lora if isinstance(lora, LoraChoice) else LoraChoice(**lora)
            for lora in values.get("loras", ())
        )
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> SongRequest:
        return cls.from_dict(json.loads(text))

    def with_seed(self, seed: int) -> SongRequest:
        return replace(self, seed=seed)


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class InvalidRequest(ValueError):
    """One or more fields are out of range; each problem names its field and the allowed range."""

    def __init__(self, problems: list[FieldProblem]):
        self.problems = problems
        super().__init__(" ".join(p.message for p in problems))


def resolve_seed(seed: int | None) -> int:
    if seed is None or seed < 0:
        return random.randint(1, SEED_MAX)
    return seed


def take_seeds(first_seed: int, takes: int) -> list[int]:
    """Seeds of the takes in one request: consecutive, so take N is reproducible on its own."""
    return [(first_seed + index) % (SEED_MAX + 1) for index in range(takes)]


def validate(request: SongRequest, settings: Settings) -> SongRequest:
    """Check every field and return the request with its key and language normalised."""
    problems: list[FieldProblem] = []

    def problem(name: str, message: str) -> None:
        problems.append(FieldProblem(name, message))

    if request.task not in TASKS:
        problem("task", f"Task must be one of {', '.join(TASKS)}.")
    caption = request.caption.strip()
    if not caption and request.task in ("generate", "cover", "extend", "edit"):
        problem("caption", "Caption is required: describe the style, instruments and mood.")
    if len(caption) > CAPTION_MAX_CHARS:
        problem(
            "caption",
            f"Caption must be at most {CAPTION_MAX_CHARS} characters (it has {len(caption)}).",
        )
    if len(request.lyrics) > LYRICS_MAX_CHARS:
        problem(
            "lyrics",
            f"Lyrics must be at most {LYRICS_MAX_CHARS} characters "
            f"(they have {len(request.lyrics)}).",
        )
    if request.task == "generate" and not DURATION_MIN <= request.duration <= settings.max_duration:
        problem(
            "duration",
            f"Duration must be between {DURATION_MIN} and {settings.max_duration} seconds "
            f"(got {request.duration:g}).",
        )
    if not 1 <= request.takes <= settings.max_takes:
        problem("takes", f"Takes must be between 1 and {settings.max_takes} (got {request.takes}).")
    if request.seed is not None and not -1 <= request.seed <= SEED_MAX:
        problem("seed", f"Seed must be between 0 and {SEED_MAX}, or -1 for random.")
    low, high = music.BPM_RANGE
    if request.bpm is not None and not low <= request.bpm <= high:
        problem("bpm", f"BPM must be between {low} and {high} (got {request.bpm}).")
    key = None
    if request.key:
        key = music.normalise_key(request.key)
        if key is None:
            problem(
                "key",
                f"Key {request.key!r} is not one ACE-Step knows: use a note A–G, an optional "
                "# or b, and major or minor (e.g. 'A minor', 'F# major', 'Bb').",
            )
    if request.time_signature is not None and request.time_signature not in music.TIME_SIGNATURES:
        problem("time_signature", "Time signature must be 2, 3, 4 or 6 beats per bar.")
    language = request.language.strip().lower()
    if language not in music.LANGUAGES:
        problem("language", f"Vocal language {request.language!r} is not one of the 51 codes.")
    if request.steps is not None and not 1 <= request.steps <= 200:
        problem("steps", f"Steps must be between 1 and 200 (got {request.steps}).")
    if request.guidance is not None and not 1.0 <= request.guidance <= 15.0:
        problem("guidance", f"Guidance must be between 1 and 15 (got {request.guidance:g}).")
    if not 1.0 <= request.shift <= 5.0:
        problem("shift", f"Shift must be between 1 and 5 (got {request.shift:g}).")
    if not 0.0 <= request.cfg_start < request.cfg_end <= 1.0:
        problem(
            "cfg_interval",
            "CFG interval must satisfy 0 ≤ start < end ≤ 1 "
            f"(got {request.cfg_start:g}–{request.cfg_end:g}).",
        )
    if request.infer_method not in INFER_METHODS:
        problem("infer_method", "Infer method must be ode or sde.")
    if request.task in ("cover", "extend", "edit") and not request.source_id:
        problem("source", "Choose a source song: upload a file or pick a take from the library.")
    if not 0.0 <= request.cover_strength <= 1.0:
        problem("cover_strength", "Cover strength must be between 0 and 1.")
    if request.task == "extend":
        low_s, high_s = EXTEND_RANGE
        if not low_s <= request.extend_seconds <= high_s:
            problem(
                "extend_seconds",
                f"Extension must be between {low_s:g} and {high_s:g} seconds "
                f"(got {request.extend_seconds:g}).",
            )
        if request.extend_side not in ("end", "start"):
            problem("extend_side", "Extend at the end or at the start.")
        if request.context_seconds is not None and request.context_seconds < 5:
            problem("context_seconds", "Context must be at least 5 seconds, or all of the song.")
    if request.task == "edit":
        start, end = request.region_start, request.region_end
        low_r, high_r = EDIT_REGION_RANGE
        if start is None or end is None or start < 0 or end <= start:
            problem("region", "Choose a region: its end must come after its start.")
        elif not low_r <= end - start <= high_r:
            problem(
                "region",
                f"The region must be {low_r:g}–{high_r:g} seconds long "
                f"(it is {end - start:.1f} s).",
            )
    thinking = request.thinking
    if thinking.enabled:
        if not 0.0 <= thinking.temperature <= 2.0:
            problem("thinking.temperature", "Planner temperature must be between 0 and 2.")
        if not 0.0 < thinking.top_p <= 1.0:
            problem("thinking.top_p", "Planner top-p must be above 0 and at most 1.")
        if not 0 <= thinking.top_k <= 200:
            problem("thinking.top_k", "Planner top-k must be between 0 (off) and 200.")
        if not 1.0 <= thinking.cfg_scale <= 5.0:
            problem("thinking.cfg_scale", "Planner CFG scale must be between 1 and 5.")
    for lora in request.loras:
        if not 0.0 <= lora.scale <= 1.5:
            problem("loras", f"LoRA {lora.name!r} weight must be between 0 and 1.5.")
    if problems:
        raise InvalidRequest(problems)
    return replace(request, caption=caption, key=key, language=language)


# --- The request in a page URL -------------------------------------------------------------

_QUERY_FIELDS: tuple[str, ...] = tuple(
    "title caption lyrics instrumental duration seed takes bpm key time_signature language steps "
    "guidance shift cfg_start cfg_end infer_method cover_strength region_start region_end "
    "extend_seconds extend_side context_seconds source_id reference_id".split()
)


def to_query(request: SongRequest) -> dict[str, str]:
    """The fields that differ from the defaults, as URL query strings."""
    default = SongRequest()
    query: dict[str, str] = {}
    for name in _QUERY_FIELDS:
        value = getattr(request, name)
        if value != getattr(default, name) and value is not None:
            query[name] = str(int(value)) if isinstance(value, bool) else str(value)
    thinking = request.thinking
    if thinking != Thinking():
        query["thinking"] = json.dumps(asdict(thinking), separators=(",", ":"))
    if request.loras:
        query["loras"] = json.dumps([asdict(lora) for lora in request.loras], separators=(",", ":"))
    return query


def from_query(query: dict[str, str], base: SongRequest | None = None) -> SongRequest:
    """Rebuild a request from URL query strings; unparseable values keep the default."""
    request = base or SongRequest()
    values: dict[str, Any] = {}
    types = {f.name: type(getattr(SongRequest(), f.name)) for f in fields(SongRequest)}
    optional_ints = {"seed", "bpm", "time_signature", "steps"}
    optional_floats = {"guidance", "region_start", "region_end", "context_seconds"}
    for name in _QUERY_FIELDS:
        if name not in query:
            continue
        raw = query[name]
        try:
            if name in optional_ints:
                values[name] = int(float(raw))
            elif name in optional_floats:
                values[name] = float(raw)
            elif types[name] is bool:
                values[name] = raw in ("1", "true", "True")
            elif types[name] is int:
                values[name] = int(float(raw))
            elif types[name] is float:
                values[name] = float(raw)
            else:
                values[name] = raw
        except ValueError:
            continue
    if "thinking" in query:
        with contextlib.suppress(ValueError, TypeError):
            values["thinking"] = Thinking(**json.loads(query["thinking"]))
    if "loras" in query:
        with contextlib.suppress(ValueError, TypeError):
            values["loras"] = tuple(LoraChoice(**lora) for lora in json.loads(query["loras"]))
    return replace(request, **values)
