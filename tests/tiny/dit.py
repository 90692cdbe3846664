"""A tiny ACE-Step DiT pipeline in diffusers format: same classes, same folder layout."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny.tokenizer import build_tokenizer

TINY_ACOUSTIC_DIM = 8


def build_tiny_dit(folder: Path, *, variant: str = "sft", seed: int = 0) -> Path:
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

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    turbo = variant == "turbo"
    transformer = AceStepTransformer1DModel(
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
        is_turbo=turbo,
        model_version="turbo" if turbo else variant,
    )
    condition_encoder = AceStepConditionEncoder(
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
    )
    with torch.no_grad():
        # The real checkpoint ships VAE-encoded silence here; zeros would hide bugs.
        condition_encoder.silence_latent.normal_(0.0, 0.5)
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * TINY_ACOUSTIC_DIM,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 1, 2, 2, 2],
        decoder_channels=8,
        decoder_input_channels=TINY_ACOUSTIC_DIM,
        audio_channels=2,
        sampling_rate=48000,
    )
    text_encoder = Qwen3Model(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
        )
    )
    audio_tokenizer = AceStepAudioTokenizer(
        hidden_size=32,
        fsq_dim=32,
        audio_acoustic_hidden_dim=TINY_ACOUSTIC_DIM,
        pool_window_size=5,
        fsq_input_levels=[8, 8, 8, 5, 5, 5],
    )
    audio_token_detokenizer = AceStepAudioTokenDetokenizer(
        hidden_size=32, audio_acoustic_hidden_dim=TINY_ACOUSTIC_DIM, pool_window_size=5
    )
    pipe = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
        audio_tokenizer=audio_tokenizer,
        audio_token_detokenizer=audio_token_detokenizer,
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder)
    return folder
