"""An offline byte-level BPE tokenizer, trained on a few strings, in Qwen's ChatML style."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "# Instruction\nGenerate audio semantic tokens based on the given conditions:\n\n",
    "# Caption\nuplifting synth pop with bright pads and a driving beat\n\n# Metas\n",
    "- bpm: 120\n- timesignature: 4\n- keyscale: C major\n- duration: 30 seconds\n",
    "# Languages\nen\n\n# Lyric\n[Verse 1]\nwalking down the empty road tonight\n[Chorus]\n",
    "[Instrumental] [Intro] [Bridge] [Outro] la la la oh oh yeah love heart night light",
    "bpm: caption: duration: genres: keyscale: language: timesignature: N/A seconds",
    "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:;!?'\"-()[]#/",
    "You are a songwriter. Write lyrics with this structure: verse, chorus, bridge.",
]


def build_tokenizer(
    special_tokens: list[str], vocab_size: int = 600, chat_template: str | None = None
) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="right",
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast
