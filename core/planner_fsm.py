"""Constrained decoding for the 5 Hz LM planner: a token-level state machine held in tensors.

The planner writes its chain of thought as YAML inside `<think>` tags, in a fixed field order,
then audio codes. Upstream ACE-Step enforces the format with a Python state machine that runs
on the host after every token. Here the same rules are compiled, once per request, into
tables on the decoding device, so a step's mask and state update are tensor ops that a CUDA
graph can capture:

- field names are forced, in order: bpm, caption, duration, (genres), keyscale, language,
  timesignature; each name is written as upstream writes it (the longest single-token
  prefix, repeatedly), with the value's leading space left to the value;
- bpm 30-300, duration 10 to the Studio's limit, keyscale one of the 70 keys, language one of
  the 51 codes, timesignature 2/3/4/6: each a prefix tree over the tokenizer's own
  tokenization of `"{field}: {value}"`, ending in a newline. The language's first token is
  chosen greedily, as upstream does;
- a value the musician set is force-decoded verbatim as the tokens of `" {value}\\n"`;
- caption: free text without backticks, audio codes or special tokens, at most 512 tokens.
  After a line break the most likely next token decides, as upstream: whitespace continues
  the caption (YAML folds long captions onto indented lines); anything else starts the next
  field's name;
- genres (only when understanding or drafting a sample): free text on one line;
- the end: `</think>` and free lyrics without codes (understand, create sample, format), or
  EOS right after the last field (the planning phase stops at the reasoning's end);
- audio codes (`CodeCountConstraint`): only codes 0-63999 and EOS; with a target, exactly
  that many codes and then EOS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from core import music
from core.fast_decode import take
from vendor.models import AUDIO_CODEBOOK_SIZE

FIELD_ORDER = ("bpm", "caption", "duration", "genres", "keyscale", "language", "timesignature")
CAPTION_TOKEN_LIMIT = 512
GENRES_TOKEN_LIMIT = 64  # upstream matches genres against a vocabulary; a line of them is short
DURATION_MIN = 10
AUDIO_CODE = re.compile(r"<\|audio_code_(\d+)\|>")

# Token classes that decide a free-text state's next state.
OTHER, SPACE, NEWLINE = 0, 1, 2
# When a state's alternative allowed set applies, judged on the step's most likely token.
NEVER, TOP_NOT_SPACE, TOP_IS_NEWLINE = 0, 1, 2


# --- What the FSM knows about a tokenizer ---------------------------------------------------


@dataclass
class PlannerVocabulary:
    """Token facts and prefix trees for one tokenizer, computed once per loaded planner."""

    tokenizer: Any
    vocab_size: int
    """Rows of the model's LM head; can exceed len(tokenizer) (padded embeddings)."""
    newline: int
    eos: int
    end_ids: tuple[int, ...]
    think_end: int
    code_ids: dict[int, int]
    """Audio code N (0-63999) -> token id, read from the tokenizer's added tokens."""
    text_ok: Tensor = field(repr=False)
    """Ordinary text tokens: not special, not a code, no backtick."""
    not_code: Tensor = field(repr=False)
    token_class: Tensor = field(repr=False)
    max_duration: int = 600
    tries: dict[str, dict[tuple[int, ...], set[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, vocab_size: int, max_duration: int = 600
    ) -> PlannerVocabulary:
        size = max(vocab_size, len(tokenizer))
        special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
        code_ids: dict[int, int] = {}
        for token_id, token in tokenizer.added_tokens_decoder.items():
            match = AUDIO_CODE.fullmatch(str(token))
            if match and int(match.group(1)) < AUDIO_CODEBOOK_SIZE:
                code_ids[int(match.group(1))] = token_id
        if not code_ids:
            raise ValueError("this tokenizer has no <|audio_code_N|> tokens: it is not a planner")
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        text_ok = torch.zeros(size, dtype=torch.bool)
        not_code = torch.ones(size, dtype=torch.bool)
        token_class = torch.full((size,), OTHER, dtype=torch.long)
        all_codes = {
            token_id
            for token_id, token in tokenizer.added_tokens_decoder.items()
            if AUDIO_CODE.fullmatch(str(token))
        }
        for token_id, text in enumerate(texts):
            if "\n" in text:
                token_class[token_id] = NEWLINE
            elif text[:1] in (" ", "\t"):
                token_class[token_id] = SPACE
            # A line break inside a token ("\n  x") would hide the next field in the YAML;
            # a token that ends a line (".\n") is fine.
            one_line = "\n" not in text.rstrip("\n")
            text_ok[token_id] = (
                token_id not in special and "`" not in text and text != "" and one_line
            )
        not_code[list(all_codes)] = False
        not_code[len(tokenizer) :] = False
        newline = _single_token(tokenizer, "\n")
        eos = tokenizer.eos_token_id
        end_ids = tuple(dict.fromkeys(i for i in (eos, tokenizer.pad_token_id) if i is not None))
        vocabulary = cls(
            tokenizer=tokenizer,
            vocab_size=size,
            newline=newline,
            eos=eos,
            end_ids=end_ids,
            think_end=_single_token(tokenizer, "</think>"),
            code_ids=dict(sorted(code_ids.items())),
            text_ok=text_ok,
            not_code=not_code,
            token_class=token_class,
            max_duration=max_duration,
        )
        vocabulary._build_tries()
        return vocabulary

    # --- audio codes ---------------------------------------------------------------------

    @property
    def code_slice(self) -> tuple[int, int] | None:
        """(first id, last id + 1) when codes 0..N are consecutive token ids, as in the real
        tokenizer: then the codes phase multiplies only those rows of the LM head."""
        first = self.code_ids.get(0)
        if first is None:
            return None
        count = len(self.code_ids)
        if all(self.code_ids.get(n) == first + n for n in range(count)):
            return first, first + count
        return None

    def codes_to_text(self, token_ids: Iterable[int]) -> str:
        by_id = {token_id: code for code, token_id in self.code_ids.items()}
        return "".join(f"<|audio_code_{by_id[t]}|>" for t in token_ids if t in by_id)

    # --- prefix trees ----------------------------------------------------------------------

    def _build_tries(self) -> None:
        low, high = music.BPM_RANGE
        values: dict[str, Sequence[str]] = {
            "bpm": [str(v) for v in range(low, high + 1)],
            "duration": [str(v) for v in range(DURATION_MIN, self.max_duration + 1)],
            "keyscale": music.KEYS,
            "language": music.LANGUAGES,
            "timesignature": [str(v) for v in music.TIME_SIGNATURES],
        }
        for name, options in values.items():
            self.tries[name] = self._trie(name, options)

    def value_tokens(self, name: str, value: str) -> list[int] | None:
        """A value's tokens as they follow `"{name}:"` in `"{name}: {value}"` (upstream builds
        its trees this way, so a value's leading space merges as the tokenizer merges it)."""
        tokenizer = self.tokenizer
        context = tokenizer.encode(f"{name}:", add_special_tokens=False)
        full = tokenizer.encode(f"{name}: {value}", add_special_tokens=False)
        if full[: len(context)] != context or len(full) == len(context):
            return None
        return full[len(context) :]

    def _trie(self, name: str, options: Iterable[str]) -> dict[tuple[int, ...], set[int]]:
        trie: dict[tuple[int, ...], set[int]] = {}
        for option in options:
            tokens = self.value_tokens(name, option)
            if tokens is None:
                continue
            for index in range(len(tokens) + 1):
                children = trie.setdefault(tuple(tokens[:index]), set())
                children.add(tokens[index] if index < len(tokens) else self.newline)
        return trie

    def forced_tokens(self, text: str) -> list[int]:
        """How upstream forces a fixed string: repeatedly the longest prefix that is one token."""
        tokenizer = self.tokenizer
        tokens: list[int] = []
        rest = text
        while rest:
            for end in range(len(rest), 0, -1):
                encoded = tokenizer.encode(rest[:end], add_special_tokens=False)
                if len(encoded) == 1:
                    tokens.append(encoded[0])
                    rest = rest[end:]
                    break
            else:
                tokens.extend(tokenizer.encode(rest, add_special_tokens=False))
                break
        return tokens

    def user_value_tokens(self, value: str) -> list[int]:
        """A value the musician set, force-decoded as upstream injects it: `" {value}\\n"`."""
        return self.tokenizer.encode(f" {value}\n", add_special_tokens=False)


def _single_token(tokenizer: Any, text: str) -> int:
    tokens = tokenizer.encode(text, add_special_tokens=False)
    if len(tokens) != 1:
        raise ValueError(f"the planner tokenizer has no single token for {text!r}")
    return tokens[0]


# --- The chain-of-thought machine -----------------------------------------------------------


@dataclass(frozen=True)
class CotSpec:
    """What one chain of thought must contain."""

    user_values: dict[str, str] = field(default_factory=dict)
    """Fields the musician set, force-decoded verbatim (e.g. {"bpm": "120"})."""
    skip_caption: bool = False
    skip_language: bool = False
    skip_genres: bool = True
    then_lyrics: bool = False
    """False: stop (EOS) after the last field (planning). True: write `</think>` and free
    lyrics without codes (understand, create sample, format)."""

    def fields(self) -> list[str]:
        skipped = {
            "caption": self.skip_caption,
            "language": self.skip_language,
            "genres": self.skip_genres,
        }
        return [name for name in FIELD_ORDER if not skipped.get(name, False)]


@dataclass
class _State:
    ids: list[int] = field(default_factory=list)
    dense: int = 0
    alt_ids: list[int] = field(default_factory=list)
    alt_dense: int = 0
    test: int = NEVER
    moves: dict[int, int] = field(default_factory=dict)
    by_class: tuple[int, int, int] | None = None
    greedy: bool = False
    limit: int = 0
    """Free-text states count their tokens; at `limit` they hand over to `over_limit`."""
    over_limit: int | None = None


# Dense masks a state can use, by index; 0 allows nothing.
NO_DENSE, CAPTION_TEXT, CAPTION_CONTINUATION, ONE_LINE_TEXT, LYRICS_TEXT = range(5)


class CotConstraint:
    """The compiled machine: a `core.fast_decode.TokenConstraint` over the full vocabulary."""

    def __init__(self, vocabulary: PlannerVocabulary, spec: CotSpec):
        self.vocabulary = vocabulary
        self.spec = spec
        self.states: list[_State] = []
        self.start = self._compile()
        self._tables: dict[str, Tensor] = {}

    # --- building the states on the host ---------------------------------------------------

    def _new(self, **kwargs: Any) -> int:
        self.states.append(_State(**kwargs))
        return len(self.states) - 1

    def _chain(self, tokens: Sequence[int], then: int) -> int:
        """States forcing `tokens` one by one, then moving to `then`; returns the first."""
        target = then
        for token in reversed(tokens):
            target = self._new(ids=[token], moves={token: target})
        return target

    def _compile(self) -> int:
        vocabulary, spec = self.vocabulary, self.spec
        done = self._new(ids=[vocabulary.eos])
        self.states[done].moves = {vocabulary.eos: done}
        if spec.then_lyrics:
            lyrics = self._new(dense=LYRICS_TEXT, by_class=(0, 0, 0))
            self.states[lyrics].by_class = (lyrics, lyrics, lyrics)
            end = self._chain(vocabulary.forced_tokens("</think>"), lyrics)
        else:
            # The planning phase ends where upstream's does: EOS in place of `</think>`.
            end = done
        target = end
        names = spec.fields()
        for name in reversed(names):
            target = self._field(name, target)
        return self._chain(vocabulary.forced_tokens("<think>\n"), target)

    def _field(self, name: str, after: int) -> int:
        """States for `name:` and its value, ending in `after`; returns the first."""
        vocabulary = self.vocabulary
        name_tokens = vocabulary.forced_tokens(f"{name}:")
        if name in self.spec.user_values:
            value = self._chain(vocabulary.user_value_tokens(self.spec.user_values[name]), after)
        elif name == "caption":
            value = self._caption(after)
        elif name == "genres":
            value = self._one_line(after)
        else:
            value = self._trie_states(vocabulary.tries[name], after, greedy_root=name == "language")
        return self._chain(name_tokens, value)

    def _trie_states(
        self, trie: dict[tuple[int, ...], set[int]], after: int, greedy_root: bool
    ) -> int:
        newline = self.vocabulary.newline
        index_of: dict[tuple[int, ...], int] = {}
        for prefix in sorted(trie, key=len, reverse=True):
            children = sorted(trie[prefix])
            moves = {}
            for token in children:
                moves[token] = after if token == newline else index_of[(*prefix, token)]
            index_of[prefix] = self._new(
                ids=children, moves=moves, greedy=greedy_root and not prefix
            )
        return index_of[()]

    def _caption(self, after: int) -> int:
        """Free text; after a line break, whitespace continues it and anything else is the next
        field's name (forced). At the token limit, a line break, then the next field."""
        newline = self.vocabulary.newline
        first_of_next = self._first_token(after)
        caption = self._new(dense=CAPTION_TEXT, limit=CAPTION_TOKEN_LIMIT)
        line_break = self._new(
            dense=CAPTION_CONTINUATION,
            alt_ids=[first_of_next],
            test=TOP_NOT_SPACE,
            moves={first_of_next: self._after_first(after)},
            limit=CAPTION_TOKEN_LIMIT,
        )
        self.states[caption].by_class = (caption, caption, line_break)
        self.states[line_break].by_class = (caption, caption, line_break)
        full = self._new(ids=[newline], moves={newline: line_break})
        close = self._new(ids=[first_of_next], moves={first_of_next: self._after_first(after)})
        self.states[caption].over_limit = full
        self.states[line_break].over_limit = close
        return caption

    def _one_line(self, after: int) -> int:
        """Genres: some text, then a line break when it is the most likely token (or at the
        token limit)."""
        newline = self.vocabulary.newline
        text = self._new(
            dense=ONE_LINE_TEXT, ids=[newline], alt_ids=[newline], test=TOP_IS_NEWLINE,
            moves={newline: after}, limit=GENRES_TOKEN_LIMIT,
        )  # fmt: skip
        self.states[text].by_class = (text, text, after)
        start = self._new(
            dense=ONE_LINE_TEXT, by_class=(text, text, text), limit=GENRES_TOKEN_LIMIT
        )
        end = self._new(ids=[newline], moves={newline: after})
        self.states[text].over_limit = end
        self.states[start].over_limit = end
        return start

    def _first_token(self, state: int) -> int:
        ids = self.states[state].ids
        if len(ids) != 1:
            raise ValueError("a field name must start with one forced token")
        return ids[0]

    def _after_first(self, state: int) -> int:
        return self.states[state].moves[self._first_token(state)]

    # --- the tables on the device ----------------------------------------------------------

    def _build_tables(self, device: torch.device) -> dict[str, Tensor]:
        vocabulary = self.vocabulary
        size = vocabulary.vocab_size
        states = self.states
        width = max(1, *(max(len(s.ids), len(s.alt_ids)) for s in states))
        moves_width = max(1, *(len(s.moves) for s in states))

        def padded(rows: list[list[int]], columns: int, pad: int) -> Tensor:
            return torch.tensor([row + [pad] * (columns - len(row)) for row in rows])

        # One spare column at `size`: padding entries scatter there and are cut off.
        dense = torch.zeros(5, size + 1, dtype=torch.bool)
        caption = vocabulary.text_ok & vocabulary.not_code
        dense[CAPTION_TEXT, :size] = caption
        dense[CAPTION_CONTINUATION, :size] = caption & (vocabulary.token_class == SPACE)
        dense[ONE_LINE_TEXT, :size] = caption & (vocabulary.token_class != NEWLINE)
        dense[LYRICS_TEXT, :size] = vocabulary.not_code
        tables = {
            "dense": dense,
            "ids": padded([s.ids for s in states], width, size),
            "alt_ids": padded([s.alt_ids for s in states], width, size),
            "dense_id": torch.tensor([s.dense for s in states]),
            "alt_dense_id": torch.tensor([s.alt_dense for s in states]),
            "test": torch.tensor([s.test for s in states]),
            "move_ids": padded([list(s.moves) for s in states], moves_width, -1),
            "move_to": padded([list(s.moves.values()) for s in states], moves_width, 0),
            "by_class": torch.tensor(
                [list(s.by_class) if s.by_class else [0, 0, 0] for s in states]
            ),
            "greedy": torch.tensor([s.greedy for s in states]),
            "counting": torch.tensor([s.limit > 0 for s in states], dtype=torch.long),
            "limit": torch.tensor([s.limit for s in states]),
            "over_limit": torch.tensor(
                [s.over_limit if s.over_limit is not None else i for i, s in enumerate(states)]
            ),
            "token_class": vocabulary.token_class,
            "iota": torch.arange(size),
        }
        return {name: tensor.to(device) for name, tensor in tables.items()}

    # --- TokenConstraint -----------------------------------------------------------------

    def reset(self, device: torch.device) -> None:
        if not self._tables or self._tables["dense"].device != device:
            self._tables = self._build_tables(device)
        self.state = torch.tensor(self.start, device=device)
        self.current = torch.tensor(self.start, device=device)
        self.field_tokens = torch.zeros((), dtype=torch.long, device=device)

    def mask(self, logits: Tensor) -> Tensor:
        t = self._tables
        size = self.vocabulary.vocab_size
        logits = logits[:size]
        counting = take(t["counting"], self.state) > 0
        over = counting & (self.field_tokens >= take(t["limit"], self.state))
        state = torch.where(over, take(t["over_limit"], self.state), self.state)
        self.current.copy_(state)
        top = torch.argmax(logits)
        test = take(t["test"], state)
        use_alt = ((test == TOP_NOT_SPACE) & (take(t["token_class"], top) != SPACE)) | (
            (test == TOP_IS_NEWLINE) & (top == self.vocabulary.newline)
        )
        dense_id = torch.where(use_alt, take(t["alt_dense_id"], state), take(t["dense_id"], state))
        ids = torch.where(use_alt, take(t["alt_ids"], state), take(t["ids"], state))
        allowed = take(t["dense"], dense_id).scatter(0, ids, True)[:size]
        masked = logits.masked_fill(~allowed, float("-inf"))
        # Upstream picks the language's first token greedily, then completes it.
        best = torch.argmax(masked)
        keep_only_best = take(t["greedy"], state) & (t["iota"] != best)
        return masked.masked_fill(keep_only_best, float("-inf"))

    def advance(self, token_id: Tensor) -> None:
        t = self._tables
        state = self.current
        match = take(t["move_ids"], state) == token_id
        explicit = (match.long() * take(t["move_to"], state)).sum()
        token_class = take(t["token_class"], token_id.clamp(max=self.vocabulary.vocab_size - 1))
        by_class = take(take(t["by_class"], state), token_class)
        following = torch.where(match.any(), explicit, by_class)
        # A free-text field counts its own tokens; leaving it resets the count.
        self.field_tokens.copy_(
            (self.field_tokens + take(t["counting"], state)) * take(t["counting"], following)
        )
        self.state.copy_(following)


# --- The audio-code machine -----------------------------------------------------------------


class CodeCountConstraint:
    """Only audio codes and EOS; with a target, exactly `target` codes and then EOS.

    Works in the coordinates of the logits it is given: a VocabSlice whose rows are the codes
    followed by EOS (`codes=slice size - 1`), or the full vocabulary with a code mask."""

    def __init__(self, code_mask: Tensor, eos_index: int, target: int | None):
        self.code_mask = code_mask
        self.eos_index = eos_index
        self.target = target

    @classmethod
    def for_slice(cls, codes: int, target: int | None) -> CodeCountConstraint:
        mask = torch.ones(codes + 1, dtype=torch.bool)
        mask[codes] = False
        return cls(mask, codes, target)

    @classmethod
    def for_vocabulary(
        cls, vocabulary: PlannerVocabulary, target: int | None
    ) -> CodeCountConstraint:
        mask = torch.zeros(vocabulary.vocab_size, dtype=torch.bool)
        mask[list(vocabulary.code_ids.values())] = True
        return cls(mask, vocabulary.eos, target)

    def reset(self, device: torch.device) -> None:
        self.count = torch.zeros((), dtype=torch.long, device=device)
        codes = self.code_mask.to(device)
        eos = torch.zeros_like(codes)
        eos[self.eos_index] = True
        self._codes, self._eos, self._either = codes, eos, codes | eos
        self._target = torch.tensor(self.target if self.target is not None else -1, device=device)

    def mask(self, logits: Tensor) -> Tensor:
        if self.target is None:
            allowed = self._either
        else:
            allowed = torch.where(self.count < self._target, self._codes, self._eos)
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, token_id: Tensor) -> None:
        self.count += 1
