"""The Llama language model on the engine's hot path: fused QKV and gate/up projections,
RoPE, RMSNorm with fused residual add, paged attention. Rows are packed tokens [T, hidden]
(no padding); ``AttentionMetadata`` says which sequence each row belongs to."""

from __future__ import annotations

import torch
from judgefree.engine.layers import (
    AttentionMetadata,
    PagedAttention,
    RMSNorm,
    RotaryEmbedding,
)
from torch import nn
from transformers.activations import ACT2FN

# checkpoint projection -> (our fused parameter, shard index)
PACKED = {
    "q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
}


class LlamaAttention(nn.Module):
    def __init__(self, config, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        bias = bool(getattr(config, "attention_bias", False))
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.shard_sizes = (self.q_size, self.kv_size, self.kv_size)
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, bias=bias)
        self.rotary = [rotary]  # shared table; a list keeps it out of this module's children
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5)

    def forward(self, positions: torch.Tensor, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split(self.shard_sizes, dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.rotary[0](positions, q, k)
        return self.o_proj(self.attn(q, k, v.contiguous(), meta).flatten(1))


class LlamaMLP(nn.Module):
    def __init__(self, config) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.intermediate = config.intermediate_size
        self.shard_sizes = (self.intermediate, self.intermediate)
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * self.intermediate, bias=bias)
        self.down_proj = nn.Linear(self.intermediate, config.hidden_size, bias=bias)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.shard_sizes, dim=-1)
        return self.down_proj(self.act(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, rotary)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, positions, x, residual, meta):
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        self.rotary = RotaryEmbedding(config, max_positions)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, self.rotary) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        x, residual = embeds, None
        for layer in self.layers:
            x, residual = layer(positions, x, residual, meta)
        x, _ = self.norm(x, residual)
        return x


class LlamaForCausalLM(nn.Module):
    """``forward`` maps token embeddings to final hidden states; ``compute_logits`` applies
    the head to the rows that need it (the last one of each sequence).

    The engine's model interface: ``language_model`` (itself), ``text_config`` (its config),
    ``image_token_id`` (None: it sees no images, and has no ``encode_images``)."""

    image_token_id = None

    def __init__(self, config, max_positions: int) -> None:
        super().__init__()
        self.config = self.text_config = config
        self.model = LlamaModel(config, max_positions)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def language_model(self) -> LlamaForCausalLM:
        return self

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def forward(self, embeds: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.model(embeds, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]

    def load_weight(self, name: str, tensor: torch.Tensor) -> str:
        """Copy one checkpoint tensor (transformers' Llama names; the body's ``model.``
        prefix optional) into our fused parameters; returns the parameter's name."""
        name = name.removeprefix("model.")
        if name == "lm_head.weight":
            target, shard = "lm_head.weight", None
        else:
            target, shard = "model." + name, None
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in PACKED:
                fused, shard = PACKED[parts[-2]]
                target = "model." + ".".join(parts[:-2] + [fused, parts[-1]])
        param = self.get_parameter(target)
        if shard is not None:
            owner = self.get_submodule(target.rsplit(".", 2)[0])
            sizes = owner.shard_sizes
            param = param.narrow(0, sum(sizes[:shard]), sizes[shard])
        if param.shape != tensor.shape:
            raise ValueError(f"checkpoint tensor {name} has shape {tuple(tensor.shape)}, "
                             f"expected {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensor)
        return target if shard is None else f"{target}[{shard}]"

    def expected_weights(self) -> set[str]:
        """Names ``load_weight`` must return for a complete checkpoint."""
        names = set()
        for name, _ in self.named_parameters():
            if name.endswith(("qkv_proj.weight", "qkv_proj.bias")):
                names.update(f"{name}[{i}]" for i in range(3))
            elif name.endswith(("gate_up_proj.weight", "gate_up_proj.bias")):
                names.update(f"{name}[{i}]" for i in range(2))
            else:
                names.add(name)
        if self.tied:
            names.discard("lm_head.weight")
        return names
