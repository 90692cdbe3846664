"""ACE Music Studio engine: settings, models, the song pipeline, the worker and the library.

Importing `core` sets environment defaults before torch or huggingface_hub are imported,
because both read them once at import time:
- PYTORCH_ENABLE_MPS_FALLBACK=1, so ops MPS lacks fall back to the CPU on a Mac;
- fast hub downloads: hf_transfer where the installed huggingface_hub still uses it
  (before 1.0), otherwise its successor, hf-xet's high-performance mode.
"""

import importlib.metadata
import importlib.util
import os

os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


def _enable_fast_downloads() -> None:
    try:
        hub_major = int(importlib.metadata.version("huggingface_hub").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return
    if hub_major < 1 and importlib.util.find_spec("hf_transfer") is not None:
        os.environ.setdefault("HF_HUB_ENABLE_HF_TRANSFER", "1")
    elif hub_major >= 1:
        os.environ.setdefault("HF_XET_HIGH_PERFORMANCE", "1")


_enable_fast_downloads()
