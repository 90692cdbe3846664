"""The song form shared by Generate, Cover, Extend and Edit: inputs and advanced expanders.

Widget values live in `st.session_state` under "<page>.<field>" keys and mirror the URL
query, so a link, a reload or "Open in …" from the library reproduces the settings.
"""

from __future__ import annotations

import json
import random

import streamlit as st

from core import music
from core.request import SEED_MAX, SongRequest, Thinking, from_query, to_query
from core.settings import Settings
from vendor.models import PLANNER_MODELS, VariantDefaults

from .jobs import JOB_QUERY_KEY

AUTO = "Auto"
TAG_HINT = (
    "One section tag per line, then its lines: [Intro], [Verse 1], [Chorus], [Bridge], "
    "[Outro]. Leave empty (or switch on Instrumental) for no vocals."
)
THINKING_FIELDS = tuple(Thinking.__dataclass_fields__)
# URLs a page loaded or wrote, remembered so a late rerun carrying one is not read as a link.
SEEN_URLS_KEPT = 64


def form_key(prefix: str, name: str) -> str:
    """The session-state key of a page's form field: "<page>.<field>"."""
    return f"{prefix}.{name}"


def load_request(prefix: str, request: SongRequest, defaults: VariantDefaults) -> None:
    """Put a request's values into the page's widgets."""
    state = st.session_state
    values = request.to_dict()
    for name in (
        "title caption lyrics instrumental takes shift infer_method cover_strength "
        "extend_seconds extend_side language source_id reference_id"
    ).split():
        state[form_key(prefix, name)] = values[name]
    state[form_key(prefix, "duration")] = int(request.duration)
    state[form_key(prefix, "steps")] = request.steps or defaults.steps
    state[form_key(prefix, "guidance")] = float(
        request.guidance if request.guidance is not None else defaults.guidance
    )
    state[form_key(prefix, "cfg_interval")] = (request.cfg_start, request.cfg_end)
    state[form_key(prefix, "seed_locked")] = request.seed is not None and request.seed >= 0
    if request.seed is not None and request.seed >= 0:
        state[form_key(prefix, "seed")] = request.seed
    else:
        state.setdefault(form_key(prefix, "seed"), random.randint(1, SEED_MAX))
    state[form_key(prefix, "bpm")] = request.bpm
    state[form_key(prefix, "key")] = request.key or ""
    state[form_key(prefix, "time_signature")] = request.time_signature or AUTO
    state[form_key(prefix, "context_all")] = request.context_seconds is None
    state[form_key(prefix, "context_seconds")] = int(request.context_seconds or 30)
    if request.region_start is not None and request.region_end is not None:
        state[form_key(prefix, "region_start")] = float(request.region_start)
        state[form_key(prefix, "region_end")] = float(request.region_end)
    for name in THINKING_FIELDS:
        state[form_key(prefix, f"thinking.{name}")] = getattr(request.thinking, name)
    # The LoRA expander keeps the stack here as a tuple of LoraChoice.
    state[form_key(prefix, "loras")] = request.loras


def sync_from_url(prefix: str, defaults: VariantDefaults) -> None:
    """Load the URL's settings into the form when they came from outside this page."""
    query = {k: v for k, v in st.query_params.to_dict().items() if k != JOB_QUERY_KEY}
    signature = json.dumps(query, sort_keys=True)
    if form_key(prefix, "caption") not in st.session_state:
        # Entering the page (Streamlit drops a page's widget values when another page runs):
        # whatever URL it arrives with is news.
        st.session_state.pop(form_key(prefix, "_seen"), None)
    applied = st.session_state.get(form_key(prefix, "_applied"))
    if applied == signature:
        return
    # A rerun the browser sent before this page's last URL update reached it carries an
    # older URL that this page already loaded or wrote: loading it again would undo what
    # was just typed.
    if signature in st.session_state.get(form_key(prefix, "_seen"), ()):
        return
    if applied is None or query:
        load_request(prefix, from_query(query), defaults)
    st.session_state[form_key(prefix, "_applied")] = signature
    _remember(prefix, signature)


def write_to_url(prefix: str, request: SongRequest) -> None:
    """Mirror the form in the URL so the address bar is always a shareable link."""
    query = to_query(request)
    job = st.query_params.get(JOB_QUERY_KEY)
    st.query_params.from_dict({**query, **({JOB_QUERY_KEY: job} if job else {})})
    signature = json.dumps(query, sort_keys=True)
    st.session_state[form_key(prefix, "_applied")] = signature
    _remember(prefix, signature)


