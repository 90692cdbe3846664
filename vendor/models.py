"""Facts about the third-party models the Studio runs. No third-party code lives here.

Each entry names where the weights live (hub id, subfolder, revision), how much they weigh
(so the Studio can check disk and GPU memory before a download or a load), and the
architecture config (so `bench/` can build full-size random-weight models offline).

Sizes are bf16 weights in bytes. Where a figure was matched byte-for-byte against a
published file it says so; the rest are parameter counts times two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GB = 1_000_000_000


@dataclass(frozen=True)
class ModelFacts:
    """Where one model's weights live and what they cost."""

    key: str
    label: str
    repo_id: str
    subfolder: str | None = None
    revision: str = "main"
    weight_bytes: int = 0
    """bf16 weights on disk, also the GPU memory the weights take once loaded."""
    config: dict[str, Any] = field(default_factory=dict)


# --- ACE-Step 1.5 DiT pipelines (diffusers format) -----------------------------------------

# Shared by every XL variant; only the transformer's `is_turbo`/`model_version` differ.
XL_TRANSFORMER = dict(
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    in_channels=192,
    audio_acoustic_hidden_dim=64,
    patch_size=2,
    rope_theta=1_000_000.0,
    attention_bias=False,
    rms_norm_eps=1e-6,
    sliding_window=128,
    encoder_hidden_size=2048,
)
CONDITION_ENCODER = dict(
    hidden_size=2048,
    intermediate_size=6144,
    text_hidden_dim=1024,
    timbre_hidden_dim=64,
    num_lyric_encoder_hidden_layers=8,
    num_timbre_encoder_hidden_layers=4,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    rope_theta=1_000_000.0,
    sliding_window=128,
)
OOBLECK_VAE = dict(
    encoder_hidden_size=128,
    downsampling_ratios=[2, 4, 4, 6, 10],
    channel_multiples=[1, 2, 4, 8, 16],
    decoder_channels=128,
    decoder_input_channels=64,
    audio_channels=2,
    sampling_rate=48000,
)
# Qwen3-Embedding-0.6B, the DiT's caption encoder.
TEXT_ENCODER = dict(
    vocab_size=151669,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    hidden_act="silu",
)

# transformer 8.34 GB + condition encoder 1.22 GB (matches the published file to the byte)
# + VAE 0.34 GB (matches) + text encoder 1.19 GB + audio tokenizer/detokenizer 0.21 GB each.
XL_PIPELINE_BYTES = 11_500_000_000


def _xl(variant: str, is_turbo: bool) -> ModelFacts:
    return ModelFacts(
        key=f"xl-{variant}",
        label=f"ACE-Step 1.5 XL {variant.upper() if variant == 'sft' else variant}",
        repo_id=f"ACE-Step/acestep-v15-xl-{variant}-diffusers",
        weight_bytes=XL_PIPELINE_BYTES,
        config=dict(
            transformer=dict(
                XL_TRANSFORMER, is_turbo=is_turbo, model_version="turbo" if is_turbo else variant
            ),
            condition_encoder=CONDITION_ENCODER,
            vae=OOBLECK_VAE,
            text_encoder=TEXT_ENCODER,
        ),
    )


DIT_MODELS: dict[str, ModelFacts] = {
    facts.key: facts for facts in (_xl("sft", False), _xl("turbo", True), _xl("base", False))
}
DEFAULT_DIT = DIT_MODELS["xl-sft"]

# Which ACE-Step DiT a transformer hidden size belongs to: how a LoRA's shapes name the
# model it was trained for. ACE-Step v1 (3.5B) is told apart by its key names instead
# (`transformer_blocks.N…`), not by a size.
DIT_FAMILIES: dict[int, str] = {2048: "2B", 2560: "XL"}


@dataclass(frozen=True)
class VariantDefaults:
    """Sampling defaults per DiT variant. diffusers defaults every checkpoint to 8 steps."""

    steps: int
    guidance: float
    uses_cfg: bool
    shift: float = 3.0


