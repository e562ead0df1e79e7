"""What differs between the checkpoint families the project loads, behind one interface.

The engine, the prompt builder and the trainer ask an ``Architecture`` (found from a
checkpoint's config by ``architecture_for``) instead of branching on a model-type string:
its text config, its image token (None for a text model), the engine module that serves it,
and, for training, the transformers class, its decoder stack, its trainable extras and how
it turns pixels into image-token embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

SUPPORTED = "LlavaForConditionalGeneration (CLIP + Llama) or a Llama-family causal LM"


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (the model itself otherwise)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class TextArchitecture:
    """A Llama-family causal LM: the conditional path's context is text."""

    name = "llama"
    has_vision = False

    def text_config(self, config: Any) -> Any:
        return config

    def image_token_id(self, config: Any) -> int | None:
        return None

    def engine_model(self, config: Any, max_positions: int) -> nn.Module:
        from judgefree.engine.llama import LlamaForCausalLM

        return LlamaForCausalLM(config, max_positions)

    def transformers_class(self) -> type:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def decoder(self, model: nn.Module) -> nn.Module:
        """The decoder stack of a transformers model: input embeddings -> final hidden states."""
        return unwrap(model).model

    def trainable_extras(self, model: nn.Module) -> list[nn.Module]:
        """Modules besides the language model that full fine-tuning may train."""
        return []

    def image_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        raise ValueError(f"a {self.name} model has no vision tower: it takes no images")


class LlavaArchitecture(TextArchitecture):
    """LLaVA-1.5 layout: a CLIP vision tower and projector in front of a Llama."""

    name = "llava"
    has_vision = True

    def text_config(self, config: Any) -> Any:
        return config.text_config

    def image_token_id(self, config: Any) -> int:
        """The placeholder id (``image_token_id`` in transformers >= 4.47, else ``image_token_index``)."""
        value = getattr(config, "image_token_id", None)
        if value is None:
            value = getattr(config, "image_token_index", None)
        if value is None:
            raise ValueError("LLaVA config names no image token (image_token_id / image_token_index)")
        return int(value)

    def engine_model(self, config: Any, max_positions: int) -> nn.Module:
        from judgefree.engine.llava import LlavaForEngine

        return LlavaForEngine(config, max_positions)

    def transformers_class(self) -> type:
        from transformers import LlavaForConditionalGeneration

        return LlavaForConditionalGeneration

    def decoder(self, model: nn.Module) -> nn.Module:
        return unwrap(model).model.language_model

    def trainable_extras(self, model: nn.Module) -> list[nn.Module]:
        return [unwrap(model).model.multi_modal_projector]

    def image_features(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, image_tokens, hidden] projected features of a transformers LLaVA, as LlavaModel
        computes them; the tower is frozen, so only the projector (when trained) sees gradients."""
        base = unwrap(model)
        tower, projector = base.model.vision_tower, base.model.multi_modal_projector
        with torch.no_grad():
            out = tower(pixel_values.to(next(tower.parameters()).dtype), output_hidden_states=True)
            selected = select_image_features(out.hidden_states, base.config)
        return projector(selected)


def select_image_features(hidden_states, config) -> torch.Tensor:
    """The vision tower's layer(s) LLaVA feeds the projector (``vision_feature_layer``), CLS
    dropped under the "default" strategy, concatenated on the feature axis."""
    layers = config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    chosen = [hidden_states[layer] for layer in layers]
    if config.vision_feature_select_strategy == "default":
        chosen = [h[:, 1:] for h in chosen]  # drop CLS
    return torch.cat(chosen, dim=-1)


Architecture = TextArchitecture  # the interface every family implements
_BY_MODEL_TYPE = {"llama": TextArchitecture(), "llava": LlavaArchitecture()}


def architecture_for(config: Any) -> Architecture:
    """The architecture of a transformers config; ValueError for what the project cannot load."""
    model_type = getattr(config, "model_type", None)
    if model_type == "llava":
        text_type = getattr(config.text_config, "model_type", None)
        if text_type != "llama":
            raise ValueError(f"LLaVA with a {text_type!r} language model is not supported (only llama)")
    if model_type not in _BY_MODEL_TYPE:
        raise ValueError(f"unsupported model_type {model_type!r}: the engine loads {SUPPORTED}")
    return _BY_MODEL_TYPE[model_type]
