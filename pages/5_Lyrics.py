"""Lyrics: a draft from the lyric writer, streamed in, edited, kept, and taken to Generate."""

from __future__ import annotations

import random

import streamlit as st

from core import lyrics, music
from core.jobs import CANCELLED, DONE, QUEUED, RUNNING, Job
from core.lyrics import LyricsRequest
from core.request import LYRICS_MAX_CHARS, SEED_MAX, InvalidRequest, to_query
from pages.widgets.common import page_setup, show_problems
from pages.widgets.jobs import current_job_id, follow_job, job_panel
from pages.widgets.song_form import read_request

PAGE = "lyrics"
JOB_KEY = "lyrics.job"
GENERATE_PAGE = "pages/1_Generate.py"
DRAFT_HEIGHT = 440
DEFAULTS = LyricsRequest()


def key(name: str) -> str:
    return f"{PAGE}.{name}"


# Streamlit forgets a widget's value when a run does not draw it (another page, say): the
# form and the draft are copied to a plain session key at the end of each run, and back.
WIDGETS = (*(name for name in DEFAULTS.to_dict() if name != "seed"), "seed", "seed_locked")
EDITOR = ("draft", "caption", "title")
SAVED = "lyrics._saved"


def restore_widgets() -> None:
    state = st.session_state
    saved = state.get(SAVED, {})
    defaults = {
        **DEFAULTS.to_dict(),
        "seed": random.randint(1, SEED_MAX),
        "seed_locked": False,
        **dict.fromkeys(EDITOR, ""),
    }
    for name in (*WIDGETS, *EDITOR):
        if key(name) not in state:
            state[key(name)] = saved.get(name, defaults[name])


def save_widgets() -> None:
    state = st.session_state
    state[SAVED] = {name: state[key(name)] for name in (*WIDGETS, *EDITOR) if key(name) in state}


def set_form(request: LyricsRequest) -> None:
    state = st.session_state
    for name, value in request.to_dict().items():
        if name != "seed":
            state[key(name)] = value
    state[key("seed_locked")] = request.seed is not None
    state[key("seed")] = request.seed if request.seed is not None else random.randint(1, SEED_MAX)


def read_form() -> LyricsRequest:
    state = st.session_state
    values = {name: state[key(name)] for name in DEFAULTS.to_dict() if name != "seed"}
    seed = int(state[key("seed")]) if state[key("seed_locked")] else None
    return LyricsRequest(**values, seed=seed)


def load_draft(
    text: str, request: LyricsRequest, *, source: str, job_id: str | None, parent_id: str | None
) -> None:
    """Put a draft in the editor, with the settings that wrote it (for Keep and Generate).
    `source` (a job or library item id) is loaded once, so later reruns keep the edits."""
    state = st.session_state
    state[key("draft")] = text
    state[key("draft_source")] = source
    state[key("draft_job")] = job_id
    state[key("draft_request")] = request.to_dict()
    state[key("draft_parent")] = parent_id
    state[key("caption")] = lyrics.suggest_caption(request)
    state[key("title")] = lyrics.suggest_title(request)


def open_kept(item_id: str) -> None:
    item = studio.library.get(item_id)
    request = LyricsRequest.from_dict(item.meta.get("request", {}))
    set_form(request)
    text = item.meta.get("lyrics", "")
    load_draft(text, request, source=item.id, job_id=item.job_id, parent_id=item.id)
    st.session_state[key("title")] = item.title
    st.session_state.pop(JOB_KEY, None)
    st.query_params.pop("job", None)


def keep_current() -> None:
    """Keep the editor's draft (a button callback, so the kept-drafts list is current)."""
    state = st.session_state
    request = LyricsRequest.from_dict(state.get(key("draft_request")) or read_form().to_dict())
    try:
        item = lyrics.keep_draft(
            studio,
            state.get(key("draft"), ""),
            request=request,
            title=state.get(key("title"), ""),
            job_id=state.get(key("draft_job")),
            parent_id=state.get(key("draft_parent")),
            model=lyrics.writer_slot(studio).display_source,
        )
    except lyrics.StudioError as error:
        state[key("kept_outcome")] = ("error", str(error))
    else:
        state[key("draft_parent")] = item.id
        state[key("kept_outcome")] = ("ok", f"Kept “{item.display_title}” in the library.")


