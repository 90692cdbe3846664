"""The shared fast decoder on tiny random Qwen3 and Qwen2 models, on the CPU.

The static path (our forward, static cache) must give the same tokens as decoding through the
model's own forward with a DynamicCache, for the same seed; greedy decoding must match
transformers' `generate`; the sampler must draw from the distribution it claims to.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.fast_decode import (
    Decoder,
    Sampling,
    VocabSlice,
    _SamplingPlan,
    filter_top_k_top_p,
    gumbel_noise,
    hash32,
    step_key,
)
from tests.tiny.planner import SUBFOLDER, build_tiny_planner
from tests.tiny.writer import build_tiny_writer


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny matrices decode fastest on one thread; two threads on a busy 2-core CI box stall.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory: pytest.TempPathFactory):
    folder = build_tiny_planner(tmp_path_factory.mktemp("planner")) / SUBFOLDER
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(
        folder
    )


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory: pytest.TempPathFactory):
    folder = build_tiny_writer(tmp_path_factory.mktemp("qwen2") / "tiny-qwen2")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(
        folder
    )


def prompts_for(tokenizer, guided: bool) -> list[list[int]]:
    cond = tokenizer.encode("# Caption\nuplifting synth pop with bright pads\n\n# Lyric\nla la\n")
    uncond = tokenizer.encode("# Lyric\nla la\n")
    return [cond, uncond] if guided else [cond]


SAMPLING = Sampling(temperature=0.85, top_p=0.9, top_k=0, cfg_scale=2.0, seed=1234)


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("which", ["qwen3", "qwen2"])
def test_static_path_matches_the_models_own_forward(which, guided, request):
    model, tokenizer = request.getfixturevalue(which)
    prompts = prompts_for(tokenizer, guided)
    static = Decoder(model).generate(prompts, max_new_tokens=60, sampling=SAMPLING)
    plain = Decoder(model, backend="hf").generate(prompts, max_new_tokens=60, sampling=SAMPLING)
    assert static.backend == "static-eager" and plain.backend == "hf-forward"
    assert len(static.tokens) == 60
    assert static.tokens == plain.tokens


def test_greedy_matches_transformers_generate(qwen3):
    model, tokenizer = qwen3
    prompt = prompts_for(tokenizer, False)[0]
    ours = Decoder(model).generate([prompt], max_new_tokens=30, sampling=Sampling(temperature=0))
    theirs = model.generate(
        torch.tensor([prompt]), max_new_tokens=30, do_sample=False, min_new_tokens=30,
        eos_token_id=None, pad_token_id=0,
    )  # fmt: skip
    assert ours.tokens == theirs[0, len(prompt) :].tolist()


def test_same_seed_same_tokens_other_seed_other_tokens(qwen3):
    model, tokenizer = qwen3
    decoder = Decoder(model)
    prompts = prompts_for(tokenizer, True)
    first = decoder.generate(prompts, max_new_tokens=40, sampling=SAMPLING).tokens
    again = decoder.generate(prompts, max_new_tokens=40, sampling=SAMPLING).tokens
    other = decoder.generate(
        prompts, max_new_tokens=40, sampling=Sampling(0.85, 0.9, 0, 2.0, seed=99)
    ).tokens
    assert first == again
    assert first != other


def test_guidance_changes_the_tokens(qwen3):
    model, tokenizer = qwen3
    prompts = prompts_for(tokenizer, True)
    decoder = Decoder(model)
    guided = decoder.generate(prompts, max_new_tokens=40, sampling=SAMPLING).tokens
    # Scale 1 reduces guidance to the cond row alone: the same as decoding it without a pair.
    unguided = decoder.generate(
        prompts, max_new_tokens=40, sampling=Sampling(0.85, 0.9, 0, 1.0, 1234)
    ).tokens
    cond_only = decoder.generate(prompts[:1], max_new_tokens=40, sampling=SAMPLING).tokens
    assert guided != unguided
    assert unguided == cond_only


def test_vocab_slice_samples_only_its_tokens(qwen3):
    model, tokenizer = qwen3
    first = tokenizer.convert_tokens_to_ids("<|audio_code_0|>")
    last = tokenizer.convert_tokens_to_ids("<|audio_code_47|>")
    eos = tokenizer.eos_token_id
    vocab = VocabSlice(first, last + 1, (eos,))
    prompts = prompts_for(tokenizer, True)
    sampling = Sampling(temperature=1.0, seed=5, cfg_scale=2.0)
    static = Decoder(model).generate(prompts, max_new_tokens=80, sampling=sampling, vocab=vocab)
    plain = Decoder(model, backend="hf").generate(
        prompts, max_new_tokens=80, sampling=sampling, vocab=vocab
    )
    assert static.tokens == plain.tokens
    allowed = set(range(first, last + 1)) | {eos}
    assert set(static.tokens) <= allowed
    assert len(set(static.tokens)) > 5


def test_stops_at_a_stop_token_and_streams_every_token_in_order(qwen3):
    model, tokenizer = qwen3
    prompt = prompts_for(tokenizer, False)
    decoder = Decoder(model)
    full = decoder.generate(prompt, max_new_tokens=50, sampling=SAMPLING).tokens
    stop = full[20]
    first_stop = full.index(stop)
    streamed: list[list[int]] = []
    result = decoder.generate(
        prompt, max_new_tokens=50, sampling=SAMPLING, stop_ids=[stop], on_tokens=streamed.append
    )
    assert result.stop_token == stop
    assert result.tokens == full[:first_stop]
    assert [token for chunk in streamed for token in chunk] == result.tokens
    assert all(len(chunk) <= 2 for chunk in streamed)  # one per step (two from prefill+warm-up)
    chunked = decoder.generate(prompt, max_new_tokens=50, sampling=SAMPLING, sync_every=7)
    assert chunked.tokens == full


def test_a_raising_callback_cancels(qwen3):
    model, tokenizer = qwen3
    seen: list[int] = []

    class Cancelled(Exception):
        pass

    def on_tokens(new: list[int]) -> None:
        seen.extend(new)
        if len(seen) >= 5:
            raise Cancelled

    with pytest.raises(Cancelled):
        Decoder(model).generate(
            prompts_for(tokenizer, False),
            max_new_tokens=500,
            sampling=SAMPLING,
            on_tokens=on_tokens,
        )
    assert 5 <= len(seen) < 10


class EvenTokensThenEnd:
    """A tensor-only constraint: even token ids only, and the end token after `length` tokens."""

    def __init__(self, vocab_size: int, end: int, length: int):
        self.vocab_size, self.end, self.length = vocab_size, end, length

    def reset(self, device: torch.device) -> None:
        self.count = torch.zeros((), dtype=torch.long, device=device)
        ids = torch.arange(self.vocab_size, device=device)
        self.even = (ids % 2 == 0) & (ids != self.end)
        self.end_only = ids == self.end

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        allowed = torch.where(self.count >= self.length, self.end_only, self.even)
        return logits.masked_fill(~allowed, float("-inf"))

    def advance(self, token_id: torch.Tensor) -> None:
        self.count += 1


def test_a_constraint_shapes_every_step(qwen3):
    model, tokenizer = qwen3
    end = tokenizer.eos_token_id
    constraint = EvenTokensThenEnd(len(tokenizer), end, 25)
    result = Decoder(model).generate(
        prompts_for(tokenizer, True), max_new_tokens=100, sampling=SAMPLING,
        constraint=constraint, stop_ids=[end],
    )  # fmt: skip
    assert result.stop_token == end
    assert len(result.tokens) == 25
    assert all(token % 2 == 0 for token in result.tokens)


class NoHostSync(TorchDispatchMode):
    """Fails on any op that turns a tensor into a Python number. Inside a CUDA graph capture
    that is an error, so the decode step must never do it; on the CPU this mode finds it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("the decode step read a tensor back to the host")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("guided", [False, True])
