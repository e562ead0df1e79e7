"""PromptBuilder reuses what the processor built for the same image + prompt (a pair's two
requests): the result equals a fresh build, and a different image or prompt is built anew."""

from __future__ import annotations

import torch

from judgefree.engine.architectures import architecture_for
from judgefree.engine.prompts import PromptBuilder


def _builder(folder):
    from transformers import AutoConfig

    return PromptBuilder(folder, architecture_for(AutoConfig.from_pretrained(folder)).image_token_id(
        AutoConfig.from_pretrained(folder)))


def test_same_image_and_prompt_build_once_and_equal_a_fresh_build(tiny_llava_dir, photos, monkeypatch):
    builder = _builder(tiny_llava_dir)
    calls = []
    processor_call = type(builder.processor).__call__
    monkeypatch.setattr(type(builder.processor), "__call__",
                        lambda self, *a, **k: (calls.append(1) if k.get("images") is not None else None)
                        or processor_call(self, *a, **k))
    first = builder.build("Describe this image.", photos[0])
    second = builder.build("Describe this image.", photos[0].copy())  # same pixels, another array
    assert len(calls) == 1
    fresh = _builder(tiny_llava_dir).build("Describe this image.", photos[0])
    for built in (first, second):
        assert built.cond_ids == fresh.cond_ids and built.uncond_ids == fresh.uncond_ids
        assert built.image_span == fresh.image_span and built.image_hash == fresh.image_hash
        assert torch.equal(built.pixel_values, fresh.pixel_values)
    first.cond_ids.append(-1)  # a caller's change to its lists must not reach the next build
    assert builder.build("Describe this image.", photos[0]).cond_ids == fresh.cond_ids

    other_image = builder.build("Describe this image.", photos[1])
    other_prompt = builder.build("What is here?", photos[0])
    assert len(calls) == 4  # + the fresh builder's one call (same class), + these two
    assert other_image.image_hash != fresh.image_hash and not torch.equal(other_image.pixel_values, fresh.pixel_values)
    assert other_prompt.cond_ids != fresh.cond_ids
