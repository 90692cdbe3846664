"""The 5 Hz LM planner's text formats, exactly as the model was trained on them.

Upstream ACE-Step 1.5 builds every prompt through the checkpoint's own chat template, with a
system message `# Instruction\\n{instruction}\\n\\n` and a user message per use. The chain of
thought is YAML inside `<think>` tags; for the codes phase it is re-serialised with
`yaml.dump(sort_keys=True, allow_unicode=True)` (width 80 folds long captions, "matching
training format"). These strings are a format to match byte for byte, so they live here alone.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

GENERATE_INSTRUCTION = "Generate audio semantic tokens based on the given conditions:"
INSPIRE_INSTRUCTION = (
    "Expand the user's input into a more detailed and specific musical description:"
)
FORMAT_INSTRUCTION = (
    "Format the user's input into a more detailed and specific musical description:"
)
UNDERSTAND_INSTRUCTION = (
    "Understand the given musical conditions and describe the audio semantics accordingly:"
)
NO_USER_INPUT = "NO USER INPUT"
INSTRUMENTAL = "[Instrumental]"
COT_FIELDS = ("bpm", "caption", "duration", "keyscale", "language", "timesignature")


def system_message(instruction: str) -> dict[str, str]:
    return {"role": "system", "content": f"# Instruction\n{instruction}\n\n"}


def has_negative_prompt(negative_prompt: str) -> bool:
    """Upstream treats empty and its default "NO USER INPUT" as no negative prompt at all."""
    text = (negative_prompt or "").strip()
    return bool(text) and text != NO_USER_INPUT


# --- Planning a song: phase 1 (chain of thought) and phase 2 (audio codes) -----------------


def cot_prompt(tokenizer: Any, caption: str, lyrics: str) -> str:
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    return tokenizer.apply_chat_template(
        [system_message(GENERATE_INSTRUCTION), {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )


def cot_unconditional_prompt(tokenizer: Any, lyrics: str, negative_prompt: str) -> str:
    """The CFG pair's other half in phase 1: the negative prompt as caption, or no caption."""
    if has_negative_prompt(negative_prompt):
        user = f"# Caption\n{negative_prompt}\n\n# Lyric\n{lyrics}\n"
    else:
        user = f"# Lyric\n{lyrics}\n"
    return tokenizer.apply_chat_template(
        [system_message(GENERATE_INSTRUCTION), {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )


def codes_prompt(tokenizer: Any, caption: str, lyrics: str, cot: str) -> str:
    """Phase 2: the assistant turn pre-filled with the chain of thought, then a line break.
    The caption is the musician's original one, not the rewritten one."""
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}\n"
    formatted = tokenizer.apply_chat_template(
        [
            system_message(GENERATE_INSTRUCTION),
            {"role": "user", "content": user},
            {"role": "assistant", "content": cot},
        ],
        tokenize=False,
        add_generation_prompt=False,
    )
    return formatted if formatted.endswith("\n") else formatted + "\n"


def codes_unconditional_prompt(
    tokenizer: Any, caption: str, lyrics: str, negative_prompt: str
) -> str:
    """Phase 2's other half: an empty chain of thought, the negative prompt (when there is
    one) in place of the caption."""
    shown = negative_prompt if has_negative_prompt(negative_prompt) else caption
    return codes_prompt(tokenizer, shown, lyrics, "<think>\n</think>")


def cot_text(metadata: dict[str, Any]) -> str:
    """The chain of thought for phase 2, re-serialised as upstream does (genres dropped)."""
    items: dict[str, Any] = {}
    for key in COT_FIELDS:
        value = metadata.get(key)
        if value is None:
            continue
        if key == "timesignature" and str(value).endswith("/4"):
            value = str(value).split("/")[0]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        items[key] = value
    body = yaml.dump(items, allow_unicode=True, sort_keys=True).strip() if items else ""
    return f"<think>\n{body}\n</think>"


# --- The other uses --------------------------------------------------------------------------


def inspire_prompt(tokenizer: Any, idea: str, instrumental: bool) -> str:
    """Create sample: a short idea becomes caption, lyrics and metadata."""
    query = idea.strip() or NO_USER_INPUT
    user = f"{query}\n\ninstrumental: {'true' if instrumental else 'false'}"
    return tokenizer.apply_chat_template(
        [system_message(INSPIRE_INSTRUCTION), {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )


def format_prompt(tokenizer: Any, caption: str, lyrics: str) -> str:
    """Format: polish the musician's caption and lyrics (no trailing line break here)."""
    caption = caption.strip() or NO_USER_INPUT
    lyrics = lyrics.strip() or INSTRUMENTAL
    user = f"# Caption\n{caption}\n\n# Lyric\n{lyrics}"
    return tokenizer.apply_chat_template(
        [system_message(FORMAT_INSTRUCTION), {"role": "user", "content": user}],
        tokenize=False,
        add_generation_prompt=True,
    )


def understand_prompt(tokenizer: Any, audio_codes: str) -> str:
    """Understand: audio codes become metadata and a lyrics transcription."""
    return tokenizer.apply_chat_template(
        [
            system_message(UNDERSTAND_INSTRUCTION),
            {"role": "user", "content": audio_codes.strip() or NO_USER_INPUT},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )


# --- Reading what the planner wrote ----------------------------------------------------------


def parse_cot(text: str) -> dict[str, Any]:
    """Fields of a chain of thought, with or without its tags (phase 1 stops before
    `</think>`). Continuation lines (YAML folding) are joined into one line."""
    match = re.search(r"<think>(.*?)(?:</think>|$)", text, re.DOTALL)
    body = match.group(1) if match else text.split("<|audio_code_")[0]
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in body.split("\n"):
        if line.strip().startswith("<"):
            continue
        if line and not line[0].isspace() and ":" in line:
            name, value = line.split(":", 1)
            current = name.strip().lower()
            fields[current] = [value] if value.strip() else []
        elif line[:1] in (" ", "\t") and current is not None:
            fields[current].append(line)
    metadata: dict[str, Any] = {}
    for name, lines in fields.items():
        if not lines:
            continue
        value = "\n".join(lines)
        if name in ("bpm", "duration"):
            try:
                metadata[name] = int(value.strip())
            except ValueError:
                metadata[name] = value.strip()
        elif name == "caption":
            metadata[name] = " ".join(part.strip() for part in value.split("\n") if part.strip())
        else:
            metadata[name] = value.strip()
    return metadata


def lyrics_after_thinking(text: str) -> str:
    """The free text after `</think>`, without a leading `# Lyric` header or a closing tag."""
    if "</think>" not in text:
        return ""
    after = text.split("</think>", 1)[1].strip()
    after = re.sub(r"^#\s*Lyrics?\s*\n", "", after, flags=re.IGNORECASE)
    after = re.sub(r"(<\|im_end\|>|<\|endoftext\|>)\s*$", "", after)
    return after.strip()
