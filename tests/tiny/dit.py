"""A tiny ACE-Step DiT pipeline in diffusers format: same classes, same folder layout.

`assemble_pipeline` builds a pipeline from a config shaped like `vendor.models`' DiT configs;
the tiny model and the full-size benchmark (`bench/bench_dit.py`) both use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.tiny.tokenizer import build_tokenizer

TINY_ACOUSTIC_DIM = 8

TINY_CONFIG: dict[str, dict[str, Any]] = dict(
    transformer=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        in_channels=3 * TINY_ACOUSTIC_DIM,
        audio_acoustic_hidden_dim=TINY_ACOUSTIC_DIM,
        patch_size=2,
        sliding_window=16,
        encoder_hidden_size=32,
    ),
    condition_encoder=dict(
        hidden_size=32,
        intermediate_size=64,
        text_hidden_dim=32,
        timbre_hidden_dim=TINY_ACOUSTIC_DIM,
        num_lyric_encoder_hidden_layers=2,
        num_timbre_encoder_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=16,
    ),
    vae=dict(
        encoder_hidden_size=2 * TINY_ACOUSTIC_DIM,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 1, 2, 2, 2],
        decoder_channels=8,
        decoder_input_channels=TINY_ACOUSTIC_DIM,
        audio_channels=2,
        sampling_rate=48000,
    ),
    text_encoder=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    ),
    audio_tokenizer=dict(
        hidden_size=32,
        fsq_dim=32,
        audio_acoustic_hidden_dim=TINY_ACOUSTIC_DIM,
        pool_window_size=5,
        fsq_input_levels=[8, 8, 8, 5, 5, 5],
    ),
    audio_token_detokenizer=dict(
        hidden_size=32, audio_acoustic_hidden_dim=TINY_ACOUSTIC_DIM, pool_window_size=5
    ),
)


def assemble_pipeline(config: dict[str, dict[str, Any]], variant: str = "sft") -> Any:
    """An AceStepPipeline with random weights, built on torch's current default device.

    Missing audio tokenizer/detokenizer entries take the classes' (full-size) defaults.
    """
    from diffusers import (
        AceStepPipeline,
        AceStepTransformer1DModel,
        AutoencoderOobleck,
        FlowMatchEulerDiscreteScheduler,
    )
    from diffusers.pipelines.ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = build_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    turbo = variant == "turbo"
    transformer = AceStepTransformer1DModel(
        **{
            **config["transformer"],
            "is_turbo": turbo,
            "model_version": "turbo" if turbo else variant,
        }
    )
    condition_encoder = AceStepConditionEncoder(**config["condition_encoder"])
    with torch.no_grad():
        # The real checkpoint ships VAE-encoded silence here; zeros would hide bugs.
        condition_encoder.silence_latent.normal_(0.0, 0.5)
    text_config = {"vocab_size": len(tokenizer), **config["text_encoder"]}
    return AceStepPipeline(
        vae=AutoencoderOobleck(**config["vae"]),
        text_encoder=Qwen3Model(Qwen3Config(**text_config)),
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        audio_tokenizer=AceStepAudioTokenizer(**config.get("audio_tokenizer", {})),
        audio_token_detokenizer=AceStepAudioTokenDetokenizer(
            **config.get("audio_token_detokenizer", {})
        ),
    )


def build_tiny_dit(folder: Path, *, variant: str = "sft", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    pipe = assemble_pipeline(TINY_CONFIG, variant)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder
