"""Small random checkpoints in Hugging Face layout, for tests, benchmarks and the demo.

``build_tiny_llava`` writes a ``LlavaForConditionalGeneration`` folder (config.json,
model.safetensors, tokenizer, image processor, llava-1.5 chat template) with a small random
CLIP vision tower and projector; its language model is a small random Llama, or the real
SmolLM2-135M when ``language_model`` names its folder (see ``judgefree.assets.smollm.smollm2_path``).
``build_tiny_llama`` writes a plain ``LlamaForCausalLM`` folder. The tokenizer is always
SmolLM2's (a real BPE tokenizer; no hub access is needed), plus an ``<image>`` token for LLaVA.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

IMAGE_TOKEN = "<image>"
# The llava-1.5 conversation format, as llava-hf's processors render it:
# "USER: <image>\n{prompt} ASSISTANT:"; without an image item: "USER: {prompt} ASSISTANT:".
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _text_config_kwargs(*, gqa: bool, hidden: int, layers: int, max_positions: int) -> dict:
    heads = 4
    return dict(
        hidden_size=hidden,
        intermediate_size=2 * hidden + 24,  # not a multiple of the hidden size on purpose
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=2 if gqa else heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def _tokenizer(extra_tokens: list[str]):
    from judgefree.assets.smollm import smollm2_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    if extra_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": extra_tokens})
    return tokenizer


def _reset_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _scale_init(model, std: float, seed: int) -> None:
    """Re-draw every weight matrix with std ``std`` (norms stay 1, biases 0): random models
    with a wide logit spread have few near-ties, so greedy decoding is stable to rounding."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
            elif "bias" in name:
                param.zero_()


def build_tiny_llama(
    folder: str | os.PathLike, *, gqa: bool = True, hidden: int = 64, layers: int = 2,
    max_positions: int = 512, seed: int = 0, init_std: float = 0.05,
) -> Path:
    """Write a random plain Llama causal LM (SmolLM2's tokenizer) to ``folder``; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = _reset_folder(folder)
    tokenizer = _tokenizer([])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_text_config_kwargs(gqa=gqa, hidden=hidden, layers=layers, max_positions=max_positions),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    _scale_init(model, init_std, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_llava(
    folder: str | os.PathLike, *, gqa: bool = True, hidden: int = 64, layers: int = 2,
    image_size: int = 42, patch_size: int = 14, vision_hidden: int = 32, vision_layers: int = 2,
    max_positions: int = 512, language_model: str | os.PathLike | None = None,
    seed: int = 0, init_std: float = 0.05,
) -> Path:
    """Write a random LLaVA-1.5-layout checkpoint to ``folder``; returns it.

    The image becomes (image_size / patch_size)**2 ``<image>`` tokens (9 by default).
    ``language_model``: a Llama folder (e.g. the SmolLM2 cache) whose weights and config
    become the language model (its embeddings grow by one row for ``<image>``); the vision
    tower and projector stay random. Otherwise ``gqa``/``hidden``/``layers`` shape a random one.
    """
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    folder = _reset_folder(folder)
    tokenizer = _tokenizer([IMAGE_TOKEN])
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    vocab = len(tokenizer)
    if language_model is not None:
        text_config = LlamaConfig.from_pretrained(language_model)
        text_config.vocab_size = vocab
        text_config.tie_word_embeddings = False  # LLaVA's head is its own matrix
    else:
        text_config = LlamaConfig(
            vocab_size=vocab, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            **_text_config_kwargs(gqa=gqa, hidden=hidden, layers=layers, max_positions=max_positions),
        )
    vision_config = CLIPVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
        num_attention_heads=2, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden,
    )
    config = LlavaConfig(
        vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
        image_token_id=image_token_id, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        image_seq_length=(image_size // patch_size) ** 2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    _scale_init(model, init_std, seed)
    if language_model is not None:
        _copy_language_model(model, Path(language_model), vocab)
    model.save_pretrained(folder)

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", chat_template=LLAVA_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(folder)
    return folder


def _copy_language_model(model, source: Path, vocab: int) -> None:
    """Load a Llama checkpoint's weights into ``model``'s language model; the rows added to
    the vocabulary (``<image>``) keep their random values."""
    import torch
    from transformers import LlamaForCausalLM

    donor = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
    language_model = model.model.language_model
    missing = language_model.load_state_dict(
        {k.removeprefix("model."): v for k, v in donor.state_dict().items()
         if k.startswith("model.") and "embed_tokens" not in k},
        strict=False,
    )
    if [k for k in missing.missing_keys if "embed_tokens" not in k]:
        raise ValueError(f"{source} is not a Llama checkpoint: missing {missing.missing_keys[:4]}")
    with torch.no_grad():
        old = donor.model.embed_tokens.weight
        head = donor.get_output_embeddings().weight
        language_model.embed_tokens.weight[: old.shape[0]] = old
        model.lm_head.weight[: head.shape[0]] = head
        if vocab > old.shape[0]:  # the new <image> row(s): only ever replaced by image features
            language_model.embed_tokens.weight[old.shape[0]:] = old.mean(0)
            model.lm_head.weight[head.shape[0]:] = head.mean(0)


def demo_llava_path(cache_dir: str | os.PathLike | None = None, image_size: int = 224) -> Path:
    """The demo model, built once into the cache: LLaVA-1.5 layout whose language model is
    the real SmolLM2-135M-Instruct, with a small random CLIP tower (14 px patches: 256 image
    tokens at the default 224 px, 16 at 56 px) and projector. Its text is real English; what
    it says about an image is not grounded until the projector is trained."""
    from judgefree.assets.cache import cached_folder
    from judgefree.assets.smollm import smollm2_path

    if image_size < 14 or image_size % 14:
        raise ValueError(f"image_size must be a positive multiple of the 14 px patch, got {image_size}")
    source = smollm2_path(cache_dir)
    return cached_folder(f"llava-smollm2-demo-{image_size}px", lambda tmp: build_tiny_llava(
        tmp, language_model=source, image_size=image_size, patch_size=14, vision_hidden=64, vision_layers=2,
        seed=0, init_std=0.02), cache_dir)
