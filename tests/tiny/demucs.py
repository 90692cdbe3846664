"""A tiny HT-Demucs with random weights, saved exactly as demucs' own checkpoints are.

The folder is what `demucs.pretrained.get_model(name, repo=folder)` reads: the bag yaml
(`htdemucs.yaml`, listing one model signature) and the model package
`<signature>-<first 8 hex of its sha256>.th`, a torch pickle of
`{"klass", "args", "kwargs", "state", "training_args"}` with the state in half precision,
as `demucs.states.serialize_model` + `save_with_checksum` write it.
"""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path

import torch

from vendor.models import HTDEMUCS

SIGNATURE = HTDEMUCS.config["signature"]


def build_tiny_demucs(folder: Path, *, name: str = HTDEMUCS.key, seed: int = 0) -> Path:
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    torch.manual_seed(seed)
    model = HTDemucs(
        sources=list(HTDEMUCS.config["sources"]),
        audio_channels=2,
        samplerate=HTDEMUCS.config["samplerate"],
        segment=Fraction(2),
        channels=8,
        growth=2,
        nfft=512,
        depth=3,
        t_layers=1,
        t_heads=2,
        t_hidden_scale=1.0,
        # No residual DConv branches: the tiny model's cost is then mostly the STFTs.
        dconv_mode=0,
        bottom_channels=0,
    )
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": HTDemucs,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=True),
        # The real package holds the OmegaConf training config as a plain dict.
        "training_args": {"model": "htdemucs", "tiny": True},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    payload = buffer.getvalue()
    checksum = hashlib.sha256(payload).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{SIGNATURE}-*.th"):
        old.unlink()
    (folder / f"{SIGNATURE}-{checksum}.th").write_bytes(payload)
    (folder / f"{name}.yaml").write_text(f"models: ['{SIGNATURE}']\n")
    return folder
