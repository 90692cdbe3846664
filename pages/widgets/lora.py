"""The "LoRA" expander of the song pages: the stack, and adding from an upload, a preset or
the LoRAs this Studio already keeps.

The stack lives in `st.session_state["<page>.loras"]` as a tuple of LoraChoice, where the
song form reads it into the request; the same tuple comes back from a take's request, so a
retake or a restore plays with the same adapters.
"""

from __future__ import annotations

import streamlit as st

from core import lora
from core.lora import DitShapes, LoraError, LoraStore, StoredLora
from core.request import LoraChoice
from core.studio import Studio

WEIGHT_STEP = 0.05
UPLOAD_TYPES = ["safetensors", "json"]


def lora_expander(studio: Studio, prefix: str) -> None:
    """Draw the expander; the stack it edits is `st.session_state[f"{prefix}.loras"]`."""
    stack = _stack(prefix)
    label = f"LoRA · {len(stack)} active" if stack else "LoRA"
    with st.expander(label, icon=":material/layers:", key=f"{prefix}.lora-panel"):
        store = lora.store_for(studio.settings)
        _flash(prefix)
        if stack:
            _stack_rows(store, prefix, stack)
        else:
            st.caption(
                "No LoRA: the base model. Add one below to steer the style; several stack, "
                "each with its own weight."
            )
        upload, presets, saved = st.tabs(["Upload", "Presets", "In this Studio"])
        with upload:
            _upload(studio, store, prefix)
        with presets:
            _presets(studio, store, prefix)
        with saved:
            _saved(store, prefix)


# --- the stack -------------------------------------------------------------------------------


def _state_key(prefix: str) -> str:
    return f"{prefix}.loras"


def _stack(prefix: str) -> tuple[LoraChoice, ...]:
    return tuple(st.session_state.get(_state_key(prefix)) or ())


def _set_stack(prefix: str, stack: tuple[LoraChoice, ...]) -> None:
    st.session_state[_state_key(prefix)] = stack


def _weight_key(prefix: str, sha256: str) -> str:
    return f"{prefix}.lora-weight.{sha256[:16]}"


def _stack_rows(store: LoraStore, prefix: str, stack: tuple[LoraChoice, ...]) -> None:
    for choice in stack:
        key = _weight_key(prefix, choice.sha256)
        # The stack is the truth (a restored take sets it): the slider follows it.
        if st.session_state.get(key) != choice.scale:
            st.session_state[key] = choice.scale
        name_col, weight_col, remove_col = st.columns([4, 4, 1], vertical_alignment="center")
        with name_col:
            st.markdown(f"**{choice.name}**")
            stored = store.get(choice.sha256)
            if stored is None:
                st.caption(
                    f":red[Not in this Studio's store (sha256 {choice.sha256[:8]}): upload the "
                    "file again or remove it.]"
                )
            else:
                st.caption(f"{_summary(stored)} · sha256 {stored.short}")
        with weight_col:
            st.slider(
                "Weight",
                *lora.SCALE_RANGE,
                step=WEIGHT_STEP,
                key=key,
                on_change=_weight_changed,
                args=(prefix, choice.sha256),
                help="0 silences it, 1 is the strength it was trained at, up to 1.5 overdrives.",
            )
        with remove_col:
            st.button(
                "Remove",
                key=f"{prefix}.lora-remove.{choice.sha256[:16]}",
                icon=":material/close:",
                type="tertiary",
                help=f"Remove {choice.name} from the stack.",
                on_click=_remove,
                args=(prefix, choice.sha256),
            )
    st.button(
        "Disable all",
        key=f"{prefix}.lora-clear",
        icon=":material/layers_clear:",
        on_click=_set_stack,
        args=(prefix, ()),
        help="Back to the base model, exactly.",
    )


def _weight_changed(prefix: str, sha256: str) -> None:
    value = float(st.session_state[_weight_key(prefix, sha256)])
    _set_stack(prefix, lora.set_scale(_stack(prefix), sha256, value))


def _remove(prefix: str, sha256: str) -> None:
    _set_stack(prefix, lora.remove_from_stack(_stack(prefix), sha256))
    st.session_state.pop(_weight_key(prefix, sha256), None)


def _add(prefix: str, stored: StoredLora, scale: float) -> None:
    """Put a LoRA on the stack, or say why not."""
    try:
        _set_stack(prefix, lora.add_to_stack(_stack(prefix), stored, scale))
    except LoraError as error:
        _say(prefix, "error", str(error))
        return
    _say(prefix, "success", f"Added {stored.name} · {_summary(stored)}")


# --- adding ----------------------------------------------------------------------------------


