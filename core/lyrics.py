"""The lyric writer: a songwriter prompt, Qwen2.5-7B-Instruct, and the "lyrics" job.

A draft is written in four steps that read top to bottom in `write_draft`:
prompt messages → prompt token ids → new tokens (streamed, seeded) → tidy ACE-Step lyrics.

Two backends sit behind one small interface (`LyricWriter`): transformers on CUDA and CPU,
and mlx-lm on Apple Silicon. Both see the same prompt and the same sampling settings, and
both decode only the tokens they generated, never the prompt.
"""

from __future__ import annotations

import logging
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from core import music
from core.jobs import Job, JobContext, StudioError
from core.models import ModelError, ModelSlot, is_local_source
from core.request import (
    CAPTION_MAX_CHARS,
    LYRICS_MAX_CHARS,
    SEED_MAX,
    FieldProblem,
    InvalidRequest,
    SongRequest,
    resolve_seed,
)
from vendor.models import WRITER_MODELS

if TYPE_CHECKING:
    from core.library import Item
    from core.studio import Studio

log = logging.getLogger(__name__)

SLOT_KEY = "writer"
SLOT_LABEL = "lyric writer"
JOB_KIND = "lyrics"
BACKENDS = ("transformers", "mlx")
# Config, tokenizer and safetensors weights: what both backends read from a checkpoint.
WRITER_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]
MLX_LM_MIN_VERSION = (0, 31)

RHYMES = ("strict", "loose", "none")
DEFAULT_STRUCTURE = "intro, verse, chorus, verse, chorus, bridge, chorus, outro"
# Qwen2.5-Instruct's own generation_config value. A stronger penalty (the previous app used
# 1.1) keeps a chorus from repeating word for word, and a chorus should.
REPETITION_PENALTY = 1.05

BRIEF_MAX_CHARS = 2000
STRUCTURE_MAX_CHARS = 300
TONE_MAX_CHARS = 200
LINE_RANGES = {"verse_lines": (2, 10), "chorus_lines": (2, 8), "bridge_lines": (1, 6)}
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_K_RANGE = (0, 200)
MAX_TOKENS_RANGE = (100, 2000)


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LyricsRequest:
    """What the musician asks the writer for. Defaults follow the previous app's Lyrics tab."""

    brief: str = ""
    structure: str = DEFAULT_STRUCTURE
    language: str = "en"
    tone: str = ""
    rhyme: str = "loose"
    verse_lines: int = 6
    chorus_lines: int = 4
    bridge_lines: int = 2
    temperature: float = 0.85
    top_p: float = 0.9
    top_k: int = 40
    max_tokens: int = 600
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LyricsRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


def validate_lyrics_request(request: LyricsRequest) -> LyricsRequest:
    """The request with its text trimmed, or InvalidRequest naming every problem."""
    request = replace(
        request,
        brief=request.brief.strip(),
        structure=request.structure.strip(),
        tone=request.tone.strip(),
    )
    problems: list[FieldProblem] = []

    def problem(name: str, message: str) -> None:
        problems.append(FieldProblem(name, message))

    if not request.brief:
        problem("brief", "Write a brief: what the song is about, its mood, any lines to use.")
    elif len(request.brief) > BRIEF_MAX_CHARS:
        problem(
            "brief",
            f"The brief is {len(request.brief)} characters; keep it under {BRIEF_MAX_CHARS}.",
        )
    if not section_tags(request.structure):
        problem(
            "structure", "Give a structure, e.g. 'verse, chorus, verse, chorus, bridge, chorus'."
        )
    elif len(request.structure) > STRUCTURE_MAX_CHARS:
        problem("structure", f"Keep the structure under {STRUCTURE_MAX_CHARS} characters.")
    if request.language not in WRITING_LANGUAGES:
        problem("language", f"Unknown language {request.language!r}.")
    if len(request.tone) > TONE_MAX_CHARS:
        problem("tone", f"Keep the tone under {TONE_MAX_CHARS} characters.")
    if request.rhyme not in RHYMES:
        problem("rhyme", "Rhyme must be strict, loose or none.")
    for name, (low, high) in LINE_RANGES.items():
        value = getattr(request, name)
        if not low <= value <= high:
            section = name.removesuffix("_lines")
            problem(name, f"Lines per {section} must be between {low} and {high}.")
    if not TEMPERATURE_RANGE[0] <= request.temperature <= TEMPERATURE_RANGE[1]:
        problem("temperature", "Temperature must be between 0 and 2.")
    if not 0.0 < request.top_p <= 1.0:
        problem("top_p", "Top-p must be above 0 and at most 1.")
    if not TOP_K_RANGE[0] <= request.top_k <= TOP_K_RANGE[1]:
        problem("top_k", "Top-k must be between 0 (off) and 200.")
    if not MAX_TOKENS_RANGE[0] <= request.max_tokens <= MAX_TOKENS_RANGE[1]:
        problem("max_tokens", "Max tokens must be between 100 and 2000.")
    if request.seed is not None and not 0 <= request.seed <= SEED_MAX:
        problem("seed", f"The seed must be between 0 and {SEED_MAX}.")
    if problems:
        raise InvalidRequest(problems)
    return request


# Every language ACE-Step sings, less "unknown": the writer must be told one.
WRITING_LANGUAGES: tuple[str, ...] = tuple(code for code in music.LANGUAGES if code != "unknown")


# --- section tags ----------------------------------------------------------------------------

# Canonical spelling of the section names ACE-Step's own examples use, e.g. [Verse 1],
# [Pre-Chorus], [Chorus - powerful]. Keys are lower-case, without spaces or hyphens.
SECTION_NAMES: dict[str, str] = {
    "intro": "Intro",
    "verse": "Verse",
    "prechorus": "Pre-Chorus",
    "chorus": "Chorus",
    "postchorus": "Post-Chorus",
    "hook": "Hook",
    "refrain": "Refrain",
    "bridge": "Bridge",
    "breakdown": "Breakdown",
    "break": "Break",
    "buildup": "Build-Up",
    "build": "Build",
    "drop": "Drop",
    "interlude": "Interlude",
    "instrumental": "Instrumental",
    "solo": "Solo",
    "rap": "Rap",
    "spoken": "Spoken",
    "spokenword": "Spoken Word",
    "outro": "Outro",
    "coda": "Coda",
    "ending": "Ending",
    "end": "End",
    "fadeout": "Fade Out",
}
# Longer names first, so "breakdown" is not read as "break" plus "down".
_SECTION_WORDS = (
    r"pre[\s-]?chorus|post[\s-]?chorus|spoken[\s-]?word|build[\s-]?up|fade[\s-]?out|intro|"
    r"verse|chorus|hook|refrain|bridge|breakdown|break|build|drop|interlude|instrumental|solo|"
    r"rap|spoken|outro|coda|ending|end"
)
# Inside brackets anything may follow the name: "[Chorus - powerful]", "[Verse 2: softer]".
_TAG_INNER = re.compile(
    rf"^(?P<name>{_SECTION_WORDS})(?:\s*(?P<number>\d+))?"
    r"(?:\s*(?:[-–—:]|\(|\s)\s*(?P<qualifier>[^()\[\]]*?)\)?)?\s*$",
    re.IGNORECASE,
)
# Outside brackets only a bare name counts ("Verse 1:", "**Chorus**", "Chorus (x2)"), so a
# sung line such as "Drop it low" or "Break free" stays a line.
_BARE_HEAD = re.compile(
    rf"^(?P<name>{_SECTION_WORDS})(?:\s*(?P<number>\d+))?(?:\s*\((?P<qualifier>[^()]*)\))?$",
    re.IGNORECASE,
)
_BRACKET_LINE = re.compile(r"^\[(?P<inner>[^\[\]]+)\]\s*(?P<rest>.*)$")


def _section_key(name: str) -> str:
    return re.sub(r"[\s\-]", "", name.lower())


def canonical_tag(inner: str) -> str:
    """A section name as ACE-Step writes it: "verse 1" → "[Verse 1]", "chorus - big" → "[Chorus - big]"."""
    inner = " ".join(inner.split())
    match = _TAG_INNER.match(inner)
    if match is None:
        # An unknown tag keeps its words, capitalised like the known ones: "[Guitar Solo]".
        return "[" + " ".join(word[:1].upper() + word[1:] for word in inner.split()) + "]"
    name = SECTION_NAMES[_section_key(match["name"])]
    if match["number"]:
        name += f" {int(match['number'])}"
    if match["qualifier"] and match["qualifier"].strip():
        name += f" - {match['qualifier'].strip()}"
    return f"[{name}]"


def section_tags(structure: str) -> list[str]:
    """The tags a structure asks for, verses numbered: "verse, chorus, verse" → [Verse 1], [Chorus], [Verse 2]."""
    parts = [part.strip(" .[]") for part in re.split(r"[,;\n|/]|->|→", structure)]
    tags: list[str] = []
    verses = 0
    for part in parts:
        if not part:
            continue
        tag = canonical_tag(part)
        if tag == "[Verse]":
            verses += 1
            tag = f"[Verse {verses}]"
        elif tag.startswith("[Verse "):
            verses = max(verses, _verse_number(tag))
        tags.append(tag)
    return tags


def _verse_number(tag: str) -> int:
    match = re.match(r"\[Verse (\d+)", tag)
    return int(match.group(1)) if match else 0


# --- the prompt ------------------------------------------------------------------------------

SYSTEM_PROMPT = """\
You are a professional songwriter. You write lyrics for ACE-Step, an AI music generator, \
and output ONLY the lyrics.

Format:
- Each section starts with its tag on a line of its own, in square brackets: [Intro], \
[Verse 1], [Verse 2], [Pre-Chorus], [Chorus], [Bridge], [Outro].
- The section's sung lines follow directly under its tag, one line per line.
- One blank line between sections; no blank lines inside a section.
- Number the verses. A repeated chorus keeps the tag [Chorus] and may repeat its lines.
- An instrumental intro or outro may be a tag with no lines, or one short line.

Never write a title, notes, explanations, chord names, markdown, bullet points or quotation \
marks. Write in the requested language only, match the tone, and follow the rhyme scheme."""

RHYME_RULES = {
    "strict": "strict: every line pair rhymes (AABB or ABAB) with clean end rhymes",
    "loose": "loose: near and slant rhymes are welcome; rhyme where it sounds natural",
    "none": "none: free verse; do not force rhymes",
}


