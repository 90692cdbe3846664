"""The 5 Hz LM planner ("thinking"): caption, metadata and audio codes before the DiT runs.

A song request with thinking on flows through `Planner.plan_song`, which the song engine calls
between validation and conditioning:

1. **chain of thought** (phase 1): the planner rewrites the caption and infers bpm, key, time
   signature, duration and language, under the constrained-decoding state machine of
   `core.planner_fsm`; fields the musician set are force-decoded. Skipped, as upstream skips it,
   when bpm, key, time signature and duration are all set;
2. **audio codes** (phase 2): 5 codes a second, exactly duration × 5, then EOS;
3. **into the request**: the codes, the rewritten caption (when "use planner caption" is on),
   inferred metadata for the fields the musician left empty, and the detected language when
   the musician chose "unknown" (upstream reads the wrong key here, so its DiT never sees it).

Both phases use classifier-free guidance with upstream's unconditional prompts, and sampling
seeded from the song's seed, so the same seed gives the same plan. The plan goes to the job
(`ctx.set_plan`) before the DiT starts, and from there into every take's sidecar.

The same model also serves three buttons, as job handlers: "create_sample" (an idea becomes a
caption, lyrics and metadata), "format" (polish a caption and lyrics) and "understand" (audio
becomes codes through the DiT pipeline's own audio tokenizer, then a caption, metadata and
lyrics).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core import music
from core import planner_prompts as prompts
from core.fast_decode import Decoder, DecodeResult, Sampling, UnsupportedModel, VocabSlice
from core.jobs import JobContext, StudioError
from core.models import ModelError, ModelSlot, is_local_source
from core.planner_fsm import CodeCountConstraint, CotConstraint, CotSpec, PlannerVocabulary
from core.request import CAPTION_MAX_CHARS, SongRequest, Thinking, resolve_seed
from vendor.models import CODES_PER_SECOND, DEFAULT_PLANNER, PLANNER_MODELS

if TYPE_CHECKING:
    from core.dit import LoadedDit
    from core.settings import Settings
    from core.studio import Studio

log = logging.getLogger(__name__)

SLOT_KEY = "planner"
# A chain of thought is a caption of at most 512 tokens and six short fields.
COT_BUDGET = 640
# Upstream's model length: prompt and answer together stay within it where they can.
MODEL_LENGTH = 4096
# Lyrics after the reasoning (understand, create sample, format) stop here at the latest.
LYRICS_BUDGET = 2048
# Progress counts a chain of thought as this many tokens, so the bar moves evenly.
COT_PROGRESS_TOKENS = 160
UNDERSTAND_TEMPERATURE = 0.3  # upstream's handler default: transcription wants little noise
SKIPPED_REASONING_NOTE = (
    "BPM, key, time signature and duration are all set, so the planner skipped its reasoning: "
    "the caption is not rewritten and the language is not detected."
)


# --- The loaded model --------------------------------------------------------------------------


@dataclass
class LoadedPlanner:
    """The planner model with its tokenizer, vocabulary facts and decoder."""

    model: Any
    tokenizer: Any
    vocabulary: PlannerVocabulary
    decoder: Decoder
    size: str
    device: str

    def move_to(self, device: str) -> None:
        """For the residency manager; the decoder keeps no tensors between plans."""
        self.model.to(device)
        self.device = device

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)


def load_planner(
    folder: Path, *, size: str, device: str, dtype: torch.dtype, max_duration: int, fast: bool
) -> LoadedPlanner:
    """Load a planner checkpoint folder (the transformers layout of the real ones)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").exists():
        raise ModelError(
            f"{folder} is not a transformers checkpoint: it has no config.json. Point "
            "ACE_STUDIO_PLANNER_MODEL at ACE-Step/Ace-Step1.5 (subfolder acestep-5Hz-lm-1.7B) "
            "or a folder holding a 5 Hz LM."
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    rows = model.get_output_embeddings().weight.shape[0]
    try:
        vocabulary = PlannerVocabulary.from_tokenizer(tokenizer, rows, max_duration)
    except ValueError as error:
        raise ModelError(f"{folder} is not an ACE-Step 5 Hz LM planner: {error}.") from error
    try:
        decoder = Decoder(model, backend="static" if fast else "hf")
    except UnsupportedModel as error:
        log.warning("planner decodes without the fast path: %s", error)
        decoder = Decoder(model, backend="hf")
    if device == "cuda" and decoder.backend == "static":
        # The fused kernels compile on first use, for a guided pair (songs) and a single
        # prompt (the buttons): pay for that here, while the page says "loading".
        pad = _pad_id_of(tokenizer, vocabulary)
        for prompts_in_use in ([[pad, pad]], [[pad, pad], [pad]]):
            decoder.generate(prompts_in_use, max_new_tokens=2, pad_id=pad)
    return LoadedPlanner(model, tokenizer, vocabulary, decoder, size, device)


def planner_source(settings: Settings, size: str) -> tuple[str, str, int]:
    """(source, subfolder, expected bytes) of the planner of `size`.

    The configured planner serves its own size. Another size comes from its hub repo, or,
    when the configured source is a local folder, from `acestep-5Hz-lm-<size>` inside it."""
    if size not in PLANNER_MODELS:
        raise StudioError(f"Planner size must be one of {', '.join(PLANNER_MODELS)}, not {size}.")
    facts = PLANNER_MODELS[size]
    source, subfolder = settings.planner_model, settings.planner_subfolder
    if is_local_source(source):
        sibling = f"acestep-5Hz-lm-{size}"
        if (Path(source).expanduser() / sibling).is_dir():
            return source, sibling, 0
        if size == settings.planner_size:
            return source, subfolder, 0
        raise StudioError(
            f"There is no {size} planner in {source}: add a folder {sibling} there, or pick "
            f"the {settings.planner_size} planner."
        )
    default = DEFAULT_PLANNER.repo_id, DEFAULT_PLANNER.subfolder or ""
    if size == settings.planner_size and (source, subfolder) != default:
        return source, subfolder, facts.weight_bytes
    # The default umbrella repo holds only the 1.7B; each size has its own repo id.
    return facts.repo_id, facts.subfolder or "", facts.weight_bytes


# --- What a plan is ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the planner decided for one song; stored with the job and every take."""

    caption: str | None
    bpm: int | None
    key: str | None
    time_signature: int | None
    duration: int | None
    language: str | None
    audio_codes: str
    codes: int
    reasoning: str
    user_caption: str
    skipped_reasoning: bool
    seed: int
    planner_size: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "bpm": self.bpm,
            "key": self.key,
            "time_signature": self.time_signature,
            "duration": self.duration,
            "language": self.language,
            "audio_codes": self.audio_codes,
            "codes": self.codes,
            "reasoning": self.reasoning,
            "user_caption": self.user_caption,
            "skipped_reasoning": self.skipped_reasoning,
            "seed": self.seed,
            "planner_size": self.planner_size,
            "seconds": round(self.seconds, 3),
        }


