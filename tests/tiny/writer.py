"""A tiny Qwen2.5-Instruct-shaped lyric writer, in the real checkpoint's folder layout.

Same classes (Qwen2ForCausalLM, a fast BPE tokenizer with Qwen's ChatML template), same
files (config.json, generation_config.json, model.safetensors, tokenizer files), loaded by
the Studio exactly as `Qwen/Qwen2.5-7B-Instruct` is, from a folder instead of a hub id.

The weights are random, with an output layer scaled so that drafts run to their token
limit (the end-of-turn tokens score zero against logits of a few units) while sampling
still varies them from seed to seed. What it writes is word soup, not lyrics; the tag
normalisation is tested on real-looking text instead.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import torch

from tests.tiny.tokenizer import build_tokenizer

# Qwen2.5-Instruct's chat template, less the tool-calling branches the writer never uses.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
    "assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Standard deviation of the output logits: peaked enough that EOS (logit 0) is rare.
LOGIT_SCALE = 2.5


def build_tiny_writer(folder: Path, *, seed: int = 0) -> Path:
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(SPECIAL_TOKENS, vocab_size=600, chat_template=CHAT_TEMPLATE)
    # Qwen2.5-Instruct ends a turn with <|im_end|>, and its tokenizer says so.
    tokenizer.eos_token = "<|im_end|>"
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, LOGIT_SCALE / config.hidden_size**0.5)
        for token_id in range(len(tokenizer)):
            # End-of-turn and unprintable bytes score zero, so drafts are long and readable.
            text = tokenizer.decode([token_id]).replace("\n", "")
            special = tokenizer.convert_ids_to_tokens(token_id) in SPECIAL_TOKENS
            if special or "\ufffd" in text or not text.isprintable():
                model.lm_head.weight[token_id] = 0.0
    model.generation_config = GenerationConfig(
        eos_token_id=[
            tokenizer.convert_tokens_to_ids("<|im_end|>"),
            tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        ],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.05,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@cache
def tiny_writer_folder() -> Path:
    """The tiny writer, built once per test process (tests only read it)."""
    return build_tiny_writer(Path(tempfile.mkdtemp(prefix="tiny-writer-")) / "writer")
