"""The LoRA stack: find, inspect, store and apply LoRA adapters on the DiT.

A LoRA comes from a preset (a file on the Hugging Face hub named in a manifest), an upload,
or the Studio's own store, where every file is kept under its sha256. Before anything is
loaded, the file's safetensors header (and only the header) is read: its key format
(diffusers `transformer.layers.N…to_q` or the original ACE-Step PEFT
`base_model.model.layers.N…q_proj`), rank, alpha, target modules, and every shape, which
must fit the DiT this Studio runs. Pickled checkpoints are never opened.

A song request pins its LoRAs by sha256 and weight (`LoraChoice`); before each song the
stage makes the pipeline's adapters match the request exactly: it loads what is missing,
deletes what is not asked for (an empty stack is the base model, bit for bit), and sets
the weights with `set_adapters`.

diffusers drops `lora_alpha` when it loads an original ACE-Step adapter (it lives in
adapter_config.json, beside the weights), which loads it at rank/alpha of its strength.
Here the scale alpha/rank is folded into each `lora_B` before loading, so every adapter
plays at the strength it was trained at.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.audio import write_atomic
from core.jobs import StudioError
from core.models import is_local_source
from core.request import LoraChoice
from vendor.models import DIT_FAMILIES, DIT_MODELS

if TYPE_CHECKING:
    from core.dit import LoadedDit
    from core.request import SongRequest
    from core.settings import Settings
    from core.studio import Studio

log = logging.getLogger(__name__)

BUILTIN_PRESETS = Path(__file__).resolve().parents[1] / "vendor" / "lora_presets.json"
STORE_FOLDER = "loras"
HEADER_MAX_BYTES = 100 * 1024 * 1024
MAX_RANK = 1024
SCALE_RANGE = (0.0, 1.5)
MAX_STACK = 8
# ACE-Step's LoRA trainers default to r=8, alpha=16: the strength an original-format
# adapter was most likely trained at when its adapter_config.json is not at hand.
ACE_STEP_DEFAULT_ALPHA_PER_RANK = 2.0
GENERIC_FILE_NAMES = {"adapter_model", "pytorch_lora_weights", "lora", "model"}
ORIGINAL_PROJECTIONS = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_KEY = re.compile(
    r"^(?P<prefix>base_model\.model\.|transformer\.)?(?P<module>.+?)\."
    r"(?P<part>lora_A|lora_B)(?:\.(?P<adapter>[A-Za-z0-9_-]+))?\.weight$"
)


class LoraError(ValueError):
    """A LoRA cannot be used; the message names the problem for the musician."""


# --- reading a header ------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]


def read_header(
    path: Path, name: str | None = None
) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The tensor table and metadata of a safetensors file; reads the header only."""
    name = name or path.name
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            raise LoraError(
                f"{name} is a PyTorch pickle, not a safetensors file. Only .safetensors LoRAs "
                "are accepted: a pickle can run code when it is opened."
            )
        if len(head) < 8:
            raise LoraError(f"{name} is not a safetensors file: it is only {size} bytes long.")
        length = int.from_bytes(head, "little")
        if length <= 1 or length > HEADER_MAX_BYTES or 8 + length > size:
            raise LoraError(
                f"{name} is not a valid safetensors file: its header claims {length:,} bytes "
                f"in a file of {size:,}. The file is damaged or truncated."
            )
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise LoraError(
            f"{name} is not a valid safetensors file: its header is not JSON ({error})."
        ) from None
    if not isinstance(header, dict):
        raise LoraError(f"{name} is not a valid safetensors file: its header is not a table.")
    metadata = header.pop("__metadata__", None) or {}
    data_bytes = size - 8 - length
    tensors: dict[str, TensorEntry] = {}
    for key, entry in header.items():
        try:
            dtype = str(entry["dtype"])
            shape = tuple(int(n) for n in entry["shape"])
            start, end = (int(n) for n in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise LoraError(
                f"{name} is damaged: the header entry for {key!r} is malformed."
            ) from None
        expected = math.prod(shape) * _DTYPE_BYTES.get(dtype, 0)
        if (
            dtype not in _DTYPE_BYTES
            or not 0 <= start <= end <= data_bytes
            or end - start != expected
        ):
            raise LoraError(
                f"{name} is damaged or truncated: tensor {key!r} does not fit in the file."
            )
        tensors[key] = TensorEntry(dtype, shape)
    if not tensors:
        raise LoraError(f"{name} holds no tensors.")
    return tensors, {str(k): str(v) for k, v in metadata.items()}


# --- inspecting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleLora:
    """One adapted linear layer: its diffusers path, shapes, rank and scale (alpha/rank)."""

    original: str  # the module name as the file spells it
    in_features: int
    out_features: int
    rank: int
    scale: float


@dataclass(frozen=True)
class LoraInfo:
    format: str  # "diffusers" or "ace-step" (original PEFT)
    family: str  # "v1" for ACE-Step v1 keys, else "" (the shapes tell 2B from XL)
    rank: int
    ranks: tuple[int, ...]
    alpha: float
    alpha_source: str  # where alpha came from: "file header", "adapter_config.json", "assumed"
    use_rslora: bool
    target_modules: tuple[str, ...]
    layers: tuple[int, ...]
    hidden_size: int | None
    modules: dict[str, ModuleLora] = field(repr=False)

    @property
    def trained_for(self) -> str:
        if self.family == "v1":
            return "ACE-Step v1 (3.5B)"
        return dit_family(self.hidden_size) if self.hidden_size else "an unknown DiT"

    @property
    def strength(self) -> float:
        """alpha/rank: how much the adapter's delta is scaled at weight 1.0."""
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def summary(self) -> str:
        rank = f"rank {self.rank}" if len(self.ranks) == 1 else f"rank {self.ranks[0]}–{self.rank}"
        alpha = f"alpha {self.alpha:g}"
        if self.alpha_source == "assumed":
            alpha += " (assumed)"
        layers = f"{len(self.layers)} layer{'s' if len(self.layers) != 1 else ''}"
        style = "diffusers" if self.format == "diffusers" else "ACE-Step PEFT"
        return (
            f"{style} format · {rank} · {alpha} (×{self.strength:.2g}) · "
            f"{', '.join(self.target_modules)} · {layers} · for the {self.trained_for}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("modules")
        data["trained_for"] = self.trained_for
        return data


def dit_family(hidden_size: int | None) -> str:
    """'2B DiT', 'XL DiT', or what the size says when it is neither."""
    if hidden_size in DIT_FAMILIES:
        return f"{DIT_FAMILIES[hidden_size]} DiT"
    return f"DiT with hidden size {hidden_size}"


def inspect_lora(
    path: Path, adapter_config: dict[str, Any] | None = None, name: str | None = None
) -> LoraInfo:
    """Everything the header says about a LoRA file, checked for internal consistency."""
    name = name or path.name
    tensors, metadata = read_header(path, name)
    parts: dict[str, dict[str, TensorEntry]] = {}
    originals: dict[str, str] = {}
    prefixes: set[str] = set()
    unsupported: list[str] = []
    for key, entry in tensors.items():
        match = _KEY.match(key)
        if match is None:
            unsupported.append(key)
            continue
        prefixes.add(match["prefix"] or "")
        original = match["module"]
        module = diffusers_module_name(original)
        originals[module] = original
        parts.setdefault(module, {})[match["part"]] = entry
        if entry.dtype not in _FLOAT_DTYPES or len(entry.shape) != 2:
            raise LoraError(f"{name} is damaged: {key} is not a 2-D float tensor.")
    if unsupported:
        raise LoraError(_unsupported_message(name, unsupported))
    family = "v1" if any("transformer_blocks." in m for m in originals.values()) else ""
    original_format = "base_model.model." in prefixes or any(
        _is_original_projection(m) for m in originals.values()
    )
    config = _adapter_config(metadata, adapter_config)
    modules: dict[str, ModuleLora] = {}
    for module, pair in sorted(parts.items()):
        if "lora_A" not in pair or "lora_B" not in pair:
            missing = "lora_B" if "lora_A" in pair else "lora_A"
            raise LoraError(f"{name} is damaged: {originals[module]} has no {missing} weight.")
        down, up = pair["lora_A"].shape, pair["lora_B"].shape
        rank = down[0]
        if up[1] != rank or not 0 < rank <= MAX_RANK:
            raise LoraError(
                f"{name} is damaged: {originals[module]} has lora_A {list(down)} and lora_B "
                f"{list(up)}, which do not share a rank."
            )
        modules[module] = ModuleLora(
            original=originals[module],
            in_features=down[1],
            out_features=up[0],
            rank=rank,
            scale=_module_scale(originals[module], rank, config, original_format),
        )
    ranks = tuple(sorted({m.rank for m in modules.values()}))
    alpha, alpha_source = _global_alpha(config, ranks[-1], original_format)
    return LoraInfo(
        format="ace-step" if original_format else "diffusers",
        family=family,
        rank=ranks[-1],
        ranks=ranks,
        alpha=alpha,
        alpha_source=alpha_source,
        use_rslora=bool(config.get("use_rslora")),
        target_modules=_target_modules(modules),
        layers=tuple(sorted({n for m in modules for n in _layer_index(m)})),
        hidden_size=_hidden_size(modules),
        modules=modules,
    )


def diffusers_module_name(original: str) -> str:
    """`layers.3.self_attn.q_proj` → `layers.3.self_attn.to_q`; diffusers names pass through."""
    head, _, last = original.rpartition(".")
    if last in ORIGINAL_PROJECTIONS and ("attn" in head or not head):
        return f"{head}.{ORIGINAL_PROJECTIONS[last]}" if head else ORIGINAL_PROJECTIONS[last]
    return original


def _is_original_projection(original: str) -> bool:
    return original.rpartition(".")[2] in ORIGINAL_PROJECTIONS


def _unsupported_message(name: str, keys: list[str]) -> str:
    text = " ".join(keys[:50])
    if "lora_down" in text or "lora_up" in text:
        kind = "a kohya-style LoRA (lora_down/lora_up)"
    elif "lokr" in text or "hada" in text:
        kind = "a LyCORIS adapter (LoKr/LoHa)"
    elif "dora_scale" in text or "magnitude" in text:
        kind = "a DoRA adapter"
    else:
        return (
            f"{name} is not a LoRA: it holds tensors that are not LoRA weights "
            f"(e.g. {keys[0]!r}). Only lora_A/lora_B adapters for the ACE-Step DiT load here."
        )
    return (
        f"{name} is {kind}; only PEFT LoRA adapters (lora_A/lora_B) for the ACE-Step DiT load here."
    )


def _adapter_config(
    metadata: dict[str, str], adapter_config: dict[str, Any] | None
) -> dict[str, Any]:
    """lora_alpha & co., from adapter_config.json, else from the file's own metadata."""
    if adapter_config:
        return {**adapter_config, "_source": "adapter_config.json"}
    raw = metadata.get("lora_adapter_metadata")
    if raw:
        try:
            flat = json.loads(raw)
        except ValueError:
            flat = {}
        if isinstance(flat, dict):
            config = {k.removeprefix("transformer."): v for k, v in flat.items()}
            if "lora_alpha" in config:
                return {**config, "_source": "file header"}
    for key in ("lora_alpha", "alpha", "ss_network_alpha"):
        if key in metadata:
            try:
                return {"lora_alpha": float(metadata[key]), "_source": "file header"}
            except ValueError:
                continue
    return {}


def _global_alpha(config: dict[str, Any], rank: int, original_format: bool) -> tuple[float, str]:
    if "lora_alpha" in config:
        return float(config["lora_alpha"]), config.get("_source", "file header")
    if original_format:
        return ACE_STEP_DEFAULT_ALPHA_PER_RANK * rank, "assumed"
    # diffusers' own convention for a file without metadata: alpha equals rank.
    return float(rank), "assumed"


def _module_scale(original: str, rank: int, config: dict[str, Any], original_format: bool) -> float:
    """PEFT's scaling for one layer: alpha/r (alpha/√r with rsLoRA), patterns honoured."""
    alpha_pattern = config.get("alpha_pattern") or {}
    alpha = None
    for pattern, value in alpha_pattern.items():
        if (
            original == pattern
            or original.endswith("." + pattern)
            or re.fullmatch(pattern, original)
        ):
            alpha = float(value)
            break
    if alpha is None:
        alpha, _ = _global_alpha(config, rank, original_format)
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


_MODULE_ORDER = ("to_q", "to_k", "to_v", "to_out.0", "gate_proj", "up_proj", "down_proj")


def _target_modules(modules: Iterable[str]) -> tuple[str, ...]:
    names = set()
    for module in modules:
        parts = module.split(".")
        names.add(".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1])
    order = {name: index for index, name in enumerate(_MODULE_ORDER)}
    return tuple(sorted(names, key=lambda n: (order.get(n, len(order)), n)))


def _layer_index(module: str) -> list[int]:
    match = re.search(r"(?:^|\.)(?:layers|transformer_blocks)\.(\d+)\.", module)
    return [int(match.group(1))] if match else []


def _hidden_size(modules: dict[str, ModuleLora]) -> int | None:
    """The model width the adapter was trained against, read off layers that take it in."""
    for suffix in (
        "self_attn.to_q",
        "self_attn.to_k",
        "mlp.gate_proj",
        "mlp.up_proj",
        "cross_attn.to_q",
    ):
        for module, lora in modules.items():
            if module.endswith(suffix):
                return lora.in_features
    for suffix in ("to_out.0", "mlp.down_proj"):
        for module, lora in modules.items():
            if module.endswith(suffix):
                return lora.out_features
    return None


# --- fitting the DiT -------------------------------------------------------------------------


@dataclass(frozen=True)
class DitShapes:
    """The linear layers of the DiT this Studio runs: path → (in, out)."""

    hidden_size: int
    linear: dict[str, tuple[int, int]] = field(repr=False)

    @property
    def family(self) -> str:
        return DIT_FAMILIES.get(self.hidden_size, f"a DiT with hidden size {self.hidden_size}")


def shapes_of(transformer: torch.nn.Module) -> DitShapes:
    linear = {
        name: (module.in_features, module.out_features)
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear) and "lora_" not in name
    }
    # peft wraps adapted layers; the wrapped Linear sits under `.base_layer`.
    linear = {name.removesuffix(".base_layer"): shape for name, shape in linear.items()}
    return DitShapes(int(transformer.config.hidden_size), linear)


@lru_cache(maxsize=4)
def _shapes_from_config(config_json: str) -> DitShapes:
    """The adaptable layers' shapes from the transformer's config, without building it.

    Pages check uploads with this while the worker may be importing diffusers to load the
    pipeline, and diffusers' and transformers' lazy modules cannot be imported from two
    threads at once, so this is plain arithmetic over AceStepTransformer1DModel's layout (a
    test holds it equal to the real module tree); the worker checks again against the
    loaded transformer itself.
    """
    config = json.loads(config_json)
    hidden, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    query = int(config["num_attention_heads"]) * int(config["head_dim"])
    key_value = int(config["num_key_value_heads"]) * int(config["head_dim"])
    linear: dict[str, tuple[int, int]] = {
        "condition_embedder": (int(config["encoder_hidden_size"]), hidden)
    }
    for embed in ("time_embed", "time_embed_r"):
        # A 256-wide sinusoidal timestep projection in, six modulation vectors out.
        linear[f"{embed}.linear_1"] = (256, hidden)
        linear[f"{embed}.linear_2"] = (hidden, hidden)
        linear[f"{embed}.time_proj"] = (hidden, 6 * hidden)
    for layer in range(int(config["num_hidden_layers"])):
        for attention in ("self_attn", "cross_attn"):
            prefix = f"layers.{layer}.{attention}"
            linear[f"{prefix}.to_q"] = (hidden, query)
            linear[f"{prefix}.to_k"] = (hidden, key_value)
            linear[f"{prefix}.to_v"] = (hidden, key_value)
            linear[f"{prefix}.to_out.0"] = (query, hidden)
        linear[f"layers.{layer}.mlp.gate_proj"] = (hidden, inner)
        linear[f"layers.{layer}.mlp.up_proj"] = (hidden, inner)
        linear[f"layers.{layer}.mlp.down_proj"] = (inner, hidden)
    return DitShapes(hidden, linear)


def dit_shapes(studio: Studio) -> DitShapes:
    """The shapes of the Studio's DiT: from the loaded one, its config on disk, or the facts."""
    loaded = studio.dit.loaded
    if loaded is not None:
        return shapes_of(loaded.pipe.transformer)
    return _shapes_from_config(json.dumps(_transformer_config(studio.settings), sort_keys=True))


def _transformer_config(settings: Settings) -> dict[str, Any]:
    source = settings.dit_model
    if is_local_source(source):
        config = Path(source).expanduser() / "transformer" / "config.json"
        if config.exists():
            return json.loads(config.read_text())
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(
            source, "transformer/config.json", revision=settings.dit_revision
        )
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
        for facts in DIT_MODELS.values():
            if facts.repo_id == source:
                return dict(facts.config["transformer"])
    raise LoraError(
        "The DiT's shape is not known yet (its files are not on this machine), so LoRAs "
        "cannot be checked. Generate once to download it, then add LoRAs."
    )


def check_compatible(info: LoraInfo, dit: DitShapes, name: str) -> None:
    """Refuse, naming the mismatch, a LoRA whose layers or shapes do not fit the DiT."""
    runs = f"this Studio runs {_sized(dit.hidden_size, article='')}"
    if info.family == "v1":
        raise LoraError(f"{name} was trained for ACE-Step v1 (3.5B); {runs}. Nothing was loaded.")
    if info.hidden_size is not None and info.hidden_size != dit.hidden_size:
        raise LoraError(
            f"{name} was trained for {_sized(info.hidden_size, article='the ')}; {runs}. "
            "Nothing was loaded."
        )
    for module, lora in info.modules.items():
        shape = dit.linear.get(module)
        if shape is None:
            layers = max(info.layers) + 1 if info.layers else 0
            dit_layers = _layer_count(dit)
            if layers > dit_layers:
                raise LoraError(
                    f"{name} adapts {layers} layers; {runs} with {dit_layers}. Nothing was loaded."
                )
            raise LoraError(
                f"{name} adapts {lora.original}, which this DiT does not have. Nothing was loaded."
            )
        if shape != (lora.in_features, lora.out_features):
            raise LoraError(
                f"{name} does not fit this DiT: its {lora.original} is "
                f"{lora.in_features}→{lora.out_features}, the DiT's is {shape[0]}→{shape[1]} "
                f"({runs}). Nothing was loaded."
            )


def _sized(hidden_size: int, article: str) -> str:
    """'the 2B DiT (hidden size 2048)', 'XL (hidden size 2560)', 'a DiT with hidden size 32'."""
    family = DIT_FAMILIES.get(hidden_size)
    if family is None:
        return f"a DiT with hidden size {hidden_size}"
    return f"{article}{family}{' DiT' if article else ''} (hidden size {hidden_size})"


def _layer_count(dit: DitShapes) -> int:
    indices = [n for name in dit.linear for n in _layer_index(name)]
    return max(indices) + 1 if indices else 0


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredLora:
    sha256: str
    name: str
    size: int
    source: str  # "upload", or "preset:<repo id>"
    added: float
    path: Path
    adapter_config: dict[str, Any] | None = None

    @property
    def short(self) -> str:
        return self.sha256[:8]

    def info(self) -> LoraInfo:
        return _cached_info(
            self.path, self.sha256, json.dumps(self.adapter_config, sort_keys=True), self.name
        )

    def choice(self, scale: float) -> LoraChoice:
        return LoraChoice(name=self.name, sha256=self.sha256, scale=float(scale))


@lru_cache(maxsize=64)
def _cached_info(path: Path, sha256: str, config_json: str, name: str) -> LoraInfo:
    return inspect_lora(path, json.loads(config_json), name)


class LoraStore:
    """LoRA files kept by sha256 under `<data>/loras/`, each with a small JSON record."""

    def __init__(self, data_dir: Path, max_mb: int):
        self.root = data_dir / STORE_FOLDER
        self.max_bytes = max_mb * 1024 * 1024
        self.max_mb = max_mb

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.safetensors"

    def get(self, sha256: str) -> StoredLora | None:
        record = self.root / f"{sha256}.json"
        if not record.exists() or not self.path(sha256).exists():
            return None
        data = json.loads(record.read_text())
        return StoredLora(
            sha256=sha256,
            name=data["name"],
            size=int(data["size"]),
            source=data.get("source", "upload"),
            added=float(data.get("added", 0.0)),
            path=self.path(sha256),
            adapter_config=data.get("adapter_config"),
        )

    def list(self) -> list[StoredLora]:
        if not self.root.is_dir():
            return []
        found = [self.get(p.stem) for p in self.root.glob("*.json")]
        return sorted((s for s in found if s is not None), key=lambda s: s.name.lower())

    def add_bytes(
        self,
        data: bytes,
        filename: str,
        *,
        adapter_config: dict[str, Any] | None = None,
        dit: DitShapes | None = None,
        source: str = "upload",
    ) -> StoredLora:
        """Inspect (and check against `dit`) an uploaded file, then keep it."""
        if not filename.lower().endswith(".safetensors"):
            raise LoraError(
                f"{filename}: only .safetensors LoRA files are accepted (never .bin/.pt/.ckpt "
                "pickles, which can run code when opened)."
            )
        self._check_size(len(data), filename)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return self._keep(Path(tmp), filename, adapter_config, dit, source, move=True)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def add_file(
        self,
        path: Path,
        name: str,
        *,
        adapter_config: dict[str, Any] | None = None,
        dit: DitShapes | None = None,
        source: str = "upload",
    ) -> StoredLora:
        """Keep a copy of a file already on disk (a preset in the hub cache)."""
        self._check_size(path.stat().st_size, name)
        self.root.mkdir(parents=True, exist_ok=True)
        return self._keep(path, name, adapter_config, dit, source, move=False)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
        (self.root / f"{sha256}.json").unlink(missing_ok=True)

    def _check_size(self, size: int, name: str) -> None:
        if size > self.max_bytes:
            raise LoraError(
                f"{name} is {size / 1024 / 1024:.0f} MB; the limit is {self.max_mb} MB "
                "(ACE_STUDIO_MAX_LORA_MB)."
            )
        if size == 0:
            raise LoraError(f"{name} is empty.")

    def _keep(
        self,
        path: Path,
        filename: str,
        adapter_config: dict[str, Any] | None,
        dit: DitShapes | None,
        source: str,
        *,
        move: bool,
    ) -> StoredLora:
        sha256 = file_sha256(path)
        name = display_name(filename, sha256)
        info = inspect_lora(path, adapter_config, name)
        if dit is not None:
            check_compatible(info, dit, name)
        existing = self.get(sha256)
        if existing is not None:
            return existing
        target = self.path(sha256)
        if move:
            os.replace(path, target)
        else:
            _copy_atomic(path, target)
        record = {
            "name": name,
            "size": target.stat().st_size,
            "source": source,
            "added": time.time(),
            "adapter_config": adapter_config,
            "info": info.to_dict(),
        }
        write_atomic(self.root / f"{sha256}.json", json.dumps(record, indent=2).encode())
        stored = self.get(sha256)
        assert stored is not None
        return stored


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def display_name(filename: str, sha256: str) -> str:
    """The file's name without extension; generic trainer names get the checksum too."""
    stem = Path(filename).name
    stem = stem[: -len(".safetensors")] if stem.lower().endswith(".safetensors") else stem
    stem = stem.strip() or "LoRA"
    return f"{stem} {sha256[:8]}" if stem.lower() in GENERIC_FILE_NAMES else stem


def parse_adapter_config(data: bytes, filename: str = "adapter_config.json") -> dict[str, Any]:
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise LoraError(f"{filename} is not valid JSON ({error}).") from None
    if not isinstance(config, dict) or "lora_alpha" not in config:
        raise LoraError(f"{filename} is not a PEFT adapter_config.json: it has no lora_alpha.")
    keep = ("r", "lora_alpha", "use_rslora", "alpha_pattern", "rank_pattern", "target_modules")
    return {k: config[k] for k in keep if k in config}


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                out.write(block)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- presets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraPreset:
    name: str
    repo_id: str
    file: str
    default_scale: float = 1.0
    trained_for: str = ""  # "v1", "2B" or "XL"; empty when unknown
    revision: str = "main"
    config_file: str | None = None
    kind: str = ""
    description: str = ""

    def unavailable_reason(self, dit: DitShapes | None) -> str | None:
        """Why this preset cannot run on `dit`, known from the manifest before a download."""
        if dit is None or not self.trained_for:
            return None
        if self.trained_for == "v1":
            return f"Made for ACE-Step v1 (3.5B); this Studio runs {dit.family}."
        if self.trained_for != dit.family:
            return f"Made for the {self.trained_for} DiT; this Studio runs {dit.family}."
        return None


def load_presets(settings: Settings) -> list[LoraPreset]:
    path = Path(settings.lora_presets).expanduser() if settings.lora_presets else BUILTIN_PRESETS
    try:
        data = json.loads(path.read_text())
        known = set(LoraPreset.__dataclass_fields__)
        return [
            LoraPreset(**{k: v for k, v in entry.items() if k in known})
            for entry in data["presets"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise LoraError(f"The LoRA preset manifest {path} could not be read: {error}") from None


def fetch_preset(store: LoraStore, preset: LoraPreset, dit: DitShapes | None = None) -> StoredLora:
    """Download a preset (or find it in the hub cache) and keep it in the store."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        weights = Path(hf_hub_download(preset.repo_id, preset.file, revision=preset.revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise LoraError(
            f"Could not download the {preset.name} LoRA from {preset.repo_id}: "
            f"{type(error).__name__}. Check the network (or HF_HUB_OFFLINE), or upload the file."
        ) from error
    config = None
    if preset.config_file:
        try:
            config_path = hf_hub_download(
                preset.repo_id, preset.config_file, revision=preset.revision
            )
            config = parse_adapter_config(Path(config_path).read_bytes(), preset.config_file)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError, LoraError) as error:
            log.warning("no adapter config for preset %s: %s", preset.name, error)
    return store.add_file(
        weights,
        preset.name,
        adapter_config=config,
        dit=dit,
        source=f"preset:{preset.repo_id}",
    )


# --- the stack -------------------------------------------------------------------------------


def add_to_stack(
    stack: tuple[LoraChoice, ...], lora: StoredLora, scale: float | None = None
) -> tuple[LoraChoice, ...]:
    if any(choice.sha256 == lora.sha256 for choice in stack):
        raise LoraError(f"{lora.name} is already in the stack.")
    if len(stack) >= MAX_STACK:
        raise LoraError(f"The stack holds at most {MAX_STACK} LoRAs; remove one first.")
    return (*stack, lora.choice(1.0 if scale is None else _clamp(scale)))


def remove_from_stack(stack: tuple[LoraChoice, ...], sha256: str) -> tuple[LoraChoice, ...]:
    return tuple(choice for choice in stack if choice.sha256 != sha256)


def set_scale(stack: tuple[LoraChoice, ...], sha256: str, scale: float) -> tuple[LoraChoice, ...]:
    return tuple(
        replace(choice, scale=_clamp(scale)) if choice.sha256 == sha256 else choice
        for choice in stack
    )


def _clamp(scale: float) -> float:
    low, high = SCALE_RANGE
    return round(min(max(float(scale), low), high), 3)


# --- applying to the pipeline ----------------------------------------------------------------


def adapter_name(sha256: str) -> str:
    # Not "lora_…": peft matches adapter names inside state-dict keys, and lora_A/lora_B
    # are already there.
    return f"sha256_{sha256[:16]}"


def adapter_state_dict(lora: StoredLora, info: LoraInfo) -> dict[str, torch.Tensor]:
    """The weights in diffusers' key names, with each layer's alpha/rank folded into lora_B."""
    from safetensors.torch import load_file

    tensors = load_file(str(lora.path))
    state: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise LoraError(f"{lora.name} changed on disk since it was checked; upload it again.")
        module = diffusers_module_name(match["module"])
        part = match["part"]
        weight = tensor.float()
        if part == "lora_B":
            weight = weight * info.modules[module].scale
        state[f"transformer.{module}.{part}.weight"] = weight
    return state


def loaded_adapters(pipe: Any) -> list[str]:
    return list(pipe.get_list_adapters().get("transformer", []))


def sync_adapters(
    pipe: Any,
    store: LoraStore,
    loras: tuple[LoraChoice, ...],
    shapes: DitShapes | None = None,
    *,
    fuse: bool = False,
) -> None:
    """Make the pipeline's active adapters exactly `loras`: load, delete, weigh.

    With `fuse`, the weighted stack is then merged into the DiT's weights, so each step
    costs what the base model's does; the base weights are kept on the CPU and copied back
    before anything changes, so removing the stack is still an exact return to the base.
    """
    wanted = {adapter_name(choice.sha256): choice for choice in loras}
    if len(wanted) != len(loras):
        raise StudioError("The same LoRA is in the stack twice; remove one.")
    signature = tuple((name, float(choice.scale)) for name, choice in wanted.items())
    fused = _FUSED.get(pipe)
    if fused is not None:
        if fuse and fused.signature == signature:
            return
        _unfuse(pipe, fused)
    stale = [name for name in loaded_adapters(pipe) if name not in wanted]
    if stale:
        pipe.delete_adapters(stale)
    shapes = shapes or shapes_of(pipe.transformer)
    present = set(loaded_adapters(pipe))
    for name, choice in wanted.items():
        if name in present:
            continue
        lora = store.get(choice.sha256)
        if lora is None:
            raise StudioError(
                f"The LoRA {choice.name} ({choice.sha256[:8]}) is not in this Studio's LoRA store; "
                "upload the file again (the same file brings back the same song)."
            )
        try:
            info = lora.info()
            check_compatible(info, shapes, lora.name)
            pipe.load_lora_weights(adapter_state_dict(lora, info), adapter_name=name)
        except LoraError as error:
            raise StudioError(str(error)) from error
    if wanted:
        pipe.set_adapters(list(wanted), [choice.scale for choice in wanted.values()])
        if fuse:
            _fuse(pipe, signature)


@dataclass
class _Fused:
    signature: tuple[tuple[str, float], ...]
    originals: dict[str, torch.Tensor]  # the base weight of every adapted layer, on the CPU


# Keyed by the pipeline object: an unloaded pipeline takes its entry with it.
_FUSED: weakref.WeakKeyDictionary[Any, _Fused] = weakref.WeakKeyDictionary()


def is_fused(pipe: Any) -> bool:
    return pipe in _FUSED


def _adapted_layers(transformer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in transformer.named_modules() if isinstance(m, LoraLayer)}


def _fuse(pipe: Any, signature: tuple[tuple[str, float], ...]) -> None:
    weights = {
        name: layer.get_base_layer().weight.detach()
        for name, layer in _adapted_layers(pipe.transformer).items()
    }
    originals = _copy_to_host(weights)
    pipe.fuse_lora(
        components=["transformer"], lora_scale=1.0, adapter_names=[n for n, _ in signature]
    )
    _FUSED[pipe] = _Fused(signature, originals)


def _copy_to_host(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of `weights` in CPU memory: one pinned block for CUDA weights, so the copies
    (about 3.4 GB for a rank-64 stack on XL) move at full PCIe speed both ways."""
    if not weights or not all(
        w.is_cuda and w.dtype == next(iter(weights.values())).dtype for w in weights.values()
    ):
        return {name: weight.to("cpu", copy=True) for name, weight in weights.items()}
    first = next(iter(weights.values()))
    block = torch.empty(
        sum(w.numel() for w in weights.values()), dtype=first.dtype, pin_memory=True
    )
    copies, offset = {}, 0
    for name, weight in weights.items():
        view = block[offset : offset + weight.numel()].view(weight.shape)
        view.copy_(weight, non_blocking=True)
        copies[name], offset = view, offset + weight.numel()
    torch.cuda.synchronize()
    return copies


def _unfuse(pipe: Any, fused: _Fused) -> None:
    # Subtracting the merged deltas again is not exact in bf16: the kept weights are.
    pipe.unfuse_lora(components=["transformer"])
    layers = _adapted_layers(pipe.transformer)
    with torch.no_grad():
        for name, original in fused.originals.items():
            weight = layers[name].get_base_layer().weight
            weight.copy_(original, non_blocking=True)
    if any(layer.get_base_layer().weight.is_cuda for layer in layers.values()):
        torch.cuda.synchronize()
    del _FUSED[pipe]


def should_fuse(dit: LoadedDit, settings: Settings) -> bool:
    """Fuse on an accelerator whose DiT stays whole on it: the stack then costs no time per
    step (unfused, a rank-64 adapter adds about half to each XL step). With CPU offload
    the weights move under diffusers' hooks, so the adapters stay unfused there."""
    return dit.device != "cpu" and settings.offload == "none"


def lora_stage(store: LoraStore, settings: Settings) -> Callable[[LoadedDit, SongRequest], None]:
    def apply(dit: LoadedDit, request: SongRequest) -> None:
        sync_adapters(dit.pipe, store, tuple(request.loras), fuse=should_fuse(dit, settings))

    return apply


def store_for(settings: Settings) -> LoraStore:
    return LoraStore(settings.data_dir, settings.max_lora_mb)


def install(studio: Studio) -> None:
    """Before each song, the DiT's adapters are made to match the request's LoRA stack."""
    studio.lora_stage = lora_stage(store_for(studio.settings), studio.settings)
