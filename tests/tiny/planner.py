"""A tiny random 5 Hz LM planner, saved in the real checkpoint's layout, built offline.

The real planner is a Qwen3 causal LM whose tokenizer holds ChatML markers, `<think>` tags and
`<|audio_code_N|>` tokens. This one has the same pieces at toy size: a 2-layer Qwen3, a byte-level
BPE with a ChatML chat template, 48 valid audio-code tokens (0-47) and two past the codebook
(64000, 64001) that the planner must never emit. It is written with `save_pretrained` into
`<umbrella>/acestep-5Hz-lm-1.7B/`, as inside `ACE-Step/Ace-Step1.5`, so loading goes through
the subfolder path. A tiny Qwen2 (with q/k/v biases, like the lyric writer's) is here too, for
the shared fast decoder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from tests.tiny.tokenizer import build_tokenizer

SUBFOLDER = "acestep-5Hz-lm-1.7B"
VALID_CODES = 48
INVALID_CODES = (64000, 64001)

# Qwen's ChatML layout, as the real checkpoint's template renders these messages.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
    *(f"<|audio_code_{n}|>" for n in range(VALID_CODES)),
    *(f"<|audio_code_{n}|>" for n in INVALID_CODES),
]


def build_planner_tokenizer():
    tokenizer = build_tokenizer(SPECIAL_TOKENS, vocab_size=700, chat_template=CHATML_TEMPLATE)
    # Qwen3 chat checkpoints end a turn with <|im_end|> and pad with <|endoftext|>.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def build_tiny_planner(umbrella: Path, seed: int = 0) -> Path:
    """Write the tiny planner to `umbrella/acestep-5Hz-lm-1.7B` and return the umbrella."""
    folder = umbrella / SUBFOLDER
    if (folder / "config.json").exists():
        return umbrella
    tokenizer = build_planner_tokenizer()
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen3ForCausalLM(config).eval()
    _sharpen(model)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return umbrella


def _sharpen(model: torch.nn.Module) -> None:
    """Random init gives near-uniform logits; larger weights give a peakier, more LM-like
    distribution, so top-p and guidance have something to act on."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.2)
            elif "bias" in name:
                parameter.normal_(0.0, 0.05)
