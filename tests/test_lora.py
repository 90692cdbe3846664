"""The LoRA stack on the tiny DiT: inspect, refuse, load at the right strength, stack, remove."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from core import lora
from core.dit import LoadedDit, load_dit
from core.jobs import DONE, FAILED
from core.lora import LoraError, LoraStore
from core.request import LoraChoice, SongRequest
from core.settings import Settings
from core.studio import Studio
from tests.conftest import wait_for
from tests.tiny.lora import (
    TinyLora,
    build_ace_step_lora,
    build_diffusers_lora,
    reference_output,
    transformer_inputs,
)
from vendor.models import XL_TRANSFORMER

INPUTS = transformer_inputs()


@pytest.fixture(scope="module")
def dit(tiny_dit: Path) -> LoadedDit:
    settings = Settings(dit_model=str(tiny_dit), device="cpu")
    return load_dit(tiny_dit, settings, "cpu", torch.float32)


@pytest.fixture(scope="module")
def adapters(tiny_dit: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyLora]:
    root = tmp_path_factory.mktemp("loras")
    transformer = tiny_dit / "transformer"
    return {
        "diffusers": build_diffusers_lora(root / "d", transformer, rank=4, alpha=8.0, seed=1),
        "ace-step": build_ace_step_lora(root / "a", transformer, rank=4, alpha=8.0, seed=2),
        "mlp": build_diffusers_lora(
            root / "m", transformer, rank=2, alpha=2.0, seed=3, targets=["gate_proj", "down_proj"]
        ),
        "wide": build_diffusers_lora(root / "w", transformer, hidden=48, seed=4),
    }


@pytest.fixture
def store(tmp_path: Path) -> LoraStore:
    return LoraStore(tmp_path, max_mb=5)


@pytest.fixture
def pipe(dit: LoadedDit, tmp_path: Path) -> Iterator[object]:
    """The tiny pipeline, always handed back as the base model (unfused, no adapters)."""
    yield dit.pipe
    lora.sync_adapters(dit.pipe, LoraStore(tmp_path, 1), ())


def output(pipe: object) -> torch.Tensor:
    with torch.no_grad():
        return pipe.transformer(**INPUTS, return_dict=False)[0].clone()


def keep(store: LoraStore, adapter: TinyLora, dit: LoadedDit | None = None) -> lora.StoredLora:
    config = (
        lora.parse_adapter_config(adapter.config_path.read_bytes()) if adapter.config_path else None
    )
    shapes = lora.shapes_of(dit.pipe.transformer) if dit else None
    return store.add_file(adapter.path, adapter.path.name, adapter_config=config, dit=shapes)


# --- inspecting ------------------------------------------------------------------------------


def test_inspect_reads_both_formats(adapters: dict[str, TinyLora]) -> None:
    diffusers = lora.inspect_lora(adapters["diffusers"].path)
    assert diffusers.format == "diffusers"
    assert (diffusers.rank, diffusers.alpha, diffusers.alpha_source) == (4, 8.0, "file header")
    assert diffusers.target_modules == ("to_q", "to_k", "to_v", "to_out.0")
    assert diffusers.layers == (0, 1)
    assert diffusers.hidden_size == 32

    config = json.loads(adapters["ace-step"].config_path.read_text())
    original = lora.inspect_lora(adapters["ace-step"].path, config)
    assert original.format == "ace-step"
    assert (original.rank, original.alpha, original.alpha_source) == (4, 8.0, "adapter_config.json")
    # Original names are mapped onto the diffusers modules they adapt.
    assert "layers.0.self_attn.to_out.0" in original.modules
    assert original.modules["layers.0.self_attn.to_out.0"].original == "layers.0.self_attn.o_proj"
    assert original.strength == 2.0

    without_config = lora.inspect_lora(adapters["ace-step"].path)
    assert without_config.alpha_source == "assumed"
    assert without_config.alpha == lora.ACE_STEP_DEFAULT_ALPHA_PER_RANK * 4

    mlp = lora.inspect_lora(adapters["mlp"].path)
    assert mlp.target_modules == ("gate_proj", "down_proj")
    assert "rank 2" in mlp.summary() and "DiT with hidden size 32" in mlp.summary()


def test_mismatched_shapes_are_refused_with_the_mismatch(
    adapters: dict[str, TinyLora], dit: LoadedDit, store: LoraStore
) -> None:
    with pytest.raises(
        LoraError, match=r"hidden size 48.*this Studio runs a DiT with hidden size 32"
    ):
        keep(store, adapters["wide"], dit)
    assert store.list() == []


def test_a_2b_lora_is_refused_by_the_xl_studio(tmp_path: Path) -> None:
    """Rank-1 adapters at the real widths: the message names both models."""
    two_b = {}
    for layer in range(2):
        for module, (inp, out) in {"q_proj": (2048, 2048), "o_proj": (2048, 2048)}.items():
            key = f"base_model.model.layers.{layer}.self_attn.{module}"
            two_b[f"{key}.lora_A.weight"] = torch.zeros(1, inp)
            two_b[f"{key}.lora_B.weight"] = torch.zeros(out, 1)
    path = tmp_path / "adapter_model.safetensors"
    save_file(two_b, str(path))
    xl = lora._shapes_from_config(json.dumps(XL_TRANSFORMER, sort_keys=True))
    assert xl.family == "XL"
    info = lora.inspect_lora(path)
    assert info.trained_for == "2B DiT"
    with pytest.raises(LoraError) as refused:
        lora.check_compatible(info, xl, "cny")
    message = str(refused.value)
    assert "trained for the 2B DiT" in message and "this Studio runs XL" in message
    assert "Nothing was loaded" in message


def test_v1_loras_are_named_as_such(tmp_path: Path, dit: LoadedDit) -> None:
    path = tmp_path / "pytorch_lora_weights.safetensors"
    save_file(
        {
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 32),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(32, 2),
        },
        str(path),
    )
    with pytest.raises(LoraError, match=r"trained for ACE-Step v1 \(3.5B\)"):
        lora.check_compatible(lora.inspect_lora(path), lora.shapes_of(dit.pipe.transformer), "rap")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"\x05\x00", "only 2 bytes"),
        (struct.pack("<Q", 10_000) + b"{}", "header claims 10,000 bytes"),
        (struct.pack("<Q", 8) + b"not json", "header is not JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a table"),
        (b"PK\x03\x04" + b"\0" * 64, "PyTorch pickle"),
        (b"\x80\x04\x95" + b"\0" * 64, "PyTorch pickle"),
    ],
)
def test_corrupt_files_are_refused(store: LoraStore, payload: bytes, message: str) -> None:
    with pytest.raises(LoraError, match=message):
        store.add_bytes(payload, "broken.safetensors")
    assert store.list() == []


def test_truncated_tensor_data_is_refused(adapters: dict[str, TinyLora], store: LoraStore) -> None:
    payload = adapters["diffusers"].path.read_bytes()
    with pytest.raises(LoraError, match="damaged or truncated"):
        store.add_bytes(payload[:-16], "cut.safetensors")


def test_files_that_are_not_loras_are_refused(tmp_path: Path, store: LoraStore) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"layers.0.self_attn.to_q.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(LoraError, match="not a LoRA"):
        store.add_bytes(path.read_bytes(), "model.safetensors")
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4)}, str(path))
    with pytest.raises(LoraError, match="kohya"):
        store.add_bytes(path.read_bytes(), "kohya.safetensors")


def test_only_safetensors_under_the_size_limit(
    adapters: dict[str, TinyLora], tmp_path: Path
) -> None:
    payload = adapters["diffusers"].path.read_bytes()
    with pytest.raises(LoraError, match=r"only \.safetensors"):
        LoraStore(tmp_path, 5).add_bytes(payload, "style.bin")
    with pytest.raises(LoraError, match="the limit is 0 MB"):
        LoraStore(tmp_path, 0).add_bytes(payload, "style.safetensors")


# --- the store and the stack ---------------------------------------------------------------


def test_store_keeps_files_by_sha256(adapters: dict[str, TinyLora], store: LoraStore) -> None:
    payload = adapters["diffusers"].path.read_bytes()
    first = store.add_bytes(payload, "pytorch_lora_weights.safetensors")
    assert first.path.name == f"{first.sha256}.safetensors"
    assert first.path.read_bytes() == payload
    # A generic trainer file name gets its checksum so two of them can be told apart.
    assert first.name == f"pytorch_lora_weights {first.short}"
    again = store.add_bytes(payload, "renamed.safetensors")
    assert again.sha256 == first.sha256 and again.name == first.name
    assert [s.sha256 for s in store.list()] == [first.sha256]
    store.delete(first.sha256)
    assert store.get(first.sha256) is None


def test_the_same_file_twice_is_already_in_the_stack(
    adapters: dict[str, TinyLora], store: LoraStore
) -> None:
    stored = keep(store, adapters["diffusers"])
    stack = lora.add_to_stack((), stored, 0.7)
    assert stack == (LoraChoice(stored.name, stored.sha256, 0.7),)
    uploaded_again = store.add_bytes(adapters["diffusers"].path.read_bytes(), "copy.safetensors")
    with pytest.raises(LoraError, match="already in the stack"):
        lora.add_to_stack(stack, uploaded_again)
    stack = lora.set_scale(stack, stored.sha256, 9.0)
    assert stack[0].scale == 1.5
    assert lora.remove_from_stack(stack, stored.sha256) == ()


# --- applying ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["diffusers", "ace-step"])
def test_adapter_plays_at_its_trained_strength(
    kind: str,
    adapters: dict[str, TinyLora],
    dit: LoadedDit,
    pipe: object,
    store: LoraStore,
    tiny_dit: Path,
) -> None:
    base = output(pipe)
    adapter = adapters[kind]
    stored = keep(store, adapter, dit)
    lora.sync_adapters(pipe, store, (stored.choice(1.0),))
    with_lora = output(pipe)
    assert not torch.allclose(with_lora, base, atol=1e-3)
    # PEFT applying the adapter directly at its true alpha is the ground truth.
    expected = reference_output(tiny_dit / "transformer", adapter, INPUTS)
    assert torch.allclose(with_lora, expected, atol=1e-5)
    # diffusers alone would load an original adapter at alpha = rank: audibly weaker.
    weak = reference_output(tiny_dit / "transformer", replace(adapter, alpha=adapter.rank), INPUTS)
    assert not torch.allclose(with_lora, weak, atol=1e-3)


def test_removing_every_adapter_returns_the_exact_base(
    adapters: dict[str, TinyLora], dit: LoadedDit, pipe: object, store: LoraStore
) -> None:
    base = output(pipe)
    first, second = keep(store, adapters["diffusers"], dit), keep(store, adapters["ace-step"], dit)
    lora.sync_adapters(pipe, store, (first.choice(1.0), second.choice(0.5)))
    assert not torch.equal(output(pipe), base)
    lora.sync_adapters(pipe, store, ())
    assert torch.equal(output(pipe), base)
    assert lora.loaded_adapters(pipe) == []


def test_two_adapters_stack_with_their_own_weights(
    adapters: dict[str, TinyLora], dit: LoadedDit, pipe: object, store: LoraStore
) -> None:
    first, second = keep(store, adapters["diffusers"], dit), keep(store, adapters["mlp"], dit)
    lora.sync_adapters(pipe, store, (first.choice(1.0),))
    only_first = output(pipe)
    lora.sync_adapters(pipe, store, (second.choice(1.0),))
    only_second = output(pipe)
    lora.sync_adapters(pipe, store, (first.choice(1.0), second.choice(1.0)))
    both = output(pipe)
    assert not torch.allclose(both, only_first, atol=1e-4)
    assert not torch.allclose(both, only_second, atol=1e-4)
    assert sorted(pipe.get_active_adapters()) == sorted(
        lora.adapter_name(s.sha256) for s in (first, second)
    )
    # A weight of 0 silences one adapter exactly; weights change the blend.
    lora.sync_adapters(pipe, store, (first.choice(1.0), second.choice(0.0)))
    assert torch.equal(output(pipe), only_first)
    lora.sync_adapters(pipe, store, (first.choice(0.5), second.choice(1.5)))
    assert not torch.allclose(output(pipe), both, atol=1e-4)
    # Removing one leaves the other exactly as it was alone.
    lora.sync_adapters(pipe, store, (first.choice(1.0),))
    assert torch.equal(output(pipe), only_first)


def test_a_fused_stack_plays_the_same_and_unfuses_to_the_exact_base(
    adapters: dict[str, TinyLora], dit: LoadedDit, pipe: object, store: LoraStore
) -> None:
    base = output(pipe)
    weights = {name: p.detach().clone() for name, p in pipe.transformer.named_parameters()}
    first, second = keep(store, adapters["ace-step"], dit), keep(store, adapters["mlp"], dit)
    stack = (first.choice(1.0), second.choice(0.5))
    lora.sync_adapters(pipe, store, stack)
    unfused = output(pipe)
    lora.sync_adapters(pipe, store, stack, fuse=True)
    assert lora.is_fused(pipe)
    fused = output(pipe)
    assert torch.allclose(fused, unfused, atol=1e-5)
    # The same stack again is already in place; another weight is fused afresh.
    lora.sync_adapters(pipe, store, stack, fuse=True)
    assert torch.equal(output(pipe), fused)
    lora.sync_adapters(pipe, store, (first.choice(1.0), second.choice(1.5)), fuse=True)
    assert not torch.allclose(output(pipe), fused, atol=1e-4)
    # Unfused again and emptied: every base weight is back bit for bit.
    lora.sync_adapters(pipe, store, (), fuse=True)
    assert not lora.is_fused(pipe)
    assert torch.equal(output(pipe), base)
    for name, param in pipe.transformer.named_parameters():
        key = name.replace(".base_layer", "")
        if key in weights:
            assert torch.equal(param, weights[key]), name


def test_sync_refuses_unknown_duplicate_and_incompatible(
    adapters: dict[str, TinyLora], pipe: object, store: LoraStore
) -> None:
    stored = keep(store, adapters["diffusers"])
    with pytest.raises(Exception, match="twice"):
        lora.sync_adapters(pipe, store, (stored.choice(1.0), stored.choice(0.5)))
    with pytest.raises(Exception, match="not in this Studio's LoRA store"):
        lora.sync_adapters(pipe, store, (LoraChoice("gone", "f" * 64, 1.0),))
    wide = keep(store, adapters["wide"])  # kept without a check: the stage checks again
    with pytest.raises(Exception, match="hidden size 48"):
        lora.sync_adapters(pipe, store, (wide.choice(1.0),))
    assert lora.loaded_adapters(pipe) == []


def test_presets_come_from_the_manifest(tmp_path: Path, dit: LoadedDit) -> None:
    presets = lora.load_presets(Settings(data_dir=tmp_path))
    assert {p.name for p in presets} >= {"Chinese New Year", "Chinese Rap"}
    for preset in presets:
        assert preset.repo_id.startswith("ACE-Step/")
        assert preset.file.endswith(".safetensors")
        assert 0 < preset.default_scale <= 1.5
    xl = lora._shapes_from_config(json.dumps(XL_TRANSFORMER, sort_keys=True))
    cny = next(p for p in presets if p.name == "Chinese New Year")
    assert cny.unavailable_reason(xl) == "Made for the 2B DiT; this Studio runs XL."
    custom = tmp_path / "presets.json"
    custom.write_text(
        json.dumps({"presets": [{"name": "Mine", "repo_id": "me/x", "file": "a.safetensors"}]})
    )
    assert [
        p.name for p in lora.load_presets(Settings(data_dir=tmp_path, lora_presets=str(custom)))
    ] == ["Mine"]
    custom.write_text("{")
    with pytest.raises(LoraError, match="could not be read"):
        lora.load_presets(Settings(data_dir=tmp_path, lora_presets=str(custom)))


@pytest.mark.parametrize("config", ["tiny", "xl"])
def test_shapes_from_a_config_match_the_real_module_tree(config: str, tiny_dit: Path) -> None:
    from diffusers import AceStepTransformer1DModel

    if config == "xl":
        values = dict(XL_TRANSFORMER)
    else:
        values = json.loads((tiny_dit / "transformer" / "config.json").read_text())
    with torch.device("meta"):
        model = AceStepTransformer1DModel.from_config(
            {k: v for k, v in values.items() if not k.startswith("_")}
        )
    real = lora.shapes_of(model).linear
    computed = lora._shapes_from_config(json.dumps(values, sort_keys=True))
    assert computed.linear == real
    assert computed.hidden_size == model.config.hidden_size


def test_dit_shapes_are_known_before_the_dit_loads(studio: Studio) -> None:
    assert studio.dit.loaded is None
    shapes = lora.dit_shapes(studio)
    assert shapes.hidden_size == 32
    assert shapes.linear["layers.1.self_attn.to_q"] == (32, 32)


# --- through a song --------------------------------------------------------------------------


def test_takes_list_their_loras_and_retakes_keep_them(
    studio: Studio, adapters: dict[str, TinyLora]
) -> None:
    store = lora.store_for(studio.settings)
    stored = keep(store, adapters["ace-step"])
    request = SongRequest(
        caption="lofi", lyrics="[Verse]\nla", duration=10, steps=2, loras=(stored.choice(0.8),)
    )
    job = wait_for(studio, studio.submit_song(request).id)
    assert job.status == DONE, job.error
    take = studio.library.for_job(job.id)[0]
    assert take.meta["request"]["loras"] == [
        {"name": stored.name, "sha256": stored.sha256, "scale": 0.8}
    ]
    pipe = studio.dit.loaded.pipe
    assert lora.loaded_adapters(pipe) == [lora.adapter_name(stored.sha256)]
    retake = wait_for(studio, studio.retake(take.id).id)
    assert retake.status == DONE, retake.error
    assert (
        studio.library.for_job(retake.id)[0].meta["request"]["loras"]
        == take.meta["request"]["loras"]
    )
    # A song without LoRAs runs on the base model again.
    plain = wait_for(studio, studio.submit_song(replace(request, loras=())).id)
    assert plain.status == DONE
    assert lora.loaded_adapters(pipe) == []
    # A LoRA the store no longer has fails the job with a message, not a traceback.
    store.delete(stored.sha256)
    missing = wait_for(studio, studio.submit_song(request).id)
    assert missing.status == FAILED
    assert "not in this Studio's LoRA store" in missing.error