def build_messages(request: LyricsRequest) -> list[dict[str, str]]:
    """The chat the writer answers: a songwriter system prompt and the musician's request."""
    language = music.LANGUAGE_NAMES.get(request.language, request.language)
    user = "\n".join(
        [
            f"Write lyrics with this structure: {', '.join(section_tags(request.structure))}.",
            f"Language: {language}. Tone: {request.tone or 'neutral'}. "
            f"Rhyme: {RHYME_RULES[request.rhyme]}.",
            f"Verse: {request.verse_lines} lines. Chorus: {request.chorus_lines} lines. "
            f"Bridge: {request.bridge_lines} lines.",
            "Brief:",
            request.brief,
        ]
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --- tidying the output ----------------------------------------------------------------------

_FENCE_OR_RULE = re.compile(r"^(```.*|[-*_=]{3,})$")
_EMPHASIS = re.compile(r"^(\*\*|__|\*|_)(?P<inner>.+?)\1$")


def _clean_line(line: str) -> str | None:
    """One output line without markdown; None for lines that are only markdown."""
    line = line.strip()
    if _FENCE_OR_RULE.match(line):
        return None
    line = re.sub(r"^#{1,6}\s*", "", line)
    match = _EMPHASIS.match(line)
    while match:
        line = match["inner"].strip()
        match = _EMPHASIS.match(line)
    return line


def _split_tag(line: str, marked: bool) -> tuple[str | None, str]:
    """(canonical tag, rest of the line) when the line opens a section, else (None, line).

    `marked`: the line carried markdown (a heading, bold), which makes a bare name a header.
    """
    bracket = _BRACKET_LINE.match(line)
    if bracket:
        rest = bracket["rest"].strip()
        if not rest:
            return canonical_tag(bracket["inner"]), ""
        # "[Chorus] Oh, oh": a known section with its first line on the same line.
        if _TAG_INNER.match(" ".join(bracket["inner"].split())):
            return canonical_tag(bracket["inner"]), rest
        return None, line
    # Outside brackets a section name is a header when it says so: "Verse 1:", "(Chorus)",
    # "**Bridge**", "Chorus". A lower-case "hook" or "drop" alone is more likely sung.
    in_parentheses = line.startswith("(") and line.endswith(")")
    bare = line[1:-1] if in_parentheses else line
    with_colon = bare.endswith(":")
    bare = bare.rstrip(":").strip()
    header_like = in_parentheses or with_colon or marked or bare[:1].isupper()
    if bare and header_like and _BARE_HEAD.match(bare):
        return canonical_tag(bare), ""
    return None, line


def normalise_lyrics(text: str) -> str:
    """Lyrics in ACE-Step's format: canonical tags, each followed by its lines, sections
    separated by one blank line, nothing before the first tag or after the last section.

    Text without any tag is kept (tidied): the musician can still add tags by hand.
    """
    entries: list[tuple[str, str]] = []  # ("tag" | "line" | "blank", text)
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = _clean_line(raw)
        if line is None:
            continue
        if not line:
            entries.append(("blank", ""))
            continue
        tag, rest = _split_tag(line, marked=line != raw.strip())
        if tag:
            entries.append(("tag", tag))
        if rest:
            entries.append(("line", rest))
    tag_positions = [i for i, (kind, _) in enumerate(entries) if kind == "tag"]
    if not tag_positions:
        return _join_block([value for kind, value in entries], keep_blank_runs=True)

    sections: list[tuple[str, list[str]]] = []
    for index, start in enumerate(tag_positions):
        end = tag_positions[index + 1] if index + 1 < len(tag_positions) else len(entries)
        body = entries[start + 1 : end]
        lines: list[str] = []
        last_section = index == len(tag_positions) - 1
        for kind, value in body:
            if kind == "blank":
                # After the last section a blank line ends the song: what follows is commentary.
                if last_section and lines:
                    break
                continue
            lines.append(value)
        sections.append((entries[start][1], lines))
    return "\n\n".join("\n".join([tag, *lines]) for tag, lines in sections)


def _join_block(lines: list[str], keep_blank_runs: bool) -> str:
    text = "\n".join(lines)
    if keep_blank_runs:
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def suggest_caption(request: LyricsRequest) -> str:
    """A starting caption for Generate, from the tone and the brief's first sentence."""
    first = re.split(r"(?<=[.!?])\s|\n", request.brief.strip(), maxsplit=1)[0].strip().rstrip(".!")
    if first[:1].isupper() and not first[1:2].isupper():
        first = first[0].lower() + first[1:]
    parts = [request.tone.strip().rstrip(".,"), first]
    if request.language != "en":
        parts.append(f"{music.LANGUAGE_NAMES.get(request.language, request.language)} vocals")
    return ", ".join(part for part in parts if part)[:CAPTION_MAX_CHARS]


def suggest_title(request: LyricsRequest) -> str:
    first = request.brief.strip().split("\n", 1)[0]
    return first[:60].rstrip() + ("…" if len(first) > 60 else "")


# --- backends ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn; the same settings reach every backend."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float = REPETITION_PENALTY

    @classmethod
    def of(cls, request: LyricsRequest) -> Sampling:
        return cls(request.temperature, request.top_p, request.top_k)


TokenCallback = Callable[[list[int]], None]


class LyricWriter(Protocol):
    """One loaded writer model. `generate` returns the new token ids, never the prompt's,
    and hands them to `on_tokens` as they arrive (it may raise to stop the writing)."""

    backend: str
    device: str

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]: ...

    def generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        seed: int,
        max_new_tokens: int,
        on_tokens: TokenCallback,
    ) -> list[int]: ...

    def decode(self, token_ids: list[int]) -> str: ...


def draft_text(writer: LyricWriter, sequence: list[int], prompt_length: int) -> str:
    """The text of the generated tokens only, sliced by token count, not by string length.

    Slicing the decoded string at len(prompt) goes wrong whenever decoding does not round-
    trip the prompt exactly (special tokens skipped, spaces cleaned up), so slice the ids.
    """
    return writer.decode(sequence[prompt_length:])


class TransformersWriter:
    """Qwen2.5-Instruct through transformers, decoded by the shared fast decoder: a static KV
    cache and one CUDA graph per draft on CUDA (bf16), the same functions eagerly on CPU."""

    backend = "transformers"

    def __init__(self, model: Any, tokenizer: Any, device: str, *, fast: bool = True):
        from core import fast_decode

        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.stop_ids = _stop_token_ids(model, tokenizer)
        backend = "static" if fast else "hf"
        try:
            self.decoder = fast_decode.Decoder(model, backend=backend)
        except fast_decode.UnsupportedModel as error:
            log.warning("lyric writer decodes without the fast path: %s", error)
            self.decoder = fast_decode.Decoder(model, backend="hf")

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        seed: int,
        max_new_tokens: int,
        on_tokens: TokenCallback,
    ) -> list[int]:
        from core import fast_decode

        penalty = None
        if sampling.repetition_penalty != 1.0:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            penalty = RepetitionPenalty(vocab, sampling.repetition_penalty)
        result = self.decoder.generate(
            [prompt_ids],
            max_new_tokens=max_new_tokens,
            sampling=fast_decode.Sampling(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                seed=seed,
            ),
            stop_ids=sorted(self.stop_ids),
            constraint=penalty,
            on_tokens=on_tokens,
            sync_every=1,
            pad_id=self.tokenizer.pad_token_id or 0,
        )
        return result.tokens

    def move_to(self, device: str) -> None:
        """For the residency manager; the decoder keeps no tensors between drafts."""
        self.model.to(device)
        self.device = device


class RepetitionPenalty:
    """transformers' repetition penalty over the tokens written so far, as a fast-decode
    constraint: its state is a tensor, so it runs inside the captured CUDA graph."""

    def __init__(self, vocab_size: int, penalty: float):
        self.vocab_size = vocab_size
        self.penalty = penalty
        self.written: Any = None

    def reset(self, device: Any) -> None:
        import torch

        self.written = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)

    def mask(self, logits: Any) -> Any:
        import torch

        penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(self.written, penalised, logits)

    def advance(self, token_id: Any) -> None:
        self.written.index_fill_(0, token_id.view(1), True)


def _stop_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """EOS ids: the generation config's list (Qwen2.5: <|im_end|>, <|endoftext|>) and the
    tokenizer's own, so a chat turn ends however the checkpoint spells its end."""
    ids: set[int] = set()
    generation = getattr(model, "generation_config", None)
    configured = getattr(generation, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(token) for token in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for token in ("<|im_end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id >= 0:
            ids.add(token_id)
    return frozenset(ids)


# --- mlx-lm (Apple Silicon) -------------------------------------------------------------------


def mlx_status() -> tuple[bool, str]:
    """Whether mlx-lm can run here, and if not, why (for the message on the page)."""
    try:
        import mlx.core  # noqa: F401
        import mlx_lm
    except ImportError:  # not installed, or libmlx missing (a plain `pip install mlx` on Linux)
        return False, "mlx-lm is not installed (pip install 'mlx-lm>=0.31' on Apple Silicon)."
    version = tuple(int(part) for part in re.findall(r"\d+", mlx_lm.__version__)[:2])
    if version < MLX_LM_MIN_VERSION:
        # Older mlx-lm creates its generation stream at import, on the main thread, and
        # generating from the Studio's worker thread then fails.
        return False, f"mlx-lm {mlx_lm.__version__} is too old; the Studio needs 0.31 or newer."
    return True, ""


def is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def mlx_sampler_arguments(sampling: Sampling) -> dict[str, Any]:
    """Arguments for mlx_lm.sample_utils.make_sampler; mlx spells "off" as 0 for top-p too."""
    return {
        "temp": float(sampling.temperature),
        "top_p": float(sampling.top_p) if sampling.top_p < 1.0 else 0.0,
        "top_k": int(sampling.top_k),
        "min_p": 0.0,
    }


def mlx_logits_processor_arguments(sampling: Sampling) -> dict[str, Any]:
    """Arguments for mlx_lm.sample_utils.make_logits_processors."""
    return {"repetition_penalty": float(sampling.repetition_penalty)}


class MlxWriter:
    """Qwen2.5-Instruct 4-bit through mlx-lm, on Apple Silicon's unified memory."""

    backend = "mlx"
    device = "mps"

    def __init__(self, model: Any, tokenizer: Any):
        self.model = model
        self.tokenizer = tokenizer

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        seed: int,
        max_new_tokens: int,
        on_tokens: TokenCallback,
    ) -> list[int]:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx.random.seed(seed)
        responses = stream_generate(
            self.model,
            self.tokenizer,
            prompt=prompt_ids,
            max_tokens=max_new_tokens,
            sampler=make_sampler(**mlx_sampler_arguments(sampling)),
            logits_processors=make_logits_processors(**mlx_logits_processor_arguments(sampling)),
        )
        tokens: list[int] = []
        for response in responses:
            # The closing response repeats the EOS it stopped on; a "length" one is new.
            if response.finish_reason == "stop":
                break
            tokens.append(int(response.token))
            on_tokens([int(response.token)])
        return tokens


# --- loading --------------------------------------------------------------------------------


def choose_backend(setting: str) -> str:
    """auto: mlx on Apple Silicon when mlx-lm is importable, transformers everywhere else."""
    if setting in BACKENDS:
        return setting
    if setting != "auto":
        raise ModelError(
            f"ACE_STUDIO_WRITER_BACKEND must be auto, transformers or mlx, not {setting!r}."
        )
    return "mlx" if is_apple_silicon() and mlx_status()[0] else "transformers"


def load_writer(
    folder: Path, *, backend: str, device: str, dtype: Any, fast: bool = True
) -> LyricWriter:
    """The slot's loader: a local folder in the checkpoint's own layout, for either backend."""
    if backend == "mlx":
        available, reason = mlx_status()
        if not available:
            raise ModelError(f"The lyric writer is set to mlx, but {reason}")
        from mlx_lm import load as mlx_load

        model, tokenizer = mlx_load(str(folder))
        return MlxWriter(model, tokenizer)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").exists():
        raise ModelError(f"{folder} is not a transformers checkpoint: it has no config.json.")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not tokenizer.chat_template:
        raise ModelError(
            f"{folder} has no chat template; the lyric writer needs an instruct model such as "
            f"{WRITER_MODELS['transformers'].repo_id}."
        )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, device_map=device)
    model.eval()
    writer = TransformersWriter(model, tokenizer, device, fast=fast)
    if device == "cuda":
        # cuBLAS handles and kernel choices are made on first use: pay for them while
        # loading, so the first draft's first token comes within a second.
        writer.generate([0, 1], Sampling(1.0, 1.0, 0), 0, 2, lambda _: None)
    return writer


