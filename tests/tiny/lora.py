"""Tiny LoRA adapters for the tiny DiT, in both on-disk formats the Studio accepts.

- diffusers: what `AceStepPipeline.save_lora_weights` writes, `pytorch_lora_weights.safetensors`
  with keys `transformer.layers.N.self_attn.to_q.lora_A.weight` and the flattened
  `lora_adapter_metadata` header (r, lora_alpha, target_modules).
- ace-step: what ACE-Step 1.5's own PEFT trainer writes, `adapter_model.safetensors` with
  keys `base_model.model.layers.N.self_attn.q_proj.lora_A.weight` plus `adapter_config.json`.

Both are made by PEFT itself on a copy of the tiny transformer, so `reference_output` (the
same adapter applied by PEFT directly) is the ground truth a loaded adapter must match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

DIFFUSERS_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
ORIGINAL_NAMES = {
    ".to_q.": ".q_proj.",
    ".to_k.": ".k_proj.",
    ".to_v.": ".v_proj.",
    ".to_out.0.": ".o_proj.",
}


@dataclass(frozen=True)
class TinyLora:
    path: Path
    rank: int
    alpha: float
    seed: int
    targets: tuple[str, ...]
    config_path: Path | None = None


def peft_state_dict(
    transformer_folder: Path,
    *,
    rank: int,
    alpha: float,
    seed: int,
    targets: list[str],
    hidden: int | None = None,
) -> tuple[dict[str, torch.Tensor], object]:
    """A random (non-zero) PEFT adapter on a copy of the tiny transformer, diffusers names."""
    from diffusers import AceStepTransformer1DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    if hidden is None:
        model = AceStepTransformer1DModel.from_pretrained(transformer_folder)
    else:
        # The same tiny architecture at another width: what a LoRA for another DiT looks like.
        config = json.loads((transformer_folder / "config.json").read_text())
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        config.update(hidden_size=hidden, encoder_hidden_size=hidden)
        model = AceStepTransformer1DModel.from_config(config)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    torch.manual_seed(seed)
    model.add_adapter(config, adapter_name="tiny")
    state = get_peft_model_state_dict(model, adapter_name="tiny")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}, config


def build_diffusers_lora(
    folder: Path,
    transformer_folder: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 1,
    targets: list[str] | None = None,
    hidden: int | None = None,
    name: str = "pytorch_lora_weights.safetensors",
) -> TinyLora:
    from diffusers import AceStepPipeline

    targets = targets or DIFFUSERS_TARGETS
    state, config = peft_state_dict(
        transformer_folder, rank=rank, alpha=alpha, seed=seed, targets=targets, hidden=hidden
    )
    folder.mkdir(parents=True, exist_ok=True)
    AceStepPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=state,
        transformer_lora_adapter_metadata=config.to_dict(),
        weight_name=name,
    )
    return TinyLora(folder / name, rank, alpha, seed, tuple(targets))


def build_ace_step_lora(
    folder: Path,
    transformer_folder: Path,
    *,
    rank: int = 4,
    alpha: float = 8.0,
    seed: int = 2,
    with_config: bool = True,
) -> TinyLora:
    """Original ACE-Step 1.5 PEFT layout: q/k/v/o_proj names under base_model.model."""
    from safetensors.torch import save_file

    state, _ = peft_state_dict(
        transformer_folder, rank=rank, alpha=alpha, seed=seed, targets=DIFFUSERS_TARGETS
    )
    original = {}
    for key, tensor in state.items():
        for new, old in ORIGINAL_NAMES.items():
            key = key.replace(new, old)
        original[f"base_model.model.{key}"] = tensor
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "adapter_model.safetensors"
    save_file(original, str(path), metadata={"format": "pt"})
    config_path = None
    if with_config:
        config_path = folder / "adapter_config.json"
        config_path.write_text(
            json.dumps(
                {
                    "peft_type": "LORA",
                    "r": rank,
                    "lora_alpha": alpha,
                    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    "lora_dropout": 0.0,
                    "bias": "none",
                    "use_rslora": False,
                },
                indent=2,
            )
        )
    return TinyLora(path, rank, alpha, seed, tuple(DIFFUSERS_TARGETS), config_path)


def reference_output(
    transformer_folder: Path, lora: TinyLora, inputs: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The tiny transformer with this adapter applied by PEFT directly, at its true alpha."""
    from diffusers import AceStepTransformer1DModel
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    model = AceStepTransformer1DModel.from_pretrained(transformer_folder).eval()
    state, _ = peft_state_dict(
        transformer_folder,
        rank=lora.rank,
        alpha=lora.alpha,
        seed=lora.seed,
        targets=list(lora.targets),
    )
    model.add_adapter(
        LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(lora.targets)),
        adapter_name="reference",
    )
    set_peft_model_state_dict(model, state, adapter_name="reference")
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def transformer_inputs(seed: int = 0, frames: int = 24) -> dict[str, torch.Tensor]:
    """Fixed inputs for one forward of the tiny transformer (acoustic dim 8, hidden 32)."""
    generator = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, frames, 8, generator=generator),
        context_latents=torch.randn(1, frames, 16, generator=generator),
        encoder_hidden_states=torch.randn(1, 7, 32, generator=generator),
        timestep=torch.tensor([0.6]),
        timestep_r=torch.tensor([0.6]),
    )