def take_finished_job(job: Job) -> None:
    """The first time this session sees a job finish, its draft goes into the editor."""
    if st.session_state.get(key("draft_source")) == job.id:
        return
    if job.status == DONE and job.result:
        request = LyricsRequest.from_dict(job.result["request"])
        load_draft(job.result["lyrics"], request, source=job.id, job_id=job.id, parent_id=None)
    elif job.status == CANCELLED and job.partial_text:
        request = LyricsRequest.from_dict(job.payload["request"])
        load_draft(job.partial_text, request, source=job.id, job_id=job.id, parent_id=None)


def show_streaming(job: Job) -> None:
    """The draft as it is written. Not a widget: a widget's value cannot be replaced from the
    server while the browser holds it, and editing text that is still arriving would lose
    words. The editor takes over when the draft is done."""
    st.markdown("**Draft** · writing…")
    st.code(
        job.partial_text or "The first lines appear here as they are written…",
        language=None,
        wrap_lines=True,
        height=DRAFT_HEIGHT,
    )
    st.caption(f"{len(job.partial_text)} / {LYRICS_MAX_CHARS} characters")


studio = page_setup("Lyrics", "✍️")
restore_widgets()

st.title("Lyrics")
st.caption(
    "Describe the song; the lyric writer drafts it in ACE-Step's format, one [Section] tag per "
    "line followed by its lines. Edit the draft, keep it, and take it to Generate."
)
form, draft_column = st.columns([2, 3], gap="large")

with form:
    st.text_area(
        "Brief",
        key=key("brief"),
        height=120,
        placeholder="A late-night drive through a rainy city, missing someone. Hopeful at the end.",
        help="What the song is about, its story and images, any lines to use or avoid.",
    )
    st.text_input(
        "Structure",
        key=key("structure"),
        help="Sections in order, separated by commas. Verses are numbered for you.",
    )
    language, rhyme = st.columns(2)
    language.selectbox(
        "Language",
        lyrics.WRITING_LANGUAGES,
        key=key("language"),
        format_func=lambda code: music.LANGUAGE_NAMES[code],
    )
    rhyme.radio(
        "Rhyme",
        lyrics.RHYMES,
        key=key("rhyme"),
        horizontal=True,
        format_func=str.capitalize,
        help="Strict: clean end rhymes. Loose: near rhymes welcome. None: free verse.",
    )
    st.text_input("Tone / mood", key=key("tone"), placeholder="bittersweet, warm, defiant")
    verse, chorus, bridge = st.columns(3)
    for column, name, label in (
        (verse, "verse_lines", "Verse lines"),
        (chorus, "chorus_lines", "Chorus lines"),
        (bridge, "bridge_lines", "Bridge lines"),
    ):
        low, high = lyrics.LINE_RANGES[name]
        column.slider(label, low, high, key=key(name))
    with st.expander("Sampling", icon=":material/tune:"):
        left, right = st.columns(2)
        left.slider(
            "Temperature",
            *lyrics.TEMPERATURE_RANGE,
            step=0.05,
            key=key("temperature"),
            help="Higher: more surprising word choices. 0 always picks the likeliest word.",
        )
        left.slider("Top-p", 0.05, 1.0, step=0.05, key=key("top_p"))
        right.slider("Top-k (0 = off)", *lyrics.TOP_K_RANGE, key=key("top_k"))
        right.slider(
            "Max tokens",
            *lyrics.MAX_TOKENS_RANGE,
            step=50,
            key=key("max_tokens"),
            help="About 20 tokens a line; 600 is roughly 30 lines.",
        )
        seed, lock = st.columns([3, 2], vertical_alignment="bottom")
        seed.number_input("Seed", 0, SEED_MAX, step=1, key=key("seed"))
        lock.checkbox(
            "Lock",
            key=key("seed_locked"),
            help="Locked: the same seed and settings write the same draft. Unlocked: a new "
            "draft every time.",
        )
    if st.button("Write", type="primary", icon=":material/edit_note:", width="stretch"):
        try:
            follow_job(JOB_KEY, lyrics.submit_lyrics(studio, read_form()))
        except InvalidRequest as invalid:
            show_problems([problem.message for problem in invalid.problems])

    kept = lyrics.kept_drafts(studio)
    with st.expander(f"Kept drafts ({len(kept)})", icon=":material/bookmarks:"):
        if not kept:
            st.caption("Drafts you keep are listed here, with the settings that wrote them.")
        else:
            names = {
                item.id: f"{item.display_title} · {len(item.meta.get('lyrics', ''))} chars"
                for item in kept
            }
            chosen = st.selectbox("Draft", list(names), format_func=names.get, key=key("kept"))
            st.button(
                "Open",
                icon=":material/open_in_new:",
                on_click=open_kept,
                args=(chosen,),
                key=key("open"),
            )

