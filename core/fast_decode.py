"""Fast token-by-token decoding for Hugging Face causal LMs, in the manner of gpt-fast.

Shared by the 5 Hz LM planner (Qwen3) and the lyric writer (Qwen2). It knows nothing about
either: it takes token ids in and gives token ids out, with optional classifier-free guidance,
a constraint on what may come next, and a callback that sees the tokens as they arrive.

Where the speed comes from, each trick named where it happens:

- **Static KV cache.** One tensor per layer for keys and one for values, sized once per call
  (prompt + budget), so every decode step has the same shapes and addresses.
- **One CUDA graph per call.** A whole step (the forward pass, the CFG mix, the constraint,
  sampling and the bookkeeping) is captured once and replayed; launching ~600 small kernels
  from Python is what made transformers' `generate` slow, not the arithmetic.
- **No host syncs inside a step.** Sampling draws its noise from a counter-based hash of
  (seed, step, token id), constraints keep their state in tensors, and the token goes back
  into the step's input buffer on the device. The host reads tokens in chunks, one chunk
  behind the GPU, so the GPU never waits for Python.
- **A vocab slice.** When only a contiguous block of the vocabulary can win (the planner's
  audio codes), the LM head multiplies only those rows and sampling sorts only those logits.

The same functions run eagerly on CPU and MPS, and on CUDA when graphs are off. A graph replays
exactly the kernels the eager step launches, so eager and graphed decoding give the same
tokens for the same seed; `backend="hf"` decodes through the model's own forward and a
DynamicCache instead, as a reference and for architectures this module does not know.

Supported architectures: the Llama family layout (`model.model.layers[i].self_attn.{q,k,v,o}
_proj`, `mlp.{gate,up,down}_proj`, RMSNorms, rotary embeddings): Qwen2, Qwen3 (with its
per-head q/k norms), Llama and Mistral without sliding windows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")
_CACHE_ROUNDING = 64  # cache lengths are rounded up so masks stay aligned for SDPA kernels
_MASK32 = 0xFFFFFFFF


class UnsupportedModel(ValueError):
    """The model's architecture is not one the static path can run; use backend="hf"."""


# --- What the caller asks for ---------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How to pick each token. Applied in upstream ACE-Step's order: CFG mix, constraint,
    top-k, top-p (on the untempered logits, in fp32), temperature, then the draw."""

    temperature: float = 1.0
    """0 picks the most likely token (greedy)."""
    top_p: float = 1.0
    """Nucleus sampling; 1.0 (or more) turns it off."""
    top_k: int = 0
    """0 turns it off."""
    cfg_scale: float = 1.0
    """Classifier-free guidance: used when two prompts (cond, uncond) are given."""
    seed: int = 0
    """The same seed, prompt and settings give the same tokens."""


@dataclass(frozen=True)
class VocabSlice:
    """Decode over vocab rows [start, stop) plus a few extra ids (an end token, say).

    Only these rows of the LM head are multiplied; a constraint sees logits in this order:
    index i < stop - start is token start + i, the rest are `extra_ids` in order.
    """

    start: int
    stop: int
    extra_ids: tuple[int, ...] = ()

    @property
    def size(self) -> int:
        return self.stop - self.start + len(self.extra_ids)

    def token_ids(self) -> list[int]:
        return [*range(self.start, self.stop), *self.extra_ids]


class TokenConstraint(Protocol):
    """Shapes the logits of each step from state kept in tensors on the decoding device.

    `mask` and `advance` run inside the captured step: tensor operations only, never
    `.item()`, `.tolist()`, Python branches on tensor values, data-dependent shapes, or
    `table[index]` with a tensor index (use `take`).
    """

    def reset(self, device: torch.device) -> None:
        """Put the state back to the start of a sequence (called on the host, before prefill)."""

    def mask(self, logits: Tensor) -> Tensor:
        """Return fp32 logits (over the vocab or the VocabSlice) with forbidden tokens at -inf."""

    def advance(self, token_id: Tensor) -> None:
        """Update the state in place with the chosen token (a 0-d int64 vocab id)."""


TokenCallback = Callable[[list[int]], None]


@dataclass
class DecodeResult:
    tokens: list[int]
    """The new tokens, without the stop token."""
    stop_token: int | None
    """The stop id that ended decoding, or None when the budget ran out."""
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float
    backend: str

    @property
    def tokens_per_second(self) -> float:
        produced = len(self.tokens) + (self.stop_token is not None)
        return produced / self.decode_seconds if self.decode_seconds > 0 else 0.0


# --- Weights, read once from the Hugging Face model -----------------------------------------


@dataclass
class _Layer:
    input_norm: nn.Module
    qkv_weight: Tensor
    qkv_bias: Tensor | None
    qk_norm_weight: Tensor | None  # [heads + kv_heads, head_dim], Qwen3's per-head norms
    qk_norm_eps: float
    o_proj: nn.Linear
    post_norm: nn.Module
    gate_up_weight: Tensor
    down_proj: nn.Linear
    act: Callable[[Tensor], Tensor]
    silu: bool


@dataclass
class _Weights:
    embed: nn.Embedding
    layers: list[_Layer]
    final_norm: nn.Module
    lm_head: Tensor
    lm_head_bias: Tensor | None
    rotary: nn.Module
    heads: int
    kv_heads: int
    head_dim: int
    scaling: float
    dtype: torch.dtype
    device: torch.device


def _fuse_linears(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """One weight for several projections of the same input, so a step launches one matmul
    instead of three (q, k, v) or two (gate, up). The modules are re-pointed at views of the
    fused tensor, so the model computes what it did and no memory is duplicated. After the
    model moves (`.to()` replaces parameter data), the next call fuses again."""
    weights = [linear.weight for linear in linears]
    rows = sum(weight.shape[0] for weight in weights)
    base = weights[0]._base
    if base is not None and all(weight._base is base for weight in weights):
        fused = base.view(-1, weights[0].shape[1])
        if fused.shape[0] == rows and fused.data_ptr() == weights[0].data_ptr():
            return fused, _fused_bias(linears)
    fused = torch.cat([weight.detach() for weight in weights])
    offset = 0
    for linear in linears:
        count = linear.weight.shape[0]
        linear.weight = nn.Parameter(fused[offset : offset + count], requires_grad=False)
        offset += count
    return fused, _fused_bias(linears)


def _fused_bias(linears: Sequence[nn.Linear]) -> Tensor | None:
    # Biases are small (Qwen2 has them on q, k and v); concatenating them each call is cheap.
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat(
        [
            linear.bias.detach()
            if linear.bias is not None
            else linear.weight.new_zeros(linear.weight.shape[0])
            for linear in linears
        ]
    )


def _norm_eps(norm: nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def read_weights(model: nn.Module) -> _Weights:
    """Collect what the static path needs from a Llama-family causal LM, or say why not."""
    config = model.config
    model_type = getattr(config, "model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModel(f"fast decoding does not know {model_type or 'this'} models")
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "use_sliding_window", False) or any(
        kind != "full_attention" for kind in layer_types
    ):
        raise UnsupportedModel("fast decoding does not do sliding-window attention")
    inner = model.model
    first = inner.layers[0].self_attn
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    layers = []
    for layer in inner.layers:
        attn, mlp = layer.self_attn, layer.mlp
        qkv_weight, qkv_bias = _fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        gate_up_weight, _ = _fuse_linears([mlp.gate_proj, mlp.up_proj])
        qk_norm_weight, qk_eps = None, 1e-6
        if getattr(attn, "q_norm", None) is not None:
            qk_norm_weight = torch.cat(
                [attn.q_norm.weight.detach().expand(heads, head_dim),
                 attn.k_norm.weight.detach().expand(kv_heads, head_dim)]
            )  # fmt: skip
            qk_eps = _norm_eps(attn.q_norm)
        layers.append(
            _Layer(
                input_norm=layer.input_layernorm,
                qkv_weight=qkv_weight,
                qkv_bias=qkv_bias,
                qk_norm_weight=qk_norm_weight,
                qk_norm_eps=qk_eps,
                o_proj=attn.o_proj,
                post_norm=layer.post_attention_layernorm,
                gate_up_weight=gate_up_weight,
                down_proj=mlp.down_proj,
                act=mlp.act_fn,
                silu=getattr(config, "hidden_act", "silu") in ("silu", "swish"),
            )
        )
    lm_head = model.get_output_embeddings()
    return _Weights(
        embed=inner.embed_tokens,
        layers=layers,
        final_norm=inner.norm,
        lm_head=lm_head.weight,
        lm_head_bias=getattr(lm_head, "bias", None),
        rotary=inner.rotary_emb,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        scaling=float(getattr(first, "scaling", head_dim**-0.5)),
        dtype=lm_head.weight.dtype,
        device=lm_head.weight.device,
    )


# --- The forward pass, plain functions ------------------------------------------------------


def rope_tables(weights: _Weights, length: int) -> tuple[Tensor, Tensor]:
    """cos and sign-folded sin for positions [0, length), from the model's own rotary module
    (so scaled RoPE variants come out right). sin's first half is negated, so rotating is one
    half-swap and a multiply-add, with the same rounding as HF's `rotate_half`."""
    positions = torch.arange(length, device=weights.device)[None]
    probe = torch.empty(0, device=weights.device, dtype=weights.dtype)
    cos, sin = weights.rotary(probe, positions)
    half = weights.head_dim // 2
    sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
    return cos[0].contiguous(), sin[0].contiguous()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [batch, tokens, heads, head_dim]; cos/sin: [tokens, head_dim]."""
    half = x.shape[-1] // 2
    swapped = torch.cat([x[..., half:], x[..., :half]], dim=-1)
    return x * cos[None, :, None, :] + swapped * sin[None, :, None, :]


@dataclass
class KVCache:
    keys: list[Tensor]  # per layer [batch, kv_heads, length, head_dim]
    values: list[Tensor]

    @classmethod
    def empty(cls, weights: _Weights, batch: int, length: int) -> KVCache:
        shape = (batch, weights.kv_heads, length, weights.head_dim)
        make = lambda: torch.zeros(shape, dtype=weights.dtype, device=weights.device)  # noqa: E731
        return cls([make() for _ in weights.layers], [make() for _ in weights.layers])

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]


def _sdpa(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor, scale: float) -> Tensor:
    if q.device.type == "cuda":
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=scale)
    # Written out off CUDA: PyTorch's masked SDPA kernel on CPU stalls for milliseconds per
    # call when another process holds a core, where these three ops take microseconds.
    scores = (q @ keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ values


def _attention(
    q: Tensor, keys: Tensor, values: Tensor, mask: Tensor, weights: _Weights, kind: str = "sdpa"
) -> Tensor:
    """q: [batch, tokens, heads, head_dim]; keys/values: the whole cache; mask: [batch, tokens,
    cache] (True = may attend). Returns [batch, tokens, heads * head_dim]."""
    batch, tokens, heads, head_dim = q.shape
    groups = heads // weights.kv_heads
    if tokens == 1:
        # Decoding: the query heads that share a key/value head become that head's "tokens",
        # so attention reads each cache once instead of a copy repeated per query head.
        q = q.reshape(batch, weights.kv_heads, groups, head_dim)
        if kind == "math":
            out = _math_attention(q, keys, values, mask[:, None], weights.scaling)
        else:
            out = _sdpa(q, keys, values, mask[:, None], weights.scaling)
        return out.reshape(batch, 1, heads * head_dim)
    keys = keys.repeat_interleave(groups, dim=1)
    values = values.repeat_interleave(groups, dim=1)
    out = _sdpa(q.transpose(1, 2), keys, values, mask[:, None], weights.scaling)
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _math_attention(q: Tensor, keys: Tensor, values: Tensor, mask: Tensor, scale: float) -> Tensor:
    """Attention as two batched matmuls: they spread a long cache over the whole GPU, where a
    fused kernel with a handful of queries per head walks it in a few blocks."""
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.matmul(weights.to(q.dtype), values)


# --- The elementwise glue between the matmuls -------------------------------------------------


def norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as one op (fp32 inside, like HF's)."""
    return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)


