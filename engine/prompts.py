"""Turning a Request into the token ids each path is fed, with the checkpoint's own
processor and chat template.

LLaVA: conditional = the template over [image, prompt] with the image placeholder expanded
to one token per image feature ("USER: <image>\\n{prompt} ASSISTANT:" for llava-1.5);
unconditional = the same template without the image. Text models: conditional = context +
prompt, unconditional = prompt alone (through the tokenizer's chat template when it has one).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judgefree.images import image_content_hash, load_image

LLAVA_FALLBACK = "USER: <image>\n{prompt} ASSISTANT:"
LLAVA_FALLBACK_TEXT = "USER: {prompt} ASSISTANT:"
_RECENT = 8  # prompts kept for reuse (a pair's two requests arrive together)


@dataclass(slots=True)
class Prompt:
    """Token ids of both paths; ``pixel_values`` [1, 3, H, W] and the image token span
    [start, end) when the conditional path sees an image."""

    cond_ids: list[int]
    uncond_ids: list[int]
    pixel_values: Any = None
    image_span: tuple[int, int] | None = None
    image_hash: str | None = None


class PromptBuilder:
    """A vision-language model's prompts (``image_token_id`` given: the checkpoint has a
    processor) or a text model's (``image_token_id=None``: a tokenizer)."""

    def __init__(self, folder: Path, image_token_id: int | None = None) -> None:
        from transformers import AutoProcessor, AutoTokenizer

        self.image_token_id = image_token_id
        self.sees_images = image_token_id is not None
        if self.sees_images:
            self.processor = AutoProcessor.from_pretrained(folder)
            self.tokenizer = self.processor.tokenizer
        else:
            self.processor = None
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._uncond_cache: dict[str, list[int]] = {}
        # The two responses of a pair ask for the same image + prompt, one after the other:
        # the processor (resize, normalise, tokenise the expanded template) runs once for both.
        self._recent: OrderedDict[tuple[str, str], Prompt] = OrderedDict()

    def build(self, prompt: str, image: Any = None, context: str | None = None) -> Prompt:
        """Both paths' ids for one request; ValueError for an unreadable image or a request
        this model cannot take."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string")
        if self.sees_images:
            if context is not None:
                raise ValueError("context is for text models; LLaVA conditions on the image")
            return self._llava(prompt, image)
        if image is not None:
            raise ValueError("this model has no vision tower: pass context=..., not an image")
        cond_text = prompt if context is None else f"{context}\n\n{prompt}"
        return Prompt(self._chat_ids(cond_text), self._uncond(prompt))

    def _uncond(self, prompt: str) -> list[int]:
        ids = self._uncond_cache.get(prompt)
        if ids is None:
            if self.sees_images:
                ids = self._llava_text_ids(prompt)
            else:
                ids = self._chat_ids(prompt)
            self._uncond_cache[prompt] = ids
        return list(ids)

    def _chat_ids(self, text: str) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": text}]
            return list(self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False))
        return self.tokenizer(text)["input_ids"]

    def _llava_template(self, prompt: str, with_image: bool) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        return (LLAVA_FALLBACK if with_image else LLAVA_FALLBACK_TEXT).format(prompt=prompt)

    def _llava_text_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(self._llava_template(prompt, with_image=False))["input_ids"]

    def _llava(self, prompt: str, image: Any) -> Prompt:
        uncond = self._uncond(prompt)
        if image is None:  # no image: both paths see the same text
            return Prompt(list(uncond), uncond)
        picture = load_image(image)
        image_hash = image_content_hash(picture)
        key = (prompt, image_hash)  # same pixels and text: the processor's output is the same
        built = self._recent.get(key)
        if built is None:
            text = self._llava_template(prompt, with_image=True)
            inputs = self.processor(images=picture, text=text, return_tensors="pt")
            ids = inputs["input_ids"][0].tolist()
            positions = [i for i, token in enumerate(ids) if token == self.image_token_id]
            if not positions or positions[-1] - positions[0] + 1 != len(positions):
                raise ValueError("the processor did not produce one contiguous run of image tokens")
            built = Prompt(ids, uncond, inputs["pixel_values"], (positions[0], positions[-1] + 1), image_hash)
            self._recent[key] = built
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        # fresh lists per request (callers may extend them); pixel values are only read
        return Prompt(list(built.cond_ids), uncond, built.pixel_values, built.image_span, image_hash)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def stop_ids(self, generation_eos: Any = None) -> frozenset[int]:
        """EOS ids: the generation config's (an int or a list) plus the tokenizer's."""
        ids = set()
        for value in (generation_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return frozenset(ids)
