"""The seed m0: a LLaVA-1.5-layout model (HF ``LlavaForConditionalGeneration``) whose CLIP
vision tower starts as the world CLIP's image tower, a projector and a small Llama over the
world tokenizer, trained by supervised captioning on the biased training scenes.

With ``train_tower=False`` the tower is frozen (LLaVA-1.5) and its features are computed once
per image; by default it learns with the rest (SeedSettings' note). The prompt is built by the engine's own PromptBuilder, so training sees
exactly the ids the engine will feed)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from judgefree.world.grammar import PROMPT, caption
from judgefree.world.scenes import Scene

IMAGE_TOKEN = "<image>"


@dataclass(frozen=True, slots=True)
class SeedSettings:
    hidden: int = 128
    layers: int = 3
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 2e-3
    warmup: int = 30
    seed: int = 0
    # LLaVA-1.5's recipe: the tower frozen, its features computed once per image. Training it on
    # the biased captions teaches it the co-occurrence shortcut instead of the shapes (docs/world.md).
    train_tower: bool = False
    # Share of training rows given the prompt without the image (the unconditional path's input),
    # with a biased scene's caption as the answer: the language prior the two-path decoding
    # mixes in. LLaVA-1.5's instruction mix holds text-only conversations too, and its LLM was a
    # fluent language model before it ever saw an image; without such rows the seed's
    # unconditional path is out of distribution and writes broken text (docs/world.md, v3).
    text_only: float = 0.0


def write_untrained(folder: Path, clip_config: dict, clip_state: dict, settings: SeedSettings) -> Path:
    """The seed's folder before training: converted tower, random projector and Llama,
    world tokenizer, image processor, llava-1.5 chat template."""
    import torch
    from transformers import CLIPImageProcessor, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from judgefree.assets.checkpoints import LLAVA_CHAT_TEMPLATE
    from judgefree.world.tokenizer import build_tokenizer
    from judgefree.world.tower import convert_visual, hf_vision_config

    tokenizer = build_tokenizer()
    vision = hf_vision_config(clip_config)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=settings.hidden, intermediate_size=2 * settings.hidden + 88,
                       num_hidden_layers=settings.layers, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=settings.hidden // 4, max_position_embeddings=256, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    tokens = (vision.image_size // vision.patch_size) ** 2
    config = LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), vision_feature_layer=-1,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu",
                         image_seq_length=tokens, tie_word_embeddings=False)
    torch.manual_seed(settings.seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32)
    tower = convert_visual(clip_state, clip_config)
    target = model.model.vision_tower
    if not any(k.startswith("vision_model.") for k in target.state_dict()):  # transformers 5 flattens it
        tower = {k.removeprefix("vision_model."): t for k, t in tower.items()}
    missing = target.load_state_dict(tower, strict=False)
    if missing.unexpected_keys or [k for k in missing.missing_keys if "position_ids" not in k]:
        raise ValueError(f"tower conversion mismatch: {missing}")
    model.save_pretrained(folder)
    size = vision.image_size
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}),
        tokenizer=tokenizer, patch_size=vision.patch_size, vision_feature_select_strategy="default",
        chat_template=LLAVA_CHAT_TEMPLATE, num_additional_image_tokens=1)
    processor.save_pretrained(folder)
    return folder


def train_seed(folder: Path, pixels, scenes: list[Scene], settings: SeedSettings, log=print) -> dict:
    """Supervised captioning of the model in ``folder`` (saved back in place)."""
    import torch
    import torch.nn.functional as F
    from transformers import LlavaForConditionalGeneration

    from judgefree.engine.architectures import select_image_features
    from judgefree.engine.prompts import PromptBuilder

    torch.manual_seed(settings.seed)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    config = model.config
    builder = PromptBuilder(folder, config.image_token_id)
    prompt = builder.build(PROMPT, _blank(config.vision_config.image_size))
    prompt_ids, (i0, i1) = list(prompt.cond_ids), prompt.image_span
    text_ids = list(prompt.uncond_ids)  # the same template without the image
    tokenizer = builder.tokenizer
    eos = tokenizer.eos_token_id
    start = time.perf_counter()
    tower = model.model.vision_tower

    def features(rows):
        return select_image_features(tower(pixels[rows], output_hidden_states=True).hidden_states, config)

    if not settings.train_tower:
        with torch.no_grad():  # the frozen tower, once per image
            feats = torch.cat([features(torch.arange(i, min(i + 256, len(pixels)))) for i in range(0, len(pixels), 256)])
    lm, projector, head = model.model.language_model, model.model.multi_modal_projector, model.lm_head
    params = [*lm.parameters(), *projector.parameters(), *head.parameters()]
    if settings.train_tower:
        params += list(tower.parameters())
    else:
        tower.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / settings.warmup)
                                              * 0.5 * (1 + np.cos(np.pi * min(s, settings.steps) / settings.steps)))
    rng = np.random.default_rng([settings.seed, 0x5EED])
    losses = []
    model.train()
    for step in range(settings.steps):
        idx = rng.choice(len(scenes), size=settings.batch_size, replace=False)
        answers = [tokenizer(caption(scenes[i], int(rng.integers(1 << 30))), add_special_tokens=False)["input_ids"]
                   + [eos] for i in idx]
        blind = rng.random(len(idx)) < settings.text_only  # rows without the image
        prefixes = [text_ids if b else prompt_ids for b in blind]
        length = max(len(p) + len(a) for p, a in zip(prefixes, answers))
        ids = torch.full((len(idx), length), tokenizer.pad_token_id)
        labels = torch.full((len(idx), length), -100)
        mask = torch.zeros((len(idx), length), dtype=torch.long)
        for row, (prefix, answer) in enumerate(zip(prefixes, answers)):
            seq = prefix + answer
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, len(prefix):len(seq)] = torch.tensor(answer)
            mask[row, :len(seq)] = 1
        embeds = lm.embed_tokens(ids).clone()
        seeing = torch.as_tensor(np.flatnonzero(~blind))
        if len(seeing):
            rows = torch.as_tensor(idx)[seeing]
            embeds[seeing, i0:i1] = projector(features(rows) if settings.train_tower else feats[rows])
        hidden = lm(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        logits = head(hidden[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            log(f"  seed step {step + 1}/{settings.steps}: loss {np.mean(losses[-100:]):.3f}")
    model.eval()
    model.save_pretrained(folder)
    return {"steps": settings.steps, "final_loss": float(np.mean(losses[-50:])),
            "seconds": round(time.perf_counter() - start, 1)}


def _blank(size: int):
    from PIL import Image

    return Image.new("RGB", (size, size), (128, 128, 128))
