"""Text that a trainer's tokenizer turns back into exactly the token ids the engine generated.

TRL (and any tool that reads text) tokenises a vision pair itself: the prompt with the
processor, image included, and each response on its own, both with
``add_special_tokens=False``. So an exported prompt is the stored prompt ids decoded with
their special tokens, the image-token run collapsed to one image placeholder (the processor
expands it again), and a response is its ids decoded with special tokens kept (EOS included).
Decoding is not always invertible: a sampled, non-canonical split of a word ("c" + "at")
decodes to the same text as the canonical one, which tokenises differently. Every text is
therefore re-tokenised the way TRL does and compared with the stored ids; a response that
does not come back is reported, never silently exported as something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TokenText:
    """Renders stored ids as text for one model's processor (an ``AutoProcessor`` with a tokenizer)."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.image_token = getattr(processor, "image_token", None)
        self.image_token_id = (None if self.image_token is None
                               else self.tokenizer.convert_tokens_to_ids(self.image_token))
        self._prompts: dict[tuple[int, ...], str] = {}

    @classmethod
    def from_pretrained(cls, folder: str) -> TokenText:
        from transformers import AutoProcessor

        return cls(AutoProcessor.from_pretrained(folder))

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _collapse_image_run(self, ids: Sequence[int]) -> list[int]:
        collapsed: list[int] = []
        for token in ids:
            if token == self.image_token_id and collapsed and collapsed[-1] == token:
                continue
            collapsed.append(token)
        return collapsed

    def prompt_text(self, prompt_ids: Sequence[int]) -> str:
        """The prompt as text with one image placeholder; ValueError when it does not tokenise back."""
        key = tuple(prompt_ids)
        if key not in self._prompts:
            if self.image_token_id is None or self.image_token_id not in key:
                raise ValueError("the stored prompt holds no image tokens of this processor "
                                 f"({self.image_token!r}): was the store generated with this model?")
            collapsed = self._collapse_image_run(key)
            text = self._decode(collapsed)
            if self._encode([text])[0] != collapsed:
                raise ValueError(f"the stored prompt does not tokenise back from its text {text!r} with this "
                                 "tokenizer: was the store generated with this model?")
            self._prompts[key] = text
        return self._prompts[key]

    def check_image_expansion(self, prompt_ids: Sequence[int], image: Any) -> None:
        """The processor, given the image, expands the prompt text to exactly ``prompt_ids``
        (the number of image tokens depends on the processor's settings, not on the text)."""
        text = self.prompt_text(prompt_ids)
        ids = self.processor(images=[image], text=[text], add_special_tokens=False)["input_ids"][0]
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if ids != list(prompt_ids):
            count = sum(1 for t in prompt_ids if t == self.image_token_id)
            got = sum(1 for t in ids if t == self.image_token_id)
            raise ValueError(f"this processor turns the prompt into {len(ids)} tokens ({got} image tokens); the "
                             f"engine fed {len(prompt_ids)} ({count} image tokens): use the model the store was "
                             "generated with")

    def response_texts(self, responses: Sequence[Sequence[int]]) -> list[tuple[str, bool]]:
        """Each response as text and whether that text comes back as exactly its ids from the
        processor called as TRL calls it. A response holding the image token never counts as
        exact: a trainer would read it as a second image."""
        texts = [self._decode(ids) for ids in responses]
        if not texts:
            return []
        encoded = self.processor(text=texts, add_special_tokens=False)["input_ids"]
        return [(text, list(back) == list(ids) and self.image_token_id not in ids)
                for text, back, ids in zip(texts, encoded, responses)]