with draft_column:
    job_id = current_job_id(JOB_KEY)
    job = (
        job_panel(studio, job_id, state_key=JOB_KEY, running_extra=show_streaming)
        if job_id
        else None
    )
    if job is not None and job.is_finished:
        take_finished_job(job)
    if job is not None and job.status == DONE and job.result:
        st.caption(
            f"Seed {job.result['seed']} · {job.result['tokens']} tokens at "
            f"{job.result['tokens_per_second']:.0f} tokens/s"
        )
    running = job is not None and job.status in (RUNNING, QUEUED)
    if not running:
        st.text_area(
            "Draft",
            key=key("draft"),
            height=DRAFT_HEIGHT,
            placeholder="[Verse 1]\nYour lines here, or press Write for a draft…",
            help="Edit freely. One [Section] tag per line, then its lines; a blank line "
            "between sections.",
        )
        draft = st.session_state.get(key("draft"), "")
        st.caption(f"{len(draft)} / {LYRICS_MAX_CHARS} characters")
        if lyrics.over_limit(draft):
            st.warning(
                f"ACE-Step reads at most {LYRICS_MAX_CHARS} characters of lyrics (about 2048 "
                "tokens); it would cut the rest. Shorten the draft or drop a section.",
                icon=":material/warning:",
            )
        request = LyricsRequest.from_dict(
            st.session_state.get(key("draft_request")) or read_form().to_dict()
        )
        st.text_input(
            "Caption for Generate",
            key=key("caption"),
            help="A starting caption from the brief and tone: add genre, instruments and vocals.",
        )
        title, keep_button = st.columns([3, 1], vertical_alignment="bottom")
        title.text_input("Title", key=key("title"))
        keep_button.button(
            "Keep", icon=":material/bookmark_add:", width="stretch", on_click=keep_current
        )
        outcome = st.session_state.pop(key("kept_outcome"), None)
        if outcome is not None:
            kind, text = outcome
            if kind == "error":
                st.error(text, icon=":material/error:")
            else:
                st.toast(text, icon=":material/bookmark:")
        use, download = st.columns(2)
        if use.button(
            "Use in Generate",
            type="primary",
            icon=":material/music_note:",
            width="stretch",
            disabled=not draft.strip(),
        ):
            song = lyrics.song_request_for(
                read_request("generate", "generate"),
                lyrics=draft,
                caption=st.session_state.get(key("caption"), ""),
                language=request.language,
            )
            save_widgets()
            st.switch_page(GENERATE_PAGE, query_params=to_query(song))
        download.download_button(
            "Download .txt",
            data=draft.encode("utf-8"),
            file_name=f"{(st.session_state.get(key('title')) or 'lyrics').strip()[:60]}.txt",
            mime="text/plain",
            icon=":material/download:",
            width="stretch",
            on_click="ignore",
            disabled=not draft.strip(),
        )

save_widgets()
