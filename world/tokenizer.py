"""The world language's tokenizer: one token per word or punctuation mark (``tokenizers``'
WordLevel), saved as a Hugging Face fast tokenizer with LLaVA's ``<image>`` token and the
llava-1.5 chat template."""

from __future__ import annotations

from pathlib import Path

from judgefree.world.grammar import WORDS

SPECIAL = ("<pad>", "<s>", "</s>", "<unk>", "<image>")


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` for the world language (deterministic: sorted words)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from judgefree.assets.checkpoints import LLAVA_CHAT_TEMPLATE

    vocab = {tok: i for i, tok in enumerate((*SPECIAL, *WORDS))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words, "circle ." -> "circle."
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>",
                                        additional_special_tokens=["<image>"])
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(folder: str | Path):
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    return tokenizer