def writer_slot(studio: Studio) -> ModelSlot:
    for slot in studio.extra_slots:
        if slot.key == SLOT_KEY:
            return slot
    raise StudioError("This Studio has no lyric writer.")


def _make_slot(studio: Studio) -> ModelSlot:
    from core.device import lm_dtype

    settings = studio.settings
    try:
        backend = choose_backend(settings.writer_backend)
    except ModelError:
        backend = settings.writer_backend  # the loader repeats the message on the page
    source = settings.writer_mlx_model if backend == "mlx" else settings.writer_model
    facts = WRITER_MODELS.get(backend, WRITER_MODELS["transformers"])
    return ModelSlot(
        SLOT_KEY,
        SLOT_LABEL,
        source,
        partial(
            _load_for_slot,
            setting=settings.writer_backend,
            device=studio.device,
            dtype=lm_dtype(studio.device),
            fast=settings.fast_decode,
        ),
        expected_bytes=0 if is_local_source(source) else facts.weight_bytes,
        allow_patterns=WRITER_FILES,
    )


def _load_for_slot(
    folder: Path, *, setting: str, device: str, dtype: Any, fast: bool
) -> LyricWriter:
    backend = choose_backend(setting)
    return load_writer(folder, backend=backend, device=device, dtype=dtype, fast=fast)


# --- writing a draft --------------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    lyrics: str
    raw_text: str
    tokens: int
    seconds: float
    first_token_seconds: float | None

    @property
    def tokens_per_second(self) -> float:
        """The steady writing pace, after the first token (which includes the prompt)."""
        if self.first_token_seconds is None or self.tokens < 2:
            return 0.0
        return (self.tokens - 1) / max(self.seconds - self.first_token_seconds, 1e-9)


def write_draft(
    writer: LyricWriter,
    request: LyricsRequest,
    seed: int,
    on_text: Callable[[str, int], None] | None = None,
) -> Draft:
    """Write one draft. `on_text(lyrics_so_far, token_count)` runs as tokens arrive; an
    exception it raises (a cancel) stops the writing."""
    prompt = writer.prompt_ids(build_messages(request))
    sequence = list(prompt)
    started = time.perf_counter()
    first_token: float | None = None

    def on_tokens(new: list[int]) -> None:
        nonlocal first_token
        if first_token is None:
            first_token = time.perf_counter() - started
        sequence.extend(new)
        if on_text is not None:
            # A multi-byte character split across tokens decodes as U+FFFD until complete.
            partial_text = draft_text(writer, sequence, len(prompt)).rstrip("\ufffd")
            on_text(normalise_lyrics(partial_text), len(sequence) - len(prompt))

    tokens = writer.generate(prompt, Sampling.of(request), seed, request.max_tokens, on_tokens)
    seconds = time.perf_counter() - started
    raw = draft_text(writer, [*prompt, *tokens], len(prompt))
    return Draft(
        lyrics=normalise_lyrics(raw),
        raw_text=raw,
        tokens=len(tokens),
        seconds=seconds,
        first_token_seconds=first_token,
    )