DIT_VARIANT_DEFAULTS: dict[str, VariantDefaults] = {
    "sft": VariantDefaults(steps=50, guidance=7.0, uses_cfg=True),
    "base": VariantDefaults(steps=50, guidance=7.0, uses_cfg=True),
    # Turbo is guidance-distilled: CFG is ignored by the pipeline, 8 steps is its design point.
    "turbo": VariantDefaults(steps=8, guidance=1.0, uses_cfg=False),
}


# --- 5 Hz LM planner (Qwen3 causal LMs with <|audio_code_N|> tokens) ----------------------

# Qwen3's 151,936-row embedding plus 65,536 audio-code rows: the "217k vocab" of the planner.
PLANNER_VOCAB = 217_472

QWEN3_1_7B = dict(
    vocab_size=PLANNER_VOCAB,
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
QWEN3_0_6B = dict(
    QWEN3_1_7B,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
)
QWEN3_4B = dict(
    QWEN3_1_7B,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    tie_word_embeddings=True,
)

PLANNER_MODELS: dict[str, ModelFacts] = {
    "0.6B": ModelFacts(
        key="0.6B",
        label="5 Hz LM planner 0.6B",
        repo_id="ACE-Step/acestep-5Hz-lm-0.6B",
        weight_bytes=1_500_000_000,
        config=QWEN3_0_6B,
    ),
    "1.7B": ModelFacts(
        key="1.7B",
        label="5 Hz LM planner 1.7B",
        repo_id="ACE-Step/Ace-Step1.5",
        subfolder="acestep-5Hz-lm-1.7B",
        weight_bytes=3_400_000_000,
        config=QWEN3_1_7B,
    ),
    "4B": ModelFacts(
        key="4B",
        label="5 Hz LM planner 4B",
        repo_id="ACE-Step/acestep-5Hz-lm-4B",
        weight_bytes=8_400_000_000,
        config=QWEN3_4B,
    ),
}
DEFAULT_PLANNER = PLANNER_MODELS["1.7B"]

# The codebook is 8*8*8*5*5*5 = 64,000 codes; the vocabulary holds more code tokens than that,
# and those above 63,999 are never valid.
AUDIO_CODEBOOK_SIZE = 64_000
CODES_PER_SECOND = 5


# --- Lyric writer --------------------------------------------------------------------------

QWEN2_5_7B = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)

WRITER_MODELS: dict[str, ModelFacts] = {
    "transformers": ModelFacts(
        key="transformers",
        label="Qwen2.5 7B Instruct",
        repo_id="Qwen/Qwen2.5-7B-Instruct",
        weight_bytes=15_230_000_000,
        config=QWEN2_5_7B,
    ),
    "mlx": ModelFacts(
        key="mlx",
        label="Qwen2.5 7B Instruct (MLX 4-bit)",
        repo_id="mlx-community/Qwen2.5-7B-Instruct-4bit",
        weight_bytes=4_280_000_000,
        config=QWEN2_5_7B,
    ),
}


# --- Stem separation -----------------------------------------------------------------------

# demucs' own names: the bag yaml `htdemucs.yaml` lists one model signature, whose weights
# file is `<signature>-<first 8 hex of its sha256>.th`.
HTDEMUCS = ModelFacts(
    key="htdemucs",
    label="HT-Demucs (4 stems)",
    repo_id="htdemucs",
    weight_bytes=168_000_000,
    config=dict(
        signature="955717e8",
        checkpoint="955717e8-8726e21a.th",
        sources=["drums", "bass", "other", "vocals"],
        samplerate=44100,
        audio_channels=2,
        channels=48,
        growth=2,
        nfft=4096,
        depth=4,
        dconv_mode=3,
        bottom_channels=512,
        t_layers=5,
        t_heads=8,
        t_hidden_scale=4.0,
    ),
)