def _remember(prefix: str, signature: str) -> None:
    seen = st.session_state.get(form_key(prefix, "_seen"), ())
    if signature not in seen:
        st.session_state[form_key(prefix, "_seen")] = (*seen, signature)[-SEEN_URLS_KEPT:]


def text_inputs(
    prefix: str, *, caption_label: str = "Caption", lyrics_label: str = "Lyrics"
) -> None:
    st.text_area(
        caption_label,
        key=form_key(prefix, "caption"),
        placeholder="dreamy synth-pop, warm analog pads, punchy drums, female vocals, nostalgic",
        help="Genre, instruments, mood, vocals, production. Required.",
        height=90,
    )
    st.text_area(
        lyrics_label,
        key=form_key(prefix, "lyrics"),
        placeholder="[Verse 1]\nNeon on the water…\n\n[Chorus]\n…",
        help=TAG_HINT,
        height=200,
    )
    lyrics = st.session_state.get(form_key(prefix, "lyrics"), "")
    st.caption(f"{len(lyrics)} / 4096 characters · {TAG_HINT}")
    st.toggle(
        "Instrumental", key=form_key(prefix, "instrumental"), help="No vocals: lyrics are ignored."
    )


def diffusion_expander(prefix: str, defaults: VariantDefaults) -> None:
    with st.expander("Diffusion", icon=":material/tune:"):
        left, right = st.columns(2)
        with left:
            st.slider(
                "Steps",
                1,
                200,
                key=form_key(prefix, "steps"),
                help=f"This model's default is {defaults.steps}. More steps: finer detail, slower.",
            )
            st.slider(
                "Guidance",
                1.0,
                15.0,
                step=0.5,
                key=form_key(prefix, "guidance"),
                disabled=not defaults.uses_cfg,
                help="How closely to follow the caption and lyrics (CFG). Turbo models ignore it."
                if defaults.uses_cfg
                else "Turbo models are guidance-distilled: CFG is off.",
            )
            st.slider(
                "Shift",
                1.0,
                5.0,
                step=0.1,
                key=form_key(prefix, "shift"),
                help="Timestep shift: higher spends more steps on the overall structure.",
            )
        with right:
            st.radio(
                "Sampler",
                ("ode", "sde"),
                key=form_key(prefix, "infer_method"),
                horizontal=True,
                help="ode: deterministic Euler. sde: re-noises each step; more variety.",
            )
            seed_col, lock_col = st.columns([3, 2], vertical_alignment="bottom")
            with seed_col:
                st.number_input("Seed", 0, SEED_MAX, key=form_key(prefix, "seed"), step=1)
            with lock_col:
                st.checkbox(
                    "Lock",
                    key=form_key(prefix, "seed_locked"),
                    help="Locked: every run uses this seed. Unlocked: a new seed each run.",
                )
            st.button(
                "Randomise seed",
                key=form_key(prefix, "randomise"),
                icon=":material/casino:",
                on_click=_randomise_seed,
                args=(prefix,),
            )
            st.slider(
                "CFG interval",
                0.0,
                1.0,
                step=0.05,
                key=form_key(prefix, "cfg_interval"),
                disabled=not defaults.uses_cfg,
                help="Part of the denoising run where guidance applies (0 = start, 1 = end).",
            )


def _randomise_seed(prefix: str) -> None:
    st.session_state[form_key(prefix, "seed")] = random.randint(1, SEED_MAX)


def metadata_expander(prefix: str) -> None:
    with st.expander("Music metadata", icon=":material/music_note:"):
        bpm, key, meter, language = st.columns(4)
        with bpm:
            st.number_input(
                "BPM",
                min_value=0,
                max_value=400,
                value=None,
                key=form_key(prefix, "bpm"),
                placeholder="Auto",
                help="30–300. Empty: the model decides.",
            )
        with key:
            st.text_input(
                "Key",
                key=form_key(prefix, "key"),
                placeholder="Auto, e.g. A minor, F#m, Bb",
                help="Any of the 70 keys ACE-Step knows; shorthand like 'Am' is accepted.",
            )
        with meter:
            st.selectbox(
                "Time signature",
                (AUTO, *music.TIME_SIGNATURES),
                key=form_key(prefix, "time_signature"),
                format_func=lambda v: v if v == AUTO else f"{v}/4",
            )
        with language:
            st.selectbox(
                "Vocal language",
                music.LANGUAGES,
                key=form_key(prefix, "language"),
                format_func=lambda code: f"{music.LANGUAGE_NAMES[code]} ({code})",
            )


def thinking_expander(prefix: str, settings: Settings) -> None:
    with st.expander("Thinking", icon=":material/psychology:"):
        st.toggle(
            "Plan with the 5 Hz LM",
            key=form_key(prefix, "thinking.enabled"),
            help="The planner rewrites the caption, infers tempo, key and language, and writes "
            "audio codes that guide the song. Slower, usually better structured.",
        )
        enabled = bool(st.session_state.get(form_key(prefix, "thinking.enabled")))
        a, b, c = st.columns(3)
        a.checkbox(
            "Use planner caption",
            key=form_key(prefix, "thinking.use_cot_caption"),
            disabled=not enabled,
        )
        b.checkbox(
            "Fill empty metadata",
            key=form_key(prefix, "thinking.use_cot_metas"),
            disabled=not enabled,
        )
        c.checkbox(
            "Detect language",
            key=form_key(prefix, "thinking.use_cot_language"),
            disabled=not enabled,
        )
        left, right = st.columns(2)
        with left:
            st.slider(
                "Temperature",
                0.0,
                2.0,
                step=0.05,
                key=form_key(prefix, "thinking.temperature"),
                disabled=not enabled,
            )
            st.slider(
                "Top-p",
                0.05,
                1.0,
                step=0.05,
                key=form_key(prefix, "thinking.top_p"),
                disabled=not enabled,
            )
            st.slider(
                "Top-k (0 = off)",
                0,
                200,
                key=form_key(prefix, "thinking.top_k"),
                disabled=not enabled,
            )
        with right:
            st.slider(
                "Planner CFG",
                1.0,
                5.0,
                step=0.1,
                key=form_key(prefix, "thinking.cfg_scale"),
                disabled=not enabled,
            )
            st.text_input(
                "Negative prompt",
                key=form_key(prefix, "thinking.negative_prompt"),
                disabled=not enabled,
            )
            st.selectbox(
                "Planner size",
                tuple(PLANNER_MODELS),
                key=form_key(prefix, "thinking.planner_size"),
                disabled=not enabled,
            )


def read_request(prefix: str, task: str) -> SongRequest:
    """The request the form describes now."""
    state = st.session_state

    def value(name: str, default: object = None) -> object:
        return state.get(form_key(prefix, name), default)

    base = SongRequest()
    cfg_start, cfg_end = value("cfg_interval", (0.0, 1.0))
    time_signature = value("time_signature", AUTO)
    thinking = Thinking(
        **{name: value(f"thinking.{name}", getattr(Thinking(), name)) for name in THINKING_FIELDS}
    )
    return SongRequest(
        task=task,
        title=str(value("title", "")),
        caption=str(value("caption", "")),
        lyrics=str(value("lyrics", "")),
        instrumental=bool(value("instrumental", False)),
        duration=float(value("duration", base.duration)),
        seed=int(value("seed")) if value("seed_locked") and value("seed") is not None else None,
        takes=int(value("takes", 1)),
        bpm=int(value("bpm")) if value("bpm") else None,
        key=str(value("key", "")).strip() or None,
        time_signature=None if time_signature == AUTO else int(time_signature),
        language=str(value("language", base.language)),
        steps=int(value("steps")) if value("steps") else None,
        guidance=float(value("guidance")) if value("guidance") is not None else None,
        shift=float(value("shift", base.shift)),
        cfg_start=float(cfg_start),
        cfg_end=float(cfg_end),
        infer_method=str(value("infer_method", "ode")),
        source_id=value("source_id") or None,
        reference_id=value("reference_id") or None,
        cover_strength=float(value("cover_strength", base.cover_strength)),
        region_start=value("region_start"),
        region_end=value("region_end"),
        extend_seconds=float(value("extend_seconds", base.extend_seconds)),
        extend_side=str(value("extend_side", base.extend_side)),
        context_seconds=None if value("context_all", True) else float(value("context_seconds", 30)),
        thinking=thinking,
        loras=tuple(value("loras", ()) or ()),
    )
