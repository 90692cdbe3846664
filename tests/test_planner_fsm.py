"""The planner's constrained decoding, driven by random logits: whatever the model would say,
what comes out parses, stays in range, keeps the musician's values and the exact code count.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from core import music
from core import planner_prompts as prompts
from core.planner_fsm import (
    CAPTION_TOKEN_LIMIT,
    GENRES_TOKEN_LIMIT,
    CodeCountConstraint,
    CotConstraint,
    CotSpec,
    PlannerVocabulary,
)
from tests.test_fast_decode import NoHostSync
from tests.tiny.planner import INVALID_CODES, SUBFOLDER, VALID_CODES, build_tiny_planner

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory: pytest.TempPathFactory) -> PlannerVocabulary:
    folder = build_tiny_planner(tmp_path_factory.mktemp("planner")) / SUBFOLDER
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return PlannerVocabulary.from_tokenizer(tokenizer, len(tokenizer), max_duration=480)


def drive(constraint, size: int, seed: int, *, steps: int = 1200, bias=None, stop=()):
    """Sample from random logits through the constraint until a stop token."""
    generator = torch.Generator().manual_seed(seed)
    constraint.reset(CPU)
    tokens: list[int] = []
    for _ in range(steps):
        logits = torch.randn(size, generator=generator) * 3
        if bias is not None:
            logits = logits + bias
        with NoHostSync():
            masked = constraint.mask(logits)
        assert torch.isfinite(masked).any(), "the machine reached a dead end"
        token = torch.multinomial(torch.softmax(masked, -1), 1, generator=generator)[0]
        with NoHostSync():
            constraint.advance(token)
        tokens.append(int(token))
        if int(token) in stop:
            break
    return tokens


def reasoning(vocabulary, spec, seed, bias=None) -> tuple[str, list[int]]:
    tokens = drive(
        CotConstraint(vocabulary, spec),
        vocabulary.vocab_size,
        seed,
        bias=bias,
        stop=vocabulary.end_ids,
    )
    return vocabulary.tokenizer.decode(tokens), tokens


def field_names(text: str) -> list[str]:
    body = text.split("<think>\n", 1)[1].split("</think>")[0]
    lines = [line for line in body.split("\n") if line and not line.startswith("<|")]
    return [line.split(":")[0] for line in lines if not line[0].isspace()]


def newline_bias(vocabulary, amount: float):
    bias = torch.zeros(vocabulary.vocab_size)
    bias[vocabulary.token_class == 2] = amount
    return bias


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("line_breaks", [0.0, 4.0])
def test_every_reasoning_parses_and_stays_in_range(vocabulary, seed, line_breaks):
    text, tokens = reasoning(vocabulary, CotSpec(), seed, newline_bias(vocabulary, line_breaks))
    assert tokens[-1] == vocabulary.eos
    assert text.startswith("<think>\n")
    assert field_names(text) == [
        "bpm",
        "caption",
        "duration",
        "keyscale",
        "language",
        "timesignature",
    ]
    fields = prompts.parse_cot(text)
    assert 30 <= fields["bpm"] <= 300
    assert 10 <= fields["duration"] <= 480  # this Studio's limit, not the model's
    assert fields["keyscale"] in music.KEYS
    assert fields["language"] in music.LANGUAGES
    assert fields["timesignature"] in ("2", "3", "4", "6")
    caption = text.split("caption:", 1)[1].split("\nduration:")[0]
    assert caption.strip()
    assert "`" not in caption and "<|" not in caption
    # Continuation lines are indented, as YAML folds them (a blank line may close it).
    assert all(line[:1] in (" ", "\t", "") for line in caption.split("\n")[1:])


def test_caption_is_cut_at_its_token_limit(vocabulary):
    never_break = newline_bias(vocabulary, -1e4)
    text, tokens = reasoning(vocabulary, CotSpec(), 3, never_break)
    assert field_names(text)[2:] == ["duration", "keyscale", "language", "timesignature"]
    newline = vocabulary.newline
    start = len(vocabulary.forced_tokens("<think>\n"))
    after_bpm = tokens.index(newline, start) + 1
    caption_start = after_bpm + len(vocabulary.forced_tokens("caption:"))
    assert tokens[caption_start + CAPTION_TOKEN_LIMIT] == newline
    assert newline not in tokens[caption_start : caption_start + CAPTION_TOKEN_LIMIT]


def test_the_musicians_values_come_out_verbatim(vocabulary):
    values = {"bpm": "120", "duration": "45", "keyscale": "F# minor", "timesignature": "3"}
    for seed in range(3):
        text, tokens = reasoning(vocabulary, CotSpec(user_values=values), seed)
        fields = prompts.parse_cot(text)
        assert fields["bpm"] == 120 and fields["duration"] == 45
        assert fields["keyscale"] == "F# minor" and fields["timesignature"] == "3"
        forced = vocabulary.forced_tokens("keyscale:") + vocabulary.user_value_tokens("F# minor")
        assert any(tokens[i : i + len(forced)] == forced for i in range(len(tokens)))


def test_skipped_fields_are_not_written(vocabulary):
    spec = CotSpec(skip_caption=True, skip_language=True)
    text, _ = reasoning(vocabulary, spec, 1)
    assert field_names(text) == ["bpm", "duration", "keyscale", "timesignature"]


def test_the_language_is_chosen_greedily(vocabulary):
    spec = CotSpec(
        skip_caption=True, user_values={"bpm": "90", "duration": "30", "keyscale": "C major"}
    )
    constraint = CotConstraint(vocabulary, spec)
    constraint.reset(CPU)
    roots = sorted(vocabulary.tries["language"][()])
    generator = torch.Generator().manual_seed(0)
    checked = False
    for _ in range(200):
        logits = torch.randn(vocabulary.vocab_size, generator=generator)
        masked = constraint.mask(logits)
        allowed = torch.isfinite(masked).nonzero().flatten().tolist()
        if constraint.states[int(constraint.current)].greedy:
            best = max(roots, key=lambda token: float(logits[token]))
            assert allowed == [best]
            checked = True
        token = allowed[0] if len(allowed) == 1 else int(torch.argmax(masked))
        constraint.advance(torch.tensor(token))
        if token == vocabulary.eos:
            break
    assert checked


@pytest.mark.parametrize("seed", range(3))
def test_understanding_writes_genres_then_lyrics_without_codes(vocabulary, seed):
    spec = CotSpec(skip_genres=False, then_lyrics=True)
    text, tokens = reasoning(vocabulary, spec, seed, newline_bias(vocabulary, 2.0))
    assert field_names(text) == [
        "bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature",
    ]  # fmt: skip
    assert "</think>" in text
    name = vocabulary.forced_tokens("genres:")
    start = next(i for i in range(len(tokens)) if tokens[i : i + len(name)] == name) + len(name)
    assert tokens.index(vocabulary.newline, start) - start <= GENRES_TOKEN_LIMIT
    after = tokens[tokens.index(vocabulary.think_end) + 1 :]
    assert not set(after) & set(vocabulary.code_ids.values())


def test_codes_come_in_the_exact_number_then_eos():
    constraint = CodeCountConstraint.for_slice(VALID_CODES, target=37)
    tokens = drive(constraint, VALID_CODES + 1, 0, steps=60, stop={VALID_CODES})
    assert len(tokens) == 38 and tokens[-1] == VALID_CODES
    assert all(token < VALID_CODES for token in tokens[:-1])


def test_without_a_target_codes_may_end_anywhere():
    constraint = CodeCountConstraint.for_slice(VALID_CODES, target=None)
    bias = torch.zeros(VALID_CODES + 1)
    bias[VALID_CODES] = 4.0
    tokens = drive(constraint, VALID_CODES + 1, 1, steps=200, bias=bias, stop={VALID_CODES})
    assert tokens[-1] == VALID_CODES and len(tokens) < 200


def test_codes_over_the_full_vocabulary_are_only_valid_codes(vocabulary):
    constraint = CodeCountConstraint.for_vocabulary(vocabulary, target=25)
    tokens = drive(constraint, vocabulary.vocab_size, 2, steps=40, stop={vocabulary.eos})
    assert len(tokens) == 26 and tokens[-1] == vocabulary.eos
    assert set(tokens[:-1]) <= set(vocabulary.code_ids.values())


def test_the_code_range_comes_from_the_tokenizer(vocabulary):
    tokenizer = vocabulary.tokenizer
    assert sorted(vocabulary.code_ids) == list(range(VALID_CODES))
    invalid = {tokenizer.convert_tokens_to_ids(f"<|audio_code_{n}|>") for n in INVALID_CODES}
    assert not invalid & set(vocabulary.code_ids.values())
    first = tokenizer.convert_tokens_to_ids("<|audio_code_0|>")
    assert vocabulary.code_slice == (first, first + VALID_CODES)
    text = vocabulary.codes_to_text([first + 3, first + 47, 0])
    assert text == "<|audio_code_3|><|audio_code_47|>"


def _values(vocabulary, trie) -> set[str]:
    newline = vocabulary.newline
    found: set[str] = set()
    for prefix, children in trie.items():
        if newline in children:
            found.add(vocabulary.tokenizer.decode(list(prefix)).strip())
    return found


def test_value_trees_hold_exactly_the_valid_values(vocabulary):
    tries = vocabulary.tries
    assert _values(vocabulary, tries["bpm"]) == {str(v) for v in range(30, 301)}
    assert _values(vocabulary, tries["duration"]) == {str(v) for v in range(10, 481)}
    assert _values(vocabulary, tries["timesignature"]) == {"2", "3", "4", "6"}
    assert _values(vocabulary, tries["language"]) == set(music.LANGUAGES)
    assert _values(vocabulary, tries["keyscale"]) == set(music.KEYS)


def test_field_names_are_forced_as_upstream_forces_them(vocabulary):
    tokenizer = vocabulary.tokenizer
    for name in ("bpm:", "timesignature:", "<think>\n"):
        tokens = vocabulary.forced_tokens(name)
        assert tokenizer.decode(tokens) == name
        # Each step takes the longest prefix that is a single token.
        rest = name
        for token in tokens:
            piece = tokenizer.decode([token])
            assert rest.startswith(piece)
            longer = [rest[:end] for end in range(len(piece) + 1, len(rest) + 1)]
            assert all(len(tokenizer.encode(text, add_special_tokens=False)) > 1 for text in longer)
            rest = rest[len(piece) :]