# --- the job and the library ------------------------------------------------------------------


def submit_lyrics(studio: Studio, request: LyricsRequest) -> Job:
    """Validate (raising InvalidRequest) and queue a draft behind any songs in the queue."""
    request = validate_lyrics_request(request)
    return studio.jobs.submit(JOB_KIND, {"request": request.to_dict()})


def run_lyrics_job(studio: Studio, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
    request = validate_lyrics_request(LyricsRequest.from_dict(payload["request"]))
    slot = writer_slot(studio)
    ctx.progress("loading the lyric writer", 0, 1)
    started = time.time()
    writer = _ensure_writer(slot)
    ctx.record_timing("load_seconds", time.time() - started)
    seed = resolve_seed(request.seed)

    def on_text(text: str, count: int) -> None:
        ctx.stream_text(text)
        ctx.progress("writing", count, request.max_tokens)

    try:
        draft = write_draft(writer, request, seed, on_text)
    except Exception as error:
        from core.device import is_out_of_memory

        if is_out_of_memory(error):
            raise StudioError(
                "The GPU ran out of memory while writing. Lower the max tokens, or wait for "
                "the song in progress to finish; nothing was lost."
            ) from error
        raise
    ctx.stream_text(draft.lyrics)
    ctx.record_timing("first_token_seconds", draft.first_token_seconds or 0.0)
    ctx.record_timing("writing_seconds", draft.seconds)
    if not draft.lyrics:
        ctx.note("The writer returned no lyrics. Try another seed or a higher temperature.")
    return {
        "lyrics": draft.lyrics,
        "caption": suggest_caption(request),
        "title": suggest_title(request),
        "seed": seed,
        "request": replace(request, seed=seed).to_dict(),
        "tokens": draft.tokens,
        "tokens_per_second": round(draft.tokens_per_second, 1),
        "backend": writer.backend,
        "model": slot.display_source,
    }


def _ensure_writer(slot: ModelSlot) -> LyricWriter:
    try:
        return slot.ensure()
    except ModelError as error:
        raise StudioError(str(error)) from error


def keep_draft(
    studio: Studio,
    lyrics: str,
    *,
    request: LyricsRequest,
    title: str = "",
    job_id: str | None = None,
    parent_id: str | None = None,
    model: str = "",
) -> Item:
    """Save a draft (as written or edited) to the library, with the settings that wrote it."""
    lyrics = lyrics.strip()
    if not lyrics:
        raise StudioError("There are no lyrics to keep yet.")
    meta = {
        "lyrics": lyrics,
        "request": request.to_dict(),
        "caption_suggestion": suggest_caption(request),
        "model": model,
        "characters": len(lyrics),
    }
    return studio.library.add(
        "lyrics",
        meta,
        files={"lyrics.txt": lyrics.encode("utf-8")},
        title=title.strip() or suggest_title(request),
        caption=suggest_caption(request),
        job_id=job_id,
        parent_id=parent_id,
        operation="edit" if parent_id else "write",
    )


def kept_drafts(studio: Studio, limit: int = 50) -> list[Item]:
    return studio.library.list(kinds=("lyrics",), limit=limit)


def song_request_for(base: SongRequest, *, lyrics: str, caption: str, language: str) -> SongRequest:
    """The Generate form's request with a draft's lyrics, caption and language filled in."""
    return replace(
        base,
        lyrics=lyrics.strip(),
        caption=caption.strip()[:CAPTION_MAX_CHARS] or base.caption,
        language=language if language in music.LANGUAGES else base.language,
        instrumental=False,
    )


def over_limit(lyrics: str) -> bool:
    """ACE-Step reads at most 4096 characters (about 2048 tokens) of lyrics."""
    return len(lyrics) > LYRICS_MAX_CHARS


def install(studio: Studio) -> None:
    studio.extra_slots.append(_make_slot(studio))
    studio.handlers[JOB_KIND] = partial(run_lyrics_job, studio)
