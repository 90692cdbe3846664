"""The planner's prompts and chain of thought, byte for byte against upstream's formats.

The tiny tokenizer carries Qwen's ChatML template, so each expected string below is what
upstream ACE-Step 1.5 would send through the same template (research notes §1a).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from core import planner_prompts as prompts
from core.planner import codes_prompts, reasoning_prompts
from core.request import SongRequest, Thinking
from tests.tiny.planner import SUBFOLDER, build_tiny_planner

SYSTEM = "<|im_start|>system\n# Instruction\n{}\n\n<|im_end|>\n"
GENERATE = SYSTEM.format("Generate audio semantic tokens based on the given conditions:")
USER = "<|im_start|>user\n{}<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"

CAPTION = "dreamy synth pop, female vocals"
LYRICS = "[Verse 1]\nneon on the water\n[Chorus]\nstay a while"
COT = "<think>\nbpm: 118\ncaption: A dreamy synth-pop song.\nduration: 60\n</think>"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    folder = build_tiny_planner(tmp_path_factory.mktemp("planner")) / SUBFOLDER
    return AutoTokenizer.from_pretrained(folder)


def song(cfg: float = 2.0, negative: str = "NO USER INPUT", **changes) -> SongRequest:
    thinking = Thinking(enabled=True, cfg_scale=cfg, negative_prompt=negative)
    return replace(SongRequest(caption=CAPTION, lyrics=LYRICS, thinking=thinking), **changes)


def test_reasoning_prompt_without_guidance(tokenizer):
    expected = GENERATE + USER.format(f"# Caption\n{CAPTION}\n\n# Lyric\n{LYRICS}\n") + ASSISTANT
    assert reasoning_prompts(tokenizer, song(cfg=1.0)) == [expected]


def test_reasoning_prompts_with_guidance_drop_the_caption(tokenizer):
    cond, uncond = reasoning_prompts(tokenizer, song())
    assert (
        cond == GENERATE + USER.format(f"# Caption\n{CAPTION}\n\n# Lyric\n{LYRICS}\n") + ASSISTANT
    )
    assert uncond == GENERATE + USER.format(f"# Lyric\n{LYRICS}\n") + ASSISTANT
    # An empty negative prompt counts as none, as upstream's check does.
    assert reasoning_prompts(tokenizer, song(negative="  "))[1] == uncond


def test_reasoning_prompts_with_a_negative_prompt_put_it_in_the_caption(tokenizer):
    _, uncond = reasoning_prompts(tokenizer, song(negative="lo-fi, muddy mix"))
    expected_user = f"# Caption\nlo-fi, muddy mix\n\n# Lyric\n{LYRICS}\n"
    assert uncond == GENERATE + USER.format(expected_user) + ASSISTANT


def test_instrumental_songs_send_the_instrumental_tag_as_lyrics(tokenizer):
    (cond,) = reasoning_prompts(tokenizer, song(cfg=1.0, instrumental=True))
    assert "# Lyric\n[Instrumental]\n" in cond


def test_codes_prompt_prefills_the_assistant_turn_with_the_reasoning(tokenizer):
    cond_user = USER.format(f"# Caption\n{CAPTION}\n\n# Lyric\n{LYRICS}\n")
    expected = GENERATE + cond_user + ASSISTANT + COT + "<|im_end|>\n"
    assert codes_prompts(tokenizer, song(cfg=1.0), COT) == [expected]
    cond, uncond = codes_prompts(tokenizer, song(), COT)
    assert cond == expected
    # The unconditional half: an empty reasoning, and the original caption (no negative).
    assert uncond == GENERATE + cond_user + ASSISTANT + "<think>\n</think><|im_end|>\n"


def test_codes_prompt_uses_a_negative_prompt_as_the_unconditional_caption(tokenizer):
    _, uncond = codes_prompts(tokenizer, song(negative="harsh noise"), COT)
    user = USER.format(f"# Caption\nharsh noise\n\n# Lyric\n{LYRICS}\n")
    assert uncond == GENERATE + user + ASSISTANT + "<think>\n</think><|im_end|>\n"


def test_codes_prompt_ends_with_a_line_break_whatever_the_template(tokenizer):
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}{% endfor %}"
    )
    text = prompts.codes_prompt(bare, CAPTION, LYRICS, COT)
    assert text.endswith("</think>\n")


def test_create_sample_prompt(tokenizer):
    system = SYSTEM.format(
        "Expand the user's input into a more detailed and specific musical description:"
    )
    text = prompts.inspire_prompt(tokenizer, "a lullaby for a rainy night", instrumental=False)
    assert (
        text
        == system + USER.format("a lullaby for a rainy night\n\ninstrumental: false") + ASSISTANT
    )
    empty = prompts.inspire_prompt(tokenizer, "  ", instrumental=True)
    assert empty == system + USER.format("NO USER INPUT\n\ninstrumental: true") + ASSISTANT


def test_format_prompt(tokenizer):
    system = SYSTEM.format(
        "Format the user's input into a more detailed and specific musical description:"
    )
    text = prompts.format_prompt(tokenizer, CAPTION, LYRICS)
    assert text == system + USER.format(f"# Caption\n{CAPTION}\n\n# Lyric\n{LYRICS}") + ASSISTANT
    empty = prompts.format_prompt(tokenizer, "", "")
    assert (
        empty
        == system + USER.format("# Caption\nNO USER INPUT\n\n# Lyric\n[Instrumental]") + ASSISTANT
    )


def test_understand_prompt(tokenizer):
    system = SYSTEM.format(
        "Understand the given musical conditions and describe the audio semantics accordingly:"
    )
    codes = "<|audio_code_7|><|audio_code_41|>"
    assert prompts.understand_prompt(tokenizer, codes) == system + USER.format(codes) + ASSISTANT


def test_chain_of_thought_is_sorted_yaml_without_genres():
    metadata = {
        "timesignature": "4/4",
        "bpm": "118",
        "caption": "A dreamy synth-pop song.",
        "duration": 60,
        "genres": "synth-pop",
        "keyscale": "F# minor",
        "language": "en",
        "ignored": "x",
    }
    assert prompts.cot_text(metadata) == (
        "<think>\nbpm: 118\ncaption: A dreamy synth-pop song.\nduration: 60\n"
        "keyscale: F# minor\nlanguage: en\ntimesignature: 4\n</think>"
    )
    assert prompts.cot_text({}) == "<think>\n\n</think>"


def test_long_captions_fold_like_yaml_and_parse_back():
    caption = (
        "An expansive cinematic pop ballad that opens on felt piano and a close, breathy "
        "female vocal, then swells into wide analog synth pads and gated drums."
    )
    text = prompts.cot_text({"bpm": 72, "caption": caption, "keyscale": "D♭ major"})
    # YAML's width-80 fold onto an indented line, as the model was trained on.
    assert text == (
        "<think>\nbpm: 72\ncaption: An expansive cinematic pop ballad that opens on felt piano "
        "and a close, breathy\n  female vocal, then swells into wide analog synth pads and "
        "gated drums.\nkeyscale: D♭ major\n</think>"
    )
    parsed = prompts.parse_cot(text)
    assert parsed == {"bpm": 72, "caption": caption, "keyscale": "D♭ major"}


def test_parse_reads_an_unclosed_reasoning_and_lyrics_after_it():
    text = "<think>\nbpm: 96\ncaption: Warm soul.\nduration: 40\nlanguage: en\ntimesignature: 3\n"
    assert prompts.parse_cot(text) == {
        "bpm": 96,
        "caption": "Warm soul.",
        "duration": 40,
        "language": "en",
        "timesignature": "3",
    }
    answer = text + "</think>\n# Lyric\n[Verse]\nhello<|im_end|>"
    assert prompts.lyrics_after_thinking(answer) == "[Verse]\nhello"
    assert prompts.lyrics_after_thinking(text) == ""


def test_the_real_layout_is_what_the_tests_load(tmp_path: Path):
    umbrella = build_tiny_planner(tmp_path)
    assert (umbrella / SUBFOLDER / "config.json").exists()
    assert (umbrella / SUBFOLDER / "model.safetensors").exists()
    assert (umbrella / SUBFOLDER / "tokenizer_config.json").exists()