def add_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The residual add and the next RMSNorm: the new residual stream and its normed copy."""
    x = x + delta
    return x, norm(x, weight, eps)


def qk_norm_rope(qk: Tensor, weight: Tensor | None, eps: float, cos: Tensor, sin: Tensor) -> Tensor:
    """Qwen3's per-head q/k norms (when `weight` is given) and RoPE, on q and k together."""
    if weight is not None:
        qk = weight * F.rms_norm(qk, (qk.shape[-1],), eps=eps)
    return apply_rope(qk, cos, sin)


def silu_gated(gate_up: Tensor) -> Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@dataclass(frozen=True)
class Glue:
    """The elementwise work of a layer. Run as plain PyTorch ops it is ~15 small kernels a
    layer, and at batch 2 launching them costs more than the matmuls; on CUDA each function
    is compiled (torch.compile, no CUDA graphs of its own) into one fused kernel. The decode
    step uses the same glue eagerly and in a graph, so the two stay identical."""

    norm: Callable[[Tensor, Tensor, float], Tensor]
    add_norm: Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
    qk_norm_rope: Callable[[Tensor, Tensor | None, float, Tensor, Tensor], Tensor]
    silu_gated: Callable[[Tensor], Tensor]
    fused: bool = False


PLAIN_GLUE = Glue(norm, add_norm, qk_norm_rope, silu_gated)
_fused_glue: Glue | None = None


def fused_glue() -> Glue:
    """The compiled glue, built once per process (each shape compiles on first use)."""
    global _fused_glue
    if _fused_glue is None:
        compile = lambda fn: torch.compile(fn, dynamic=False, fullgraph=True)  # noqa: E731
        _fused_glue = Glue(
            compile(norm), compile(add_norm), compile(qk_norm_rope), compile(silu_gated), True
        )
    return _fused_glue


def forward(
    weights: _Weights,
    tokens: Tensor,
    positions: Tensor,
    cos: Tensor,
    sin: Tensor,
    cache: KVCache,
    mask: Tensor,
    glue: Glue = PLAIN_GLUE,
    attention: str = "sdpa",
) -> Tensor:
    """Run tokens [batch, n] written at cache positions `positions` [n]; returns the last
    hidden state of each row, normed: [batch, hidden]."""
    heads, kv_heads, head_dim = weights.heads, weights.kv_heads, weights.head_dim
    batch, n = tokens.shape
    cos, sin = cos.index_select(0, positions), sin.index_select(0, positions)
    layers = weights.layers
    x = weights.embed(tokens)
    h = glue.norm(x, layers[0].input_norm.weight, _norm_eps(layers[0].input_norm))
    for index, layer in enumerate(layers):
        qkv = F.linear(h, layer.qkv_weight, layer.qkv_bias)
        qk = qkv[..., : (heads + kv_heads) * head_dim].view(batch, n, heads + kv_heads, head_dim)
        v = qkv[..., (heads + kv_heads) * head_dim :].view(batch, n, kv_heads, head_dim)
        qk = glue.qk_norm_rope(qk, layer.qk_norm_weight, layer.qk_norm_eps, cos, sin)
        q, k = qk[:, :, :heads], qk[:, :, heads:]
        cache.keys[index].index_copy_(2, positions, k.transpose(1, 2))
        cache.values[index].index_copy_(2, positions, v.transpose(1, 2))
        attn = _attention(q, cache.keys[index], cache.values[index], mask, weights, attention)
        post = layer.post_norm
        x, h = glue.add_norm(x, layer.o_proj(attn), post.weight, _norm_eps(post))
        gate_up = F.linear(h, layer.gate_up_weight)
        mlp = layer.down_proj(glue.silu_gated(gate_up) if layer.silu else _gated(layer, gate_up))
        following = layers[index + 1].input_norm if index + 1 < len(layers) else weights.final_norm
        x, h = glue.add_norm(x, mlp, following.weight, _norm_eps(following))
    return h[:, -1]


def _gated(layer: _Layer, gate_up: Tensor) -> Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return layer.act(gate) * up


def lm_logits(
    weights: _Weights, hidden: Tensor, vocab: VocabSlice | None, extra: Tensor | None
) -> Tensor:
    """fp32 logits [batch, vocab or slice]: only the slice's rows are multiplied."""
    if vocab is None:
        return F.linear(hidden, weights.lm_head, weights.lm_head_bias).float()
    bias = weights.lm_head_bias
    rows = F.linear(
        hidden,
        weights.lm_head[vocab.start : vocab.stop],
        None if bias is None else bias[vocab.start : vocab.stop],
    )
    if extra is not None:
        extra_bias = None if bias is None else bias[list(vocab.extra_ids)]
        rows = torch.cat([rows, F.linear(hidden, extra, extra_bias)], dim=-1)
    return rows.float()


# --- Sampling without host syncs ------------------------------------------------------------


def take(table: Tensor, index: Tensor) -> Tensor:
    """table[index] for a 0-d index tensor, on the device. Plain `table[index]` turns a 0-d
    tensor into a Python int first: a host sync, which a CUDA graph capture refuses."""
    return table.index_select(0, index.reshape(1)).squeeze(0)


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x * constant) mod 2**32 for x < 2**32 held in int64, without overflowing int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) in int64 arithmetic: the same bits on every
    device, so the same seed draws the same noise eagerly, in a graph, on CPU or GPU."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def gumbel_noise(key: Tensor, iota: Tensor) -> Tensor:
    """Gumbel(0, 1) noise for token ids `iota`, keyed by a 0-d int64 `key` (seed and step)."""
    bits = hash32(iota ^ key)
    uniform = ((bits >> 8).float() + 0.5) * (1.0 / (1 << 24))
    return -torch.log(-torch.log(uniform))


def step_key(seed: Tensor, step: Tensor) -> Tensor:
    return hash32(hash32(seed & _MASK32) ^ (step & _MASK32))


@dataclass(frozen=True)
class _SamplingPlan:
    """Which filters a captured step contains (their values stay in tensors)."""

    greedy: bool
    top_k: bool
    top_p: bool


def filter_top_k_top_p(logits: Tensor, top_k: Tensor, top_p: Tensor, plan: _SamplingPlan) -> Tensor:
    """Upstream's top-k then top-p (cumulative probability of the untempered, fp32 softmax;
    the most likely token always stays). One sort serves both."""
    if not (plan.top_k or plan.top_p):
        return logits
    ordered, order = torch.sort(logits, descending=True)
    ranks = torch.arange(ordered.shape[-1], device=logits.device)
    if plan.top_k:
        ordered = ordered.masked_fill(ranks >= top_k, float("-inf"))
    remove = ranks >= top_k if plan.top_k else torch.zeros_like(ranks, dtype=torch.bool)
    if plan.top_p:
        cumulative = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1)
        beyond = cumulative > top_p
        beyond = torch.cat([torch.zeros_like(beyond[:1]), beyond[:-1]])
        remove = remove | beyond
    remove = torch.zeros_like(remove).scatter(0, order, remove)
    return logits.masked_fill(remove, float("-inf"))


def sample_index(
    logits: Tensor,
    *,
    temperature: Tensor,
    top_k: Tensor,
    top_p: Tensor,
    key: Tensor,
    iota: Tensor,
    plan: _SamplingPlan,
) -> Tensor:
    """One token index from fp32 logits [n], as a 0-d int64 tensor, with no host sync.

    The draw is the Gumbel-max trick: argmax(logits / T + Gumbel noise) has exactly the
    distribution of softmax(logits / T), and needs no `torch.multinomial` (which syncs)."""
    if plan.greedy:
        return torch.argmax(logits)
    logits = filter_top_k_top_p(logits, top_k, top_p, plan)
    return torch.argmax(logits / temperature + gumbel_noise(key, iota))


# --- One decode call ------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything one call's step reads and writes; static for the life of its graph."""

    batch: int
    next_token: Tensor  # [batch, 1] the token the next forward consumes
    out: Tensor  # [max_new] tokens chosen so far
    step: Tensor  # 0-d, tokens chosen so far
    position: Tensor  # [1], where the next token is written in the cache
    valid: Tensor  # [batch, cache] False where a row is left padding
    iota: Tensor  # cache positions
    vocab_iota: Tensor  # token indices of the logits being sampled
    candidates: Tensor | None  # VocabSlice index -> vocab id
    extra_weight: Tensor | None
    temperature: Tensor
    top_k: Tensor
    top_p: Tensor
    cfg_scale: Tensor
    seed: Tensor
    plan: _SamplingPlan
    vocab: VocabSlice | None
    constraint: TokenConstraint | None
    cache: KVCache | None = None
    cos: Tensor | None = None
    sin: Tensor | None = None
    warm_steps: int = 0
    glue: Glue = PLAIN_GLUE
    attention: str = "math"


def choose_token(run: _Run, logits: Tensor) -> None:
    """From the step's logits [batch, n] to the chosen token, written back into `run`."""
    # Guidance mixes in fp32; the same token then goes to both rows (upstream's LM CFG).
    guided = run.batch == 2
    logits = logits[1] + run.cfg_scale * (logits[0] - logits[1]) if guided else logits[0]
    if run.constraint is not None:
        logits = run.constraint.mask(logits)
    index = sample_index(
        logits,
        temperature=run.temperature,
        top_k=run.top_k,
        top_p=run.top_p,
        key=step_key(run.seed, run.step),
        iota=run.vocab_iota,
        plan=run.plan,
    )
    token = take(run.candidates, index) if run.candidates is not None else index
    if run.constraint is not None:
        run.constraint.advance(token)
    run.next_token.copy_(token.expand(run.batch, 1))
    run.out.index_copy_(0, run.step.view(1), token.view(1))
    run.step += 1


def _decode_step(weights: _Weights, run: _Run) -> None:
    """The step a CUDA graph captures: forward one token, choose the next."""
    assert run.cache is not None and run.cos is not None and run.sin is not None
    mask = (run.valid & (run.iota <= run.position))[:, None, :]
    hidden = forward(
        weights, run.next_token, run.position, run.cos, run.sin, run.cache, mask,
        glue=run.glue, attention=run.attention,
    )  # fmt: skip
    run.position += 1
    choose_token(run, lm_logits(weights, hidden, run.vocab, run.extra_weight))


class Decoder:
    """Decodes with one Hugging Face causal LM; not thread-safe (the Studio's single worker
    thread owns the device). Holds no tensors between calls, so the model may be moved or
    offloaded in between.

    backend: "static" (this module's forward and static cache, with CUDA graphs on CUDA unless
    `cuda_graphs=False`) or "hf" (the model's own forward and a DynamicCache, step by step).
    fused_glue: compile the elementwise work between matmuls into fused kernels (CUDA only).
    decode_attention: "math" (two batched matmuls, fastest for long caches on an H100) or
    "sdpa" (PyTorch's fused attention). See docs/benchmarks.md for the measurements.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        backend: str = "static",
        cuda_graphs: bool = True,
        fused_glue: bool = True,
        decode_attention: str = "math",
    ):
        if backend not in ("static", "hf"):
            raise ValueError(f"backend must be 'static' or 'hf', not {backend!r}")
        if decode_attention not in ("sdpa", "math"):
            raise ValueError("decode_attention must be 'sdpa' or 'math'")
        if backend == "static":
            read_weights(model)  # fail now, with the reason, rather than mid-song
        self.model = model
        self.backend = backend
        self.cuda_graphs = cuda_graphs
        self.fused_glue = fused_glue
        self.decode_attention = decode_attention

    @property
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device

    @property
    def mode(self) -> str:
        """A short description for logs and benchmarks."""
        if self.backend == "hf":
            return "hf-forward"
        fused = "+fused" if self.fused_glue and self.device.type == "cuda" else ""
        return ("static+cuda-graph" if self._graphs_on else "static-eager") + fused

    @property
    def _graphs_on(self) -> bool:
        return self.cuda_graphs and self.backend == "static" and self.device.type == "cuda"

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        sampling: Sampling = Sampling(),
        stop_ids: Sequence[int] = (),
        constraint: TokenConstraint | None = None,
        vocab: VocabSlice | None = None,
        on_tokens: TokenCallback | None = None,
        sync_every: int = 1,
        pad_id: int = 0,
    ) -> DecodeResult:
        """Decode up to `max_new_tokens` tokens after one prompt, or after a (cond, uncond)
        pair for classifier-free guidance.

        Tokens come back to the host every `sync_every` tokens (1 streams each token); each
        chunk goes to `on_tokens`, which may raise to cancel. Decoding stops at the first of
        `stop_ids` (left out of the result) or when the budget is spent. Up to two chunks past
        a stop are computed and thrown away: the price of never stalling the GPU.
        """
        if len(prompts) not in (1, 2) or any(len(p) == 0 for p in prompts):
            raise ValueError("give one prompt, or two (cond, uncond) for guidance; none empty")
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        run = self._start(prompts, max_new_tokens, sampling, constraint, vocab)
        started = time.perf_counter()
        ids, valid = self._padded(prompts, pad_id)
        if self.backend == "hf":
            step = self._prefill_hf(run, ids, valid)
        else:
            step = self._prefill_static(run, ids, valid)
        prefill_done = time.perf_counter()
        tokens, stop = _decode_loop(
            run, step, max_new_tokens, set(stop_ids), on_tokens, max(sync_every, 1), self.device
        )
        finished = time.perf_counter()
        return DecodeResult(
            tokens=tokens,
            stop_token=stop,
            prompt_tokens=ids.shape[1],
            prefill_seconds=prefill_done - started,
            decode_seconds=finished - prefill_done,
            backend=self.mode,
        )

    # --- setup ---------------------------------------------------------------------------

    def _start(
        self,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        sampling: Sampling,
        constraint: TokenConstraint | None,
        vocab: VocabSlice | None,
    ) -> _Run:
        device = self.device
        batch = len(prompts)
        head = self.model.get_output_embeddings().weight
        width = vocab.size if vocab is not None else head.shape[0]
        candidates = extra_weight = None
        if vocab is not None:
            candidates = torch.tensor(vocab.token_ids(), device=device, dtype=torch.long)
            if vocab.extra_ids:
                extra_weight = head[list(vocab.extra_ids)].detach().clone()
        if constraint is not None:
            constraint.reset(device)

        def scalar(value: float, dtype: torch.dtype) -> Tensor:
            return torch.tensor(value, device=device, dtype=dtype)

        return _Run(
            batch=batch,
            next_token=torch.zeros(batch, 1, device=device, dtype=torch.long),
            out=torch.zeros(max_new_tokens, device=device, dtype=torch.long),
            step=scalar(0, torch.long),
            position=torch.zeros(1, device=device, dtype=torch.long),
            valid=torch.ones(batch, 1, device=device, dtype=torch.bool),
            iota=torch.zeros(1, device=device, dtype=torch.long),
            vocab_iota=torch.arange(width, device=device, dtype=torch.long),
            candidates=candidates,
            extra_weight=extra_weight,
            temperature=scalar(max(sampling.temperature, 1e-6), torch.float32),
            top_k=scalar(int(sampling.top_k), torch.long),
            top_p=scalar(float(sampling.top_p), torch.float32),
            cfg_scale=scalar(float(sampling.cfg_scale), torch.float32),
            seed=scalar(int(sampling.seed) & 0x7FFFFFFFFFFFFFFF, torch.long),
            plan=_SamplingPlan(
                greedy=sampling.temperature <= 0,
                top_k=sampling.top_k > 0,
                top_p=0.0 < sampling.top_p < 1.0,
            ),
            vocab=vocab,
            constraint=constraint,
        )

    def _padded(self, prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
        """Left-pad the prompts to one length (upstream pads its CFG pair on the left too)."""
        length = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
        valid = torch.zeros(len(prompts), length, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, length - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            valid[row, length - len(prompt) :] = True
        return ids.to(self.device), valid.to(self.device)

    # --- static backend ------------------------------------------------------------------

    def _prefill_static(self, run: _Run, ids: Tensor, valid: Tensor) -> Callable[[], None]:
        """Prefill the cache, choose the first token, and return the step for the rest."""
        weights = read_weights(self.model)
        batch, length = ids.shape
        budget = run.out.shape[0]
        cache_length = -(-(length + budget) // _CACHE_ROUNDING) * _CACHE_ROUNDING
        run.cache = KVCache.empty(weights, batch, cache_length)
        run.cos, run.sin = rope_tables(weights, cache_length)
        run.iota = torch.arange(cache_length, device=self.device)
        run.valid = torch.ones(batch, cache_length, device=self.device, dtype=torch.bool)
        run.valid[:, :length] = valid
        if run.vocab is not None and run.vocab.extra_ids:
            run.extra_weight = weights.lm_head[list(run.vocab.extra_ids)].detach().clone()
        positions = torch.arange(length, device=self.device)
        # Causal, and never into a row's left padding. A padding token sees only itself, so no
        # softmax row is empty: an empty row is NaN, and NaN would reach the cache.
        first_real = (~valid).sum(dim=1)
        lowest = torch.minimum(first_real[:, None], positions[None, :])
        keys = run.iota[None, None, :]
        mask = (keys <= positions[None, :, None]) & (keys >= lowest[:, :, None])
        hidden = forward(weights, ids, positions, run.cos, run.sin, run.cache, mask)
        run.position.fill_(length)
        choose_token(run, lm_logits(weights, hidden, run.vocab, run.extra_weight))

        run.attention = self.decode_attention
        if self.fused_glue and self.device.type == "cuda":
            run.glue = fused_glue()
        tried = [False]

        def step() -> None:
            if tried[0]:
                _decode_step(weights, run)
                return
            tried[0] = True
            try:
                _decode_step(weights, run)
            except Exception as error:  # compiling is an optimisation only
                if not run.glue.fused:
                    raise
                # The step mutates state only after its forward pass, where compiling fails,
                # so it can run again with plain ops.
                log.warning("fused decode kernels unavailable, using plain ops: %s", error)
                run.glue = PLAIN_GLUE
                _decode_step(weights, run)

        if not self._graphs_on or budget == 1:
            return step
        return _capture(step, self.device, run)

    # --- hf backend ----------------------------------------------------------------------

    def _prefill_hf(self, run: _Run, ids: Tensor, valid: Tensor) -> Callable[[], None]:
        from transformers import DynamicCache

        attention = valid.long()
        output = self.model(
            input_ids=ids, attention_mask=attention, past_key_values=DynamicCache(), use_cache=True
        )
        state = {"cache": output.past_key_values, "attention": attention}
        run.position.fill_(ids.shape[1])
        choose_token(run, self._slice_logits(run, output.logits[:, -1]))

        def step() -> None:
            state["attention"] = F.pad(state["attention"], (0, 1), value=1)
            output = self.model(
                input_ids=run.next_token.clone(),
                attention_mask=state["attention"],
                past_key_values=state["cache"],
                use_cache=True,
            )
            state["cache"] = output.past_key_values
            choose_token(run, self._slice_logits(run, output.logits[:, -1]))

        return step

    @staticmethod
    def _slice_logits(run: _Run, logits: Tensor) -> Tensor:
        if run.vocab is None:
            return logits.float()
        vocab = run.vocab
        parts = [logits[:, vocab.start : vocab.stop]]
        if vocab.extra_ids:
            parts.append(logits[:, list(vocab.extra_ids)])
        return torch.cat(parts, dim=-1).float()


def _capture(step: Callable[[], None], device: torch.device, run: _Run) -> Callable[[], None]:
    """Record one decode step as a CUDA graph and return its replay.

    The first step runs for real on the capture stream, so lazy set-up (cuBLAS workspaces,
    kernel choices) happens outside the capture; recording then runs nothing. The graph (and
    its memory pool) lives as long as the returned replay does."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream(device).wait_stream(side)
    run.warm_steps = 1
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        step()
    return graph.replay