def user_metadata(request: SongRequest) -> dict[str, str]:
    """The fields the musician set, as the planner force-decodes them."""
    values: dict[str, str] = {}
    if request.bpm is not None:
        values["bpm"] = str(int(request.bpm))
    if request.duration and request.duration > 0:
        values["duration"] = str(int(request.duration))
    if request.key:
        values["keyscale"] = request.key
    if request.time_signature is not None:
        values["timesignature"] = str(int(request.time_signature))
    return values


def reasoning_prompts(tokenizer: Any, request: SongRequest) -> list[str]:
    """Phase 1's prompts: the conditional one, and with guidance the unconditional one."""
    lyrics, thinking = request.sung_lyrics, request.thinking
    pair = [prompts.cot_prompt(tokenizer, request.caption, lyrics)]
    if thinking.cfg_scale > 1.0:
        pair.append(prompts.cot_unconditional_prompt(tokenizer, lyrics, thinking.negative_prompt))
    return pair


def codes_prompts(tokenizer: Any, request: SongRequest, cot: str) -> list[str]:
    """Phase 2's prompts, after the chain of thought `cot`; the musician's own caption."""
    lyrics, thinking = request.sung_lyrics, request.thinking
    pair = [prompts.codes_prompt(tokenizer, request.caption, lyrics, cot)]
    if thinking.cfg_scale > 1.0:
        pair.append(
            prompts.codes_unconditional_prompt(
                tokenizer, request.caption, lyrics, thinking.negative_prompt
            )
        )
    return pair


def has_all_metadata(values: dict[str, str]) -> bool:
    return all(name in values for name in ("bpm", "keyscale", "timesignature", "duration"))


def apply_plan(request: SongRequest, metadata: dict[str, Any], codes: str) -> SongRequest:
    """The request the DiT gets: the codes, the rewritten caption when wanted, inferred
    metadata only where the musician left a field empty, and the detected language when the
    musician chose "unknown"."""
    thinking = request.thinking
    changes: dict[str, Any] = {"audio_codes": codes}
    caption = fit_caption(str(metadata.get("caption") or ""))
    if thinking.use_cot_caption and caption:
        changes["caption"] = caption
    if thinking.use_cot_metas:
        bpm = _int(metadata.get("bpm"))
        low, high = music.BPM_RANGE
        if request.bpm is None and bpm is not None and low <= bpm <= high:
            changes["bpm"] = bpm
        key = music.normalise_key(str(metadata.get("keyscale") or ""))
        if not request.key and key:
            changes["key"] = key
        meter = music.parse_time_signature(metadata.get("timesignature", ""))
        if request.time_signature is None and meter is not None:
            changes["time_signature"] = meter
    language = str(metadata.get("language") or "").strip().lower()
    if thinking.use_cot_language and request.language == "unknown" and language in music.LANGUAGES:
        changes["language"] = language
    return replace(request, **changes)


def fit_caption(caption: str) -> str:
    """The rewritten caption within the request's limit, so a planned take can be retaken:
    cut after the last whole sentence (or word) that fits."""
    caption = " ".join(caption.split())
    if len(caption) <= CAPTION_MAX_CHARS:
        return caption
    head = caption[:CAPTION_MAX_CHARS]
    sentence = max(head.rfind(". "), head.rfind("! "), head.rfind("? "))
    if sentence > CAPTION_MAX_CHARS // 2:
        return head[: sentence + 1]
    return head.rsplit(" ", 1)[0].rstrip(",;:")


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


# --- The planner service -----------------------------------------------------------------------


class Planner:
    """The Studio's planner: one model slot (re-pointed when another size is asked for), the
    song stage and the three button jobs."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.settings = studio.settings
        source, subfolder, expected = planner_source(self.settings, self.settings.planner_size)
        self.slot = ModelSlot(
            SLOT_KEY,
            _label(self.settings.planner_size),
            source,
            self._load,
            subfolder=subfolder,
            revision=self.settings.planner_revision,
            expected_bytes=expected,
        )
        self.size = self.settings.planner_size

    # --- model -----------------------------------------------------------------------------

    def _load(self, folder: Path) -> LoadedPlanner:
        from core.device import lm_dtype

        device = self.studio.device
        return load_planner(
            folder,
            size=self.size,
            device=device,
            dtype=lm_dtype(device),
            max_duration=self.settings.max_duration,
            fast=self.settings.fast_decode,
        )

    def ensure(self, ctx: JobContext, size: str | None = None) -> LoadedPlanner:
        """The loaded planner of `size`; another size replaces the one loaded."""
        size = size or self.settings.planner_size
        if size != self.size:
            source, subfolder, expected = planner_source(self.settings, size)
            self.slot.unload()
            self.slot.source, self.slot.subfolder = source, subfolder
            self.slot.expected_bytes = expected
            self.slot.label = _label(size)
            self.size = size
        if self.slot.loaded is None:
            ctx.progress(f"loading the {self.slot.label}", 0, 1)
        started = time.time()
        try:
            planner = self.slot.ensure()
        except ModelError as error:
            raise StudioError(str(error)) from error
        ctx.record_timing("planner_load_seconds", time.time() - started)
        return planner

    # --- the song stage --------------------------------------------------------------------

    def plan_song(
        self, ctx: JobContext, request: SongRequest, dit: LoadedDit | None
    ) -> SongRequest:
        """The song engine's planning stage: returns the request the DiT should get."""
        thinking = request.thinking
        if not thinking.enabled or request.audio_codes:
            return request
        if request.task != "generate":
            # Upstream never plans covers or repaints: the source audio carries the structure.
            ctx.note("Thinking plans new songs only; this one follows its source audio.")
            return request
        seed = resolve_seed(request.seed)
        request = replace(request, seed=seed)
        planner = self.ensure(ctx, thinking.planner_size)
        started = time.time()
        plan, metadata = self.plan(ctx, planner, request, seed)
        ctx.record_timing("planning_seconds", time.time() - started)
        ctx.set_plan(plan.as_dict())
        return apply_plan(request, metadata, plan.audio_codes)

    def plan(
        self, ctx: JobContext, planner: LoadedPlanner, request: SongRequest, seed: int
    ) -> tuple[Plan, dict[str, Any]]:
        thinking = request.thinking
        started = time.time()
        given = user_metadata(request)
        target = int(request.duration * CODES_PER_SECOND) if request.duration > 0 else None
        total = (target or 0) + 1 + COT_PROGRESS_TOKENS
        skipped = has_all_metadata(given)
        reasoning = ""
        if thinking.use_cot_metas and not skipped:
            reasoning = self._reason(ctx, planner, request, given, seed, total)
            metadata = prompts.parse_cot(reasoning)
        else:
            if skipped and thinking.use_cot_metas:
                ctx.note(SKIPPED_REASONING_NOTE)
            metadata = dict(given)
        ctx.progress("planning", COT_PROGRESS_TOKENS, total)
        self._announce(ctx, request, metadata, seed, planner.size, skipped, reasoning)
        codes = self._write_codes(ctx, planner, request, metadata, target, seed, total)
        plan = Plan(
            caption=fit_caption(str(metadata.get("caption") or "")) or None,
            bpm=_int(metadata.get("bpm")),
            key=music.normalise_key(str(metadata.get("keyscale") or "")),
            time_signature=music.parse_time_signature(metadata.get("timesignature", "")),
            duration=_int(metadata.get("duration")),
            language=str(metadata["language"]) if metadata.get("language") else None,
            audio_codes=codes,
            codes=codes.count("<|audio_code_"),
            reasoning=reasoning,
            user_caption=request.caption,
            skipped_reasoning=skipped,
            seed=seed,
            planner_size=planner.size,
            seconds=time.time() - started,
        )
        return plan, metadata

    def _sampling(self, thinking: Thinking, seed: int, phase: int, guided: bool) -> Sampling:
        return Sampling(
            temperature=thinking.temperature,
            top_p=thinking.top_p,
            top_k=thinking.top_k,
            cfg_scale=thinking.cfg_scale if guided else 1.0,
            # Each phase draws from its own stream, so changing one never shifts the other.
            seed=seed * 2 + phase,
        )

    def _reason(
        self,
        ctx: JobContext,
        planner: LoadedPlanner,
        request: SongRequest,
        given: dict[str, str],
        seed: int,
        total: int,
    ) -> str:
        """Phase 1: the chain of thought, up to (not including) `</think>`."""
        thinking = request.thinking
        guided = thinking.cfg_scale > 1.0
        pair = [planner.encode(text) for text in reasoning_prompts(planner.tokenizer, request)]
        spec = CotSpec(
            user_values=given,
            skip_caption=not thinking.use_cot_caption,
            skip_language=not thinking.use_cot_language,
        )
        produced: list[int] = []

        def on_tokens(new: list[int]) -> None:
            produced.extend(new)
            ctx.progress("planning", min(len(produced), COT_PROGRESS_TOKENS - 1), total)

        result = planner.decoder.generate(
            pair,
            max_new_tokens=COT_BUDGET,
            sampling=self._sampling(thinking, seed, 0, guided),
            constraint=CotConstraint(planner.vocabulary, spec),
            stop_ids=planner.vocabulary.end_ids,
            on_tokens=on_tokens,
            # Small chunks: the reasoning is short, and a stop wastes up to two of them.
            sync_every=8,
            pad_id=_pad_id(planner),
        )
        _log_speed("chain of thought", result)
        return planner.decode(result.tokens)

    def _announce(
        self,
        ctx: JobContext,
        request: SongRequest,
        metadata: dict[str, Any],
        seed: int,
        size: str,
        skipped: bool,
        reasoning: str,
    ) -> None:
        """Show the reasoning's result while the codes are written (no codes yet)."""
        ctx.set_plan(
            {
                "caption": fit_caption(str(metadata.get("caption") or "")) or None,
                "bpm": _int(metadata.get("bpm")),
                "key": music.normalise_key(str(metadata.get("keyscale") or "")),
                "time_signature": music.parse_time_signature(metadata.get("timesignature", "")),
                "duration": _int(metadata.get("duration")),
                "language": metadata.get("language"),
                "audio_codes": "",
                "codes": 0,
                "reasoning": reasoning,
                "user_caption": request.caption,
                "skipped_reasoning": skipped,
                "seed": seed,
                "planner_size": size,
            }
        )

    def _write_codes(
        self,
        ctx: JobContext,
        planner: LoadedPlanner,
        request: SongRequest,
        metadata: dict[str, Any],
        target: int | None,
        seed: int,
        total: int,
    ) -> str:
        """Phase 2: exactly `target` audio codes (or until EOS without a target)."""
        thinking = request.thinking
        vocabulary = planner.vocabulary
        guided = thinking.cfg_scale > 1.0
        cot = prompts.cot_text(metadata)
        pair = [planner.encode(text) for text in codes_prompts(planner.tokenizer, request, cot)]
        vocab: VocabSlice | None = None
        code_slice = vocabulary.code_slice
        if code_slice is not None:
            # Only code rows (and EOS) can win: the LM head multiplies just those.
            vocab = VocabSlice(code_slice[0], code_slice[1], (vocabulary.eos,))
            constraint = CodeCountConstraint.for_slice(code_slice[1] - code_slice[0], target)
        else:
            constraint = CodeCountConstraint.for_vocabulary(vocabulary, target)
        budget = target + 1 if target else max(MODEL_LENGTH - 64 - len(pair[0]), 64)
        done = [0]

        def on_tokens(new: list[int]) -> None:
            done[0] += len(new)
            ctx.progress("planning", COT_PROGRESS_TOKENS + min(done[0], total - 1), total)

        result = planner.decoder.generate(
            pair,
            max_new_tokens=budget,
            sampling=self._sampling(thinking, seed, 1, guided),
            constraint=constraint,
            vocab=vocab,
            stop_ids=vocabulary.end_ids,
            on_tokens=on_tokens,
            sync_every=32,
            pad_id=_pad_id(planner),
        )
        _log_speed("audio codes", result)
        codes = vocabulary.codes_to_text(result.tokens)
        if not codes:
            raise StudioError("The planner wrote no audio codes. Try another seed.")
        return codes

    # --- the buttons ------------------------------------------------------------------------

    def create_sample(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        """Job "create_sample": {idea, instrumental, language?, seed?, planner_size?,
        temperature?, top_p?} → caption, lyrics and metadata."""
        planner = self.ensure(ctx, payload.get("planner_size"))
        instrumental = bool(payload.get("instrumental", False))
        prompt = prompts.inspire_prompt(
            planner.tokenizer, str(payload.get("idea", "")), instrumental
        )
        language = str(payload.get("language") or "").strip().lower()
        given = {"language": language} if language and language != "unknown" else {}
        sample = self._write_sample(ctx, planner, prompt, payload, given, skip_language=False)
        if instrumental and not sample.get("lyrics"):
            sample["lyrics"] = prompts.INSTRUMENTAL
        sample["instrumental"] = instrumental
        return sample

    def format_sample(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        """Job "format": {caption, lyrics, bpm?, duration?, key?, time_signature?, language?}
        → a polished caption and lyrics, with metadata (the musician's values kept)."""
        planner = self.ensure(ctx, payload.get("planner_size"))
        caption, lyrics = str(payload.get("caption", "")), str(payload.get("lyrics", ""))
        prompt = prompts.format_prompt(planner.tokenizer, caption, lyrics)
        given: dict[str, str] = {}
        if payload.get("bpm"):
            given["bpm"] = str(int(payload["bpm"]))
        if payload.get("duration"):
            given["duration"] = str(int(float(payload["duration"])))
        key = music.normalise_key(str(payload.get("key") or ""))
        if key:
            given["keyscale"] = key
        if payload.get("time_signature"):
            given["timesignature"] = str(int(payload["time_signature"]))
        language = str(payload.get("language") or "").strip().lower()
        if language and language != "unknown":
            given["language"] = language
        sample = self._write_sample(
            ctx, planner, prompt, payload, given, skip_language="language" in given
        )
        if not sample.get("lyrics"):
            sample["lyrics"] = lyrics
        if "language" in given:
            sample["language"] = given["language"]
        return sample

    def understand(self, ctx: JobContext, payload: dict[str, Any]) -> dict[str, Any]:
        """Job "understand": {item_id} (a library song) → caption, metadata and lyrics."""
        item_id = str(payload.get("item_id") or "")
        item = self.studio.library.find(item_id) if item_id else None
        if item is None or item.audio_file is None:
            raise StudioError("That song is no longer in the library; pick another one.")
        samples = self.studio.library.read_audio(item.id).samples
        ctx.progress("loading model", 0, 1)
        dit = self.studio.load_dit()
        ctx.progress("listening", 0, 1)
        limit = self.settings.max_duration
        codes = audio_to_codes(dit, samples[:, : int(limit * 48_000)])
        planner = self.ensure(ctx, payload.get("planner_size"))
        prompt = prompts.understand_prompt(planner.tokenizer, codes)
        payload = {"temperature": UNDERSTAND_TEMPERATURE, **payload}
        sample = self._write_sample(ctx, planner, prompt, payload, {}, skip_language=False)
        sample["item_id"] = item.id
        sample["codes"] = codes.count("<|audio_code_")
        return sample

    def _write_sample(
        self,
        ctx: JobContext,
        planner: LoadedPlanner,
        prompt: str,
        payload: dict[str, Any],
        given: dict[str, str],
        *,
        skip_language: bool,
    ) -> dict[str, Any]:
        """Reasoning with genres, then `</think>` and lyrics, streamed to the job as text.
        Upstream uses no guidance for these."""
        thinking = Thinking()
        seed = resolve_seed(payload.get("seed"))
        sampling = Sampling(
            temperature=float(payload.get("temperature", thinking.temperature)),
            top_p=float(payload.get("top_p", thinking.top_p)),
            top_k=int(payload.get("top_k", thinking.top_k)),
            seed=seed,
        )
        ids = planner.encode(prompt)
        budget = max(min(COT_BUDGET + LYRICS_BUDGET, MODEL_LENGTH - 64 - len(ids)), COT_BUDGET)
        spec = CotSpec(
            user_values=given, skip_genres=False, skip_language=skip_language, then_lyrics=True
        )
        produced: list[int] = []

        def on_tokens(new: list[int]) -> None:
            produced.extend(new)
            ctx.stream_text(planner.decode(produced))
            ctx.progress("writing", len(produced), budget)

        result = planner.decoder.generate(
            [ids],
            max_new_tokens=budget,
            sampling=sampling,
            constraint=CotConstraint(planner.vocabulary, spec),
            stop_ids=planner.vocabulary.end_ids,
            on_tokens=on_tokens,
            sync_every=8,
            pad_id=_pad_id(planner),
        )
        text = planner.decode(result.tokens)
        metadata = prompts.parse_cot(text)
        key = music.normalise_key(str(metadata.get("keyscale") or ""))
        return {
            "caption": str(metadata.get("caption") or ""),
            "lyrics": prompts.lyrics_after_thinking(text),
            "bpm": _int(metadata.get("bpm")),
            "duration": _int(metadata.get("duration")),
            "key": key,
            "time_signature": music.parse_time_signature(metadata.get("timesignature", "")),
            "language": str(metadata.get("language") or "") or None,
            "genres": str(metadata.get("genres") or "") or None,
            "seed": seed,
        }


def audio_to_codes(dit: LoadedDit, samples: np.ndarray) -> str:
    """A song's 5 Hz audio codes: VAE latents, then the pipeline's own audio tokenizer (the
    round trip the DiT reads back when it gets `audio_codes`)."""
    pipe = dit.pipe
    tokenizer = getattr(pipe, "audio_tokenizer", None)
    if tokenizer is None:
        raise StudioError(
            "This DiT checkpoint has no audio tokenizer, so it cannot turn audio into codes "
            "for Understand. Use a checkpoint converted with its audio tokenizer."
        )
    if samples.ndim != 2 or samples.shape[1] < 48_000:
        raise StudioError("Understand needs at least a second of stereo audio.")
    device = dit.device
    with torch.inference_mode():
        audio = torch.from_numpy(np.ascontiguousarray(samples))[None]
        audio = audio.to(device=device, dtype=pipe.vae.dtype)
        latents = pipe.vae.encode(audio).latent_dist.mode().transpose(1, 2)
        silence = pipe.condition_encoder.silence_latent
        parameter = next(tokenizer.parameters())
        _, indices = tokenizer.tokenize(
            latents.to(device=parameter.device, dtype=parameter.dtype),
            silence.to(device=parameter.device, dtype=parameter.dtype),
        )
    values = indices.reshape(-1).tolist()
    return "".join(f"<|audio_code_{int(value)}|>" for value in values)


def _pad_id(planner: LoadedPlanner) -> int:
    return _pad_id_of(planner.tokenizer, planner.vocabulary)


def _pad_id_of(tokenizer: Any, vocabulary: PlannerVocabulary) -> int:
    pad = tokenizer.pad_token_id
    return int(pad) if pad is not None else int(vocabulary.eos)


def _label(size: str) -> str:
    return f"5 Hz LM planner {size}"


def _log_speed(phase: str, result: DecodeResult) -> None:
    log.info(
        "planner %s: %d tokens in %.2f s (%.0f tokens/s, %s), prefill %.2f s",
        phase,
        len(result.tokens),
        result.decode_seconds,
        result.tokens_per_second,
        result.backend,
        result.prefill_seconds,
    )


def install(studio: Studio) -> None:
    planner = Planner(studio)
    studio.extra_slots.append(planner.slot)
    studio.planner_stage = planner.plan_song
    studio.handlers["create_sample"] = planner.create_sample
    studio.handlers["format"] = planner.format_sample
    studio.handlers["understand"] = planner.understand