def test_the_decode_step_never_syncs_with_the_host(qwen3, guided):
    model, tokenizer = qwen3
    decoder = Decoder(model)
    sampling = Sampling(temperature=0.8, top_p=0.9, top_k=20, cfg_scale=2.0, seed=3)
    first = tokenizer.convert_tokens_to_ids("<|audio_code_0|>")
    vocab = VocabSlice(first, first + 48, (tokenizer.eos_token_id,))
    constraint = EvenTokensThenEnd(49, 48, 10)
    with torch.inference_mode():
        run = decoder._start(prompts_for(tokenizer, guided), 8, sampling, constraint, vocab)
        ids, valid = decoder._padded(prompts_for(tokenizer, guided), 0)
        step = decoder._prefill_static(run, ids, valid)
        with NoHostSync():
            for _ in range(5):
                step()
    assert int(run.step) == 6


def test_top_k_and_top_p_keep_what_upstream_keeps():
    torch.manual_seed(0)
    for _ in range(20):
        logits = torch.randn(50) * 3
        for top_k, top_p in [(0, 0.9), (5, 1.0), (8, 0.5), (0, 0.3)]:
            plan = _SamplingPlan(greedy=False, top_k=top_k > 0, top_p=top_p < 1.0)
            ours = filter_top_k_top_p(logits, torch.tensor(top_k), torch.tensor(top_p), plan)
            expected = logits.clone()
            if top_k:
                expected[expected < torch.topk(expected, top_k)[0][-1]] = float("-inf")
            if top_p < 1.0:
                ordered, order = torch.sort(expected, descending=True)
                cumulative = torch.cumsum(torch.softmax(ordered, -1), -1)
                remove = cumulative > top_p
                remove[1:] = remove[:-1].clone()
                remove[0] = False
                expected[order[remove]] = float("-inf")
            assert torch.equal(torch.isinf(ours), torch.isinf(expected))


def test_gumbel_draws_follow_the_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    iota = torch.arange(4)
    seed = torch.tensor(7)
    draws = Counter(
        int(torch.argmax(logits + gumbel_noise(step_key(seed, torch.tensor(step)), iota)))
        for step in range(6000)
    )
    expected = torch.softmax(logits, -1)
    for index in range(4):
        assert abs(draws[index] / 6000 - float(expected[index])) < 0.02


def test_hash_is_stable_across_calls_and_spreads_bits():
    values = hash32(torch.arange(1 << 16))
    assert torch.equal(values, hash32(torch.arange(1 << 16)))
    assert int(values.max()) < 1 << 32 and int(values.min()) >= 0
    assert len(set(values.tolist())) == 1 << 16  # a bijection on 32 bits
    assert abs(float((values >> 31).float().mean()) - 0.5) < 0.01


def test_rejects_what_it_cannot_decode(qwen3):
    model, _ = qwen3
    with pytest.raises(ValueError):
        Decoder(model).generate([], max_new_tokens=5)
    with pytest.raises(ValueError):
        Decoder(model).generate([[1], [2], [3]], max_new_tokens=5)
    with pytest.raises(ValueError):
        Decoder(model, backend="vllm")