def _decode_loop(
    run: _Run,
    step: Callable[[], None],
    max_new_tokens: int,
    stop_ids: set[int],
    on_tokens: TokenCallback | None,
    sync_every: int,
    device: torch.device,
) -> tuple[list[int], int | None]:
    """Keep up to two chunks of steps queued ahead of the chunk being read."""
    produced = 1 + run.warm_steps  # prefill chose the first token; a graph warm-up the second
    reader = _TokenReader(run.out, device)
    reader.request(0, produced)
    tokens: list[int] = []
    while True:
        while produced < max_new_tokens and reader.in_flight < 2:
            chunk = min(sync_every, max_new_tokens - produced)
            for _ in range(chunk):
                step()
            reader.request(produced, produced + chunk)
            produced += chunk
        new = reader.next_ready()
        if new is None:
            return tokens, None
        for index, token in enumerate(new):
            if token in stop_ids:
                if on_tokens is not None and index:
                    on_tokens(new[:index])
                tokens.extend(new[:index])
                reader.drain()
                return tokens, token
        if on_tokens is not None and new:
            on_tokens(new)
        tokens.extend(new)


class _TokenReader:
    """Copies chunks of chosen tokens to the host without stalling the GPU: each chunk is
    copied asynchronously behind the steps that made it, and read once its event fires,
    while the GPU already runs the next chunk."""

    def __init__(self, out: Tensor, device: torch.device):
        self.out = out
        self.cuda = device.type == "cuda"
        self.host = torch.empty(out.shape, dtype=out.dtype, pin_memory=self.cuda)
        self.queue: list[tuple[int, int, Any]] = []

    @property
    def in_flight(self) -> int:
        return len(self.queue)

    def request(self, start: int, stop: int) -> None:
        if stop <= start:
            return
        event = None
        if self.cuda:
            self.host[start:stop].copy_(self.out[start:stop], non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.queue.append((start, stop, event))

    def next_ready(self) -> list[int] | None:
        if not self.queue:
            return None
        start, stop, event = self.queue.pop(0)
        if event is None:
            return self.out[start:stop].tolist()
        event.synchronize()
        return self.host[start:stop].tolist()

    def drain(self) -> None:
        for _, _, event in self.queue:
            if event is not None:
                event.synchronize()
        self.queue.clear()