def _upload(studio: Studio, store: LoraStore, prefix: str) -> None:
    counter_key = f"{prefix}.lora-upload-counter"
    counter = st.session_state.setdefault(counter_key, 0)
    files = st.file_uploader(
        "LoRA file",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=f"{prefix}.lora-upload-{counter}",
        help="A .safetensors LoRA for the ACE-Step DiT (diffusers or ACE-Step's own PEFT "
        "format). Add its adapter_config.json to load an ACE-Step adapter at the strength "
        f"it was trained at. Up to {studio.settings.max_lora_mb} MB; pickles are refused.",
    )
    if not files:
        return
    weights = [f for f in files if f.name.lower().endswith(".safetensors")]
    configs = [f for f in files if f.name.lower().endswith(".json")]
    if not weights:
        st.info("Now add the .safetensors file that goes with it.", icon=":material/info:")
        return
    # A new uploader key clears the files once they are handled, whatever happens.
    st.session_state[counter_key] = counter + 1
    try:
        config = (
            lora.parse_adapter_config(configs[0].getvalue(), configs[0].name) if configs else None
        )
        with st.spinner(f"Checking {weights[0].name}…"):
            stored = store.add_bytes(
                weights[0].getvalue(),
                weights[0].name,
                adapter_config=config,
                dit=_dit_shapes(studio),
            )
    except LoraError as error:
        _say(prefix, "error", str(error))
    else:
        _add(prefix, stored, 1.0)
    st.rerun()


def _presets(studio: Studio, store: LoraStore, prefix: str) -> None:
    try:
        presets = lora.load_presets(studio.settings)
    except LoraError as error:
        st.error(str(error), icon=":material/error:")
        return
    dit = _dit_shapes(studio)
    in_stack = {choice.name for choice in _stack(prefix)}
    for preset in presets:
        reason = preset.unavailable_reason(dit)
        text_col, button_col = st.columns([5, 1], vertical_alignment="center")
        with text_col:
            st.markdown(f"**{preset.name}** · weight {preset.default_scale:g}")
            st.caption(preset.description or preset.repo_id)
            if reason:
                st.caption(f":orange[{reason}]")
        with button_col:
            clicked = st.button(
                "Add",
                key=f"{prefix}.lora-preset.{preset.name}",
                icon=":material/add:",
                disabled=bool(reason) or preset.name in in_stack,
                help=reason or f"{preset.repo_id} · {preset.file}",
            )
        if clicked:
            try:
                with st.spinner(f"Fetching {preset.name} from {preset.repo_id}…"):
                    stored = lora.fetch_preset(store, preset, dit)
            except LoraError as error:
                _say(prefix, "error", str(error))
            else:
                _add(prefix, stored, preset.default_scale)
            st.rerun()


def _saved(store: LoraStore, prefix: str) -> None:
    in_stack = {choice.sha256 for choice in _stack(prefix)}
    kept = [stored for stored in store.list() if stored.sha256 not in in_stack]
    if not kept:
        st.caption("LoRAs you upload or fetch are kept here, by checksum, for later songs.")
        return
    for stored in kept:
        text_col, add_col, delete_col = st.columns([5, 1, 1], vertical_alignment="center")
        with text_col:
            st.markdown(f"**{stored.name}**")
            st.caption(f"{_summary(stored)} · {stored.size / 1e6:.1f} MB · sha256 {stored.short}")
        add_col.button(
            "Add",
            key=f"{prefix}.lora-saved.{stored.sha256[:16]}",
            icon=":material/add:",
            on_click=_add,
            args=(prefix, stored, 1.0),
        )
        delete_col.button(
            "Delete",
            key=f"{prefix}.lora-delete.{stored.sha256[:16]}",
            icon=":material/delete:",
            type="tertiary",
            help="Delete this file from the Studio. Takes made with it keep their metadata.",
            on_click=store.delete,
            args=(stored.sha256,),
        )


# --- helpers ---------------------------------------------------------------------------------


def _dit_shapes(studio: Studio) -> DitShapes | None:
    """The running DiT's layer shapes, or None while its files are not on this machine."""
    try:
        return lora.dit_shapes(studio)
    except LoraError:
        return None


def _summary(stored: StoredLora) -> str:
    try:
        return stored.info().summary()
    except LoraError as error:
        return f":red[{error}]"


def _say(prefix: str, kind: str, message: str) -> None:
    st.session_state[f"{prefix}.lora-message"] = (kind, message)


def _flash(prefix: str) -> None:
    """Show the last add's outcome once, after the rerun that made it."""
    said = st.session_state.pop(f"{prefix}.lora-message", None)
    if said is None:
        return
    kind, message = said
    if kind == "error":
        st.error(message, icon=":material/error:")
    else:
        st.success(message, icon=":material/check_circle:")
