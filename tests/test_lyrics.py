"""The lyric writer on the tiny Qwen2 model: prompt, token slicing, tags, seeds, the job
(streaming, cancel, bad input), kept drafts, and the mlx path's guard and arguments."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import torch

from core import lyrics
from core.jobs import CANCELLED, DONE, FAILED, RUNNING, Job
from core.lyrics import (
    LyricsRequest,
    Sampling,
    build_messages,
    draft_text,
    load_writer,
    normalise_lyrics,
    section_tags,
    write_draft,
)
from core.models import ModelError
from core.request import InvalidRequest
from core.settings import Settings
from core.studio import Studio
from tests.conftest import wait_for
from tests.tiny.writer import tiny_writer_folder

BRIEF = "A late-night drive through a rainy city, missing someone"
QUICK = LyricsRequest(brief=BRIEF, max_tokens=100, seed=7)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny matrices decode fastest on one thread; two threads on a busy 2-core CI box stall.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def writer() -> lyrics.TransformersWriter:
    return load_writer(
        tiny_writer_folder(), backend="transformers", device="cpu", dtype=torch.float32
    )


@pytest.fixture
def lyric_studio(settings: Settings) -> Iterator[Studio]:
    studio = Studio(
        replace(settings, writer_model=str(tiny_writer_folder()), writer_backend="transformers")
    ).start()
    yield studio
    studio.stop()


def wait_until(studio: Studio, job_id: str, condition: Callable[[Job], bool]) -> Job:
    deadline = time.time() + 60
    while time.time() < deadline:
        job = studio.jobs.get(job_id)
        assert job is not None
        if condition(job):
            return job
        time.sleep(0.002)
    raise AssertionError(f"job {job_id} never reached the expected state")


# --- prompt -----------------------------------------------------------------------------------


def test_structure_becomes_numbered_ace_step_tags() -> None:
    assert section_tags(lyrics.DEFAULT_STRUCTURE) == [
        "[Intro]", "[Verse 1]", "[Chorus]", "[Verse 2]", "[Chorus]", "[Bridge]", "[Chorus]",
        "[Outro]",
    ]  # fmt: skip
    assert section_tags("Verse; pre chorus; CHORUS; verse; guitar solo; [chorus - big]") == [
        "[Verse 1]", "[Pre-Chorus]", "[Chorus]", "[Verse 2]", "[Guitar Solo]", "[Chorus - big]",
    ]  # fmt: skip
    assert section_tags(" , ;") == []


def test_prompt_carries_every_input() -> None:
    request = LyricsRequest(
        brief=BRIEF,
        structure="verse, chorus, bridge",
        language="es",
        tone="bittersweet",
        rhyme="strict",
        verse_lines=8,
        chorus_lines=3,
        bridge_lines=5,
    )
    system, user = build_messages(request)
    assert system["role"] == "system" and user["role"] == "user"
    assert "[Verse 1]" in system["content"] and "[Chorus]" in system["content"]
    assert "markdown" in system["content"] and "ONLY the lyrics" in system["content"]
    text = user["content"]
    assert "structure: [Verse 1], [Chorus], [Bridge]." in text
    assert "Language: Spanish." in text
    assert "Tone: bittersweet." in text
    assert "Rhyme: strict:" in text
    assert "Verse: 8 lines. Chorus: 3 lines. Bridge: 5 lines." in text
    assert text.endswith("Brief:\n" + BRIEF)
    neutral = build_messages(LyricsRequest(brief=BRIEF, rhyme="none"))[1]["content"]
    assert "Tone: neutral." in neutral and "Rhyme: none: free verse" in neutral


def test_prompt_goes_through_the_chat_template(writer: lyrics.TransformersWriter) -> None:
    ids = writer.prompt_ids(build_messages(QUICK))
    text = writer.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a professional songwriter.")
    assert "<|im_start|>user\nWrite lyrics with this structure:" in text
    assert text.endswith(f"{BRIEF}<|im_end|>\n<|im_start|>assistant\n")


def test_only_new_tokens_are_decoded_sliced_by_token(writer: lyrics.TransformersWriter) -> None:
    prompt = writer.prompt_ids(build_messages(QUICK))
    new = writer.tokenizer("[Verse 1]\nla la love", add_special_tokens=False).input_ids
    sequence = prompt + new
    assert draft_text(writer, sequence, len(prompt)) == "[Verse 1]\nla la love"
    # Slicing the decoded string by the prompt's length, as the previous app did, cuts into
    # the draft: the special tokens of the prompt are not in the decoded text.
    whole = writer.decode(sequence)
    prompt_text = writer.tokenizer.decode(prompt)
    assert whole[len(prompt_text) :] != "[Verse 1]\nla la love"


# --- tidying the output -------------------------------------------------------------------------


def test_normalise_keeps_only_the_tagged_lyrics() -> None:
    raw = (
        "Sure! Here are your lyrics:\n\n**Title: Neon Rain**\n\n```\n[verse 1]\n\n"
        "Neon on the water\nLights run down\n\nCHORUS:\nOh we go\nDrop it low\n\n"
        "### Bridge\n**Hold on**\n[chorus - powerful] Oh we go\n(Outro)\nfade away\n```\n\n"
        "---\nI hope you enjoy these lyrics! Let me know if you want changes.\n"
    )
    assert normalise_lyrics(raw) == (
        "[Verse 1]\nNeon on the water\nLights run down\n\n"
        "[Chorus]\nOh we go\nDrop it low\n\n"
        "[Bridge]\nHold on\n\n"
        "[Chorus - powerful]\nOh we go\n\n"
        "[Outro]\nfade away"
    )


def test_normalise_spellings_of_tags() -> None:
    assert normalise_lyrics("[PRE CHORUS]\na\n[post-chorus]\nb\n[verse 02]\nc") == (
        "[Pre-Chorus]\na\n\n[Post-Chorus]\nb\n\n[Verse 2]\nc"
    )
    # Unknown tags keep their words; an instrumental section may have no lines.
    assert normalise_lyrics("[guitar solo]\n[Intro]\n\n[Verse 1]\nx") == (
        "[Guitar Solo]\n\n[Intro]\n\n[Verse 1]\nx"
    )
    # Sung lines that start with a section word stay lines.
    assert normalise_lyrics("[Verse 1]\nBreak free tonight\nDrop the act") == (
        "[Verse 1]\nBreak free tonight\nDrop the act"
    )


def test_normalise_is_idempotent_and_keeps_untagged_text() -> None:
    tidy = "[Verse 1]\nline one\nline two\n\n[Chorus]\nhook"
    assert normalise_lyrics(tidy) == tidy
    assert normalise_lyrics(normalise_lyrics("x\n[verse]\na\n\n\n[chorus]\nb\n\nnotes")) == (
        "[Verse]\na\n\n[Chorus]\nb"
    )
    assert normalise_lyrics("  just words\n\n\n\nmore words  ") == "just words\n\nmore words"
    assert normalise_lyrics("") == ""


def test_caption_suggestion_from_brief_and_tone() -> None:
    request = LyricsRequest(
        brief="A slow indie folk song about leaving home. Warm, with fingerpicked guitar.",
        tone="bittersweet, hopeful",
        language="es",
    )
    assert lyrics.suggest_caption(request) == (
        "bittersweet, hopeful, a slow indie folk song about leaving home, Spanish vocals"
    )
    assert lyrics.suggest_caption(LyricsRequest(brief="Synth-pop anthem")) == "synth-pop anthem"


# --- writing --------------------------------------------------------------------------------


def test_same_seed_same_draft(writer: lyrics.TransformersWriter) -> None:
    first = write_draft(writer, QUICK, seed=7)
    again = write_draft(writer, QUICK, seed=7)
    other = write_draft(writer, QUICK, seed=8)
    assert first.tokens == QUICK.max_tokens
    assert first.raw_text and first.raw_text == again.raw_text
    assert first.lyrics == again.lyrics
    assert other.raw_text != first.raw_text
    assert BRIEF not in first.raw_text


def test_sampling_settings_reach_the_sampler(writer: lyrics.TransformersWriter) -> None:
    greedy = replace(QUICK, temperature=0.0)
    assert (
        write_draft(writer, greedy, seed=1).raw_text == write_draft(writer, greedy, seed=2).raw_text
    )
    top_one = replace(QUICK, top_k=1)
    assert (
        write_draft(writer, top_one, seed=1).raw_text
        == write_draft(writer, greedy, seed=3).raw_text
    )
    narrow = replace(QUICK, top_p=1e-6)
    assert (
        write_draft(writer, narrow, seed=4).raw_text == write_draft(writer, greedy, seed=5).raw_text
    )
    assert (
        write_draft(writer, QUICK, seed=1).raw_text != write_draft(writer, greedy, seed=1).raw_text
    )


def test_streaming_callback_sees_the_draft_grow(writer: lyrics.TransformersWriter) -> None:
    seen: list[tuple[str, int]] = []
    draft = write_draft(
        writer, QUICK, seed=7, on_text=lambda text, count: seen.append((text, count))
    )
    assert [count for _, count in seen] == list(range(1, QUICK.max_tokens + 1))
    assert seen[-1][0] == draft.lyrics
    assert len({text for text, _ in seen}) > 10


# --- the job ---------------------------------------------------------------------------------


def test_lyrics_job_streams_then_finishes(lyric_studio: Studio) -> None:
    job = lyrics.submit_lyrics(lyric_studio, replace(QUICK, max_tokens=300))
    partial: list[str] = []

    def watch(current: Job) -> bool:
        if (
            current.status == RUNNING
            and current.partial_text
            and current.partial_text not in partial
        ):
            partial.append(current.partial_text)
        return current.is_finished

    done = wait_until(lyric_studio, job.id, watch)
    assert done.status == DONE, done.error
    assert len(partial) >= 3, partial
    assert done.partial_text not in partial[:1]
    result = done.result
    assert result["lyrics"] == done.partial_text and result["lyrics"]
    assert result["seed"] == 7 and result["request"]["seed"] == 7
    assert result["tokens"] == 300 and result["backend"] == "transformers"
    assert result["caption"] == lyrics.suggest_caption(QUICK)
    assert lyrics.writer_slot(lyric_studio).status().state == "ready"
    # Same seed through the queue: the same draft.
    again = wait_for(
        lyric_studio, lyrics.submit_lyrics(lyric_studio, replace(QUICK, max_tokens=300)).id
    )
    assert again.result["lyrics"] == result["lyrics"]


def test_random_seed_is_reported(lyric_studio: Studio) -> None:
    job = wait_for(lyric_studio, lyrics.submit_lyrics(lyric_studio, replace(QUICK, seed=None)).id)
    assert job.status == DONE, job.error
    assert job.result["seed"] >= 1 and job.result["request"]["seed"] == job.result["seed"]


def test_cancel_stops_the_writer(lyric_studio: Studio) -> None:
    job = lyrics.submit_lyrics(lyric_studio, replace(QUICK, max_tokens=2000))
    wait_until(lyric_studio, job.id, lambda current: bool(current.partial_text))
    assert lyric_studio.jobs.cancel(job.id)
    stopped = wait_for(lyric_studio, job.id)
    assert stopped.status == CANCELLED
    assert stopped.step < 2000
    # The worker carries on with the next job.
    follow = wait_for(lyric_studio, lyrics.submit_lyrics(lyric_studio, QUICK).id)
    assert follow.status == DONE, follow.error


def test_bad_requests_name_their_fields(lyric_studio: Studio) -> None:
    with pytest.raises(InvalidRequest) as invalid:
        lyrics.submit_lyrics(
            lyric_studio,
            LyricsRequest(
                brief="  ",
                structure=",",
                language="xx",
                rhyme="perfect",
                verse_lines=40,
                temperature=3.0,
                top_p=0.0,
                top_k=500,
                max_tokens=5,
                seed=-3,
            ),
        )
    fields = {problem.field for problem in invalid.value.problems}
    assert fields == {
        "brief", "structure", "language", "rhyme", "verse_lines", "temperature", "top_p",
        "top_k", "max_tokens", "seed",
    }  # fmt: skip
    assert not lyric_studio.jobs.recent(kinds=("lyrics",))


def test_missing_writer_fails_with_a_message_and_the_studio_carries_on(
    settings: Settings, tmp_path
) -> None:
    studio = Studio(
        replace(settings, writer_model=str(tmp_path / "nowhere"), writer_backend="transformers")
    ).start()
    try:
        failed = wait_for(studio, lyrics.submit_lyrics(studio, QUICK).id)
        assert failed.status == FAILED
        assert "does not exist" in failed.error and "lyric writer" in failed.error
        not_a_model = tmp_path / "empty"
        not_a_model.mkdir()
        (not_a_model / "notes.txt").write_text("hello")
        with pytest.raises(ModelError, match=r"no config\.json"):
            load_writer(not_a_model, backend="transformers", device="cpu", dtype=torch.float32)
        song = wait_for(studio, studio.jobs.submit("load", {"model": "dit"}).id)
        assert song.status == DONE, song.error
    finally:
        studio.stop()


# --- the library -----------------------------------------------------------------------------


def test_keep_edit_and_reopen_drafts(lyric_studio: Studio) -> None:
    job = wait_for(lyric_studio, lyrics.submit_lyrics(lyric_studio, QUICK).id)
    request = LyricsRequest.from_dict(job.result["request"])
    kept = lyrics.keep_draft(
        lyric_studio, "[Verse 1]\nfirst take", request=request, job_id=job.id, model="tiny"
    )
    assert kept.kind == "lyrics" and kept.operation == "write" and kept.job_id == job.id
    assert kept.title == lyrics.suggest_title(request)
    assert kept.meta["lyrics"] == "[Verse 1]\nfirst take"
    assert LyricsRequest.from_dict(kept.meta["request"]) == request
    assert lyric_studio.library.file(kept.id, "lyrics.txt").read_text() == "[Verse 1]\nfirst take"
    edited = lyrics.keep_draft(
        lyric_studio, "[Verse 1]\nsecond take\n", request=request, title="Rain", parent_id=kept.id
    )
    assert edited.operation == "edit" and edited.title == "Rain"
    assert [item.id for item in lyric_studio.library.lineage(edited.id)] == [kept.id, edited.id]
    assert [item.id for item in lyrics.kept_drafts(lyric_studio)] == [edited.id, kept.id]
    with pytest.raises(lyrics.StudioError):
        lyrics.keep_draft(lyric_studio, "  \n", request=request)


def test_character_limit() -> None:
    assert not lyrics.over_limit("x" * 4096)
    assert lyrics.over_limit("x" * 4097)


# --- mlx (Apple Silicon) ---------------------------------------------------------------------


def test_mlx_import_is_guarded(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a Linux machine (or a Mac without mlx-lm) looks like to the import.
    for name in ("mlx", "mlx.core", "mlx_lm"):
        monkeypatch.setitem(sys.modules, name, None)
    available, reason = lyrics.mlx_status()
    assert not available and "mlx-lm" in reason
    assert lyrics.choose_backend("auto") == "transformers"
    assert lyrics.choose_backend("mlx") == "mlx"
    with pytest.raises(ModelError, match="set to mlx, but mlx-lm is not installed"):
        load_writer(tiny_writer_folder(), backend="mlx", device="mps", dtype=torch.float32)
    with pytest.raises(ModelError, match="auto, transformers or mlx"):
        lyrics.choose_backend("llama.cpp")


def test_mlx_gets_every_sampling_setting() -> None:
    sampling = Sampling.of(LyricsRequest(brief="x", temperature=0.7, top_p=0.92, top_k=33))
    assert lyrics.mlx_sampler_arguments(sampling) == {
        "temp": 0.7,
        "top_p": 0.92,
        "top_k": 33,
        "min_p": 0.0,
    }
    # mlx-lm spells "no top-p" as 0, not 1.
    assert lyrics.mlx_sampler_arguments(Sampling(0.0, 1.0, 0))["top_p"] == 0.0
    assert lyrics.mlx_logits_processor_arguments(sampling) == {
        "repetition_penalty": lyrics.REPETITION_PENALTY
    }


def test_mlx_writer_runs_where_mlx_is_installed() -> None:
    """Runs on Apple Silicon (and anywhere `mlx[cpu]` is installed); Linux CI skips it."""
    pytest.importorskip("mlx_lm")
    writer = load_writer(tiny_writer_folder(), backend="mlx", device="mps", dtype=None)
    first = write_draft(writer, QUICK, seed=3)
    assert first.tokens == QUICK.max_tokens
    assert write_draft(writer, QUICK, seed=3).raw_text == first.raw_text
    assert write_draft(writer, QUICK, seed=4).raw_text != first.raw_text
