"""LLaVA for the engine: transformers' CLIP vision tower and projector (run once per image)
in front of our Llama language model (the hot path)."""

from __future__ import annotations

import torch
from judgefree.engine.architectures import LlavaArchitecture, select_image_features
from judgefree.engine.llama import LlamaForCausalLM
from torch import nn


class LlavaForEngine(nn.Module):
    """The engine's model interface (as ``LlamaForCausalLM``): ``language_model``,
    ``text_config``, ``image_token_id``; plus ``encode_images``, which turns pixel values into
    one embedding row per image token (a text model has none)."""

    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        from transformers import CLIPVisionModel
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

        if getattr(config.vision_config, "model_type", "") not in ("clip_vision_model", "clip"):
            raise ValueError(f"only CLIP vision towers are supported, got {config.vision_config.model_type!r}")
        if config.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"unknown vision_feature_select_strategy {config.vision_feature_select_strategy!r}")
        self.config = config
        self.vision_tower = CLIPVisionModel(config.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = LlamaForCausalLM(config.text_config, max_positions)
        self.image_token_id = LlavaArchitecture().image_token_id(config)
        self.text_config = config.text_config

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> [N, image_tokens, hidden] projected image features."""
        out = self.vision_tower(pixel_values.to(self.vision_tower.dtype), output_hidden_states=True)
        return self.multi_modal_projector(select_image_features(out.hidden_states, self.config))

    def load_weight(self, name: str, tensor: torch.Tensor) -> str:
        """Route one checkpoint tensor (old ``language_model.model.*`` or new
        ``model.language_model.*`` layout) to its module; returns the loaded name."""
        name = name.removeprefix("model.")
        for prefix in ("language_model.model.", "language_model."):
            if name.startswith(prefix):
                return "language_model." + self.language_model.load_weight(name[len(prefix):], tensor)
        if name == "lm_head.weight":
            return "language_model." + self.language_model.load_weight(name, tensor)
        if name.startswith(("vision_tower.", "multi_modal_projector.")):
            param = self.get_parameter(name)
            if param.shape != tensor.shape:
                raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(param.shape)}")
            with torch.no_grad():
                param.copy_(tensor)
            return name
        raise KeyError(name)

    def expected_weights(self) -> set[str]:
        names = {"language_model." + n for n in self.language_model.expected_weights()}
        names.update(n for n, _ in self.named_parameters() if not n.startswith("language_model."))
        return names
