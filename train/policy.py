"""The policy's per-token log-probs on response positions, without [tokens, vocab] logits.

``ResponseLogprobs`` runs the decoder to its final hidden states, keeps the rows at response
positions only, and hands them with the lm_head weight to ``kernels.linear_logprobs``. For
LLaVA each pair's image is encoded once and its features fill the image-token embeddings of
both the chosen and the rejected row. It is a module so that FSDP2 can make it the root
unit: its forward is where the embeddings, the final norm and the lm_head get unsharded.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from judgefree.engine.architectures import Architecture, unwrap
from judgefree.kernels.linear_logprobs import linear_logprobs
from judgefree.kernels.linear_logprobs_ref import linear_logprobs_eager
from judgefree.train.config import check_filter_path
from judgefree.train.data import IGNORE_INDEX, DPOBatch
from judgefree.train.losses import SequenceLogprobs, sequence_logprobs


class ResponseLogprobs(nn.Module):
    """``forward(batch)`` -> per-token log-probs [2B, T] in fp32 (0 off the response)."""

    def __init__(self, model: nn.Module, architecture: Architecture,
                 autocast_dtype: torch.dtype | None = None, logprobs: str = "auto",
                 filter_eps: float | None = None) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.autocast_dtype = autocast_dtype  # full fine-tuning in one process: bf16 compute, fp32 weights
        self.logprobs = logprobs  # TrainConfig.logprobs: which implementation scores the responses
        self.filter_eps = filter_eps  # TrainConfig.logprobs_filter_eps: the kernel's gradient filtering

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor,
                pixel_values: torch.Tensor | None = None) -> torch.Tensor:
        device_type = input_ids.device.type
        autocast = (torch.autocast(device_type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            embeds = self._input_embeddings(input_ids, pixel_values)
            hidden = self.architecture.decoder(self.model)(
                inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state
        mask = targets != IGNORE_INDEX
        picked = hidden[mask]  # [N, H]: response positions only
        if self.autocast_dtype is not None:  # fp32 masters: the lm_head matmul runs in the compute dtype
            picked = picked.to(self.autocast_dtype)
        weight = unwrap(self.model).get_output_embeddings().weight
        # The log-sum-exp over the vocabulary stays in fp32 inside the kernel; autocast must not recast it.
        with torch.autocast(device_type, enabled=False):
            token = token_logprobs(picked, weight.to(picked.dtype), targets[mask], self.logprobs, self.filter_eps)
        return torch.zeros(mask.shape, dtype=token.dtype, device=token.device).masked_scatter(mask, token)

    def _input_embeddings(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None) -> torch.Tensor:
        base = unwrap(self.model)
        embeds = base.get_input_embeddings()(input_ids)
        if not self.architecture.has_vision:
            return embeds
        if pixel_values is None:
            raise ValueError("LLaVA training needs pixel_values (one image per pair)")
        image_token = self.architecture.image_token_id(base.config)
        features = self.architecture.image_features(base, pixel_values)  # [B, n, H]
        rows = features.repeat(input_ids.shape[0] // features.shape[0], 1, 1)  # chosen rows, then rejected
        slots = input_ids == image_token
        if int(slots.sum()) != rows.shape[0] * rows.shape[1] or bool((slots.sum(1) != rows.shape[1]).any()):
            raise ValueError(f"every row needs exactly {rows.shape[1]} image tokens (id {image_token}); "
                             f"got {slots.sum(1).tolist()}: the prompt and the image processor disagree")
        return embeds.masked_scatter(slots[..., None], rows.to(embeds.dtype))


def token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, path: str = "auto",
                   filter_eps: float | None = None) -> torch.Tensor:
    """log p(target) [N] in fp32 through the lm_head ``weight`` by one of ``LOGPROB_PATHS``.

    On CUDA "auto" is the Triton kernel (frozen lm_head under LoRA: no weight-gradient work).
    "liger" is liger-kernel's fused linear cross-entropy (its negative, per token); "eager"
    builds the fp32 [N, V] logits, the reference the others are compared with. ``filter_eps``:
    the kernel's gradient filtering (its packed backward; the PyTorch path is exact anyway)."""
    check_filter_path(path, filter_eps)
    if path == "eager":
        return linear_logprobs_eager(hidden, weight, targets)
    if path == "liger":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        return -LigerFusedLinearCrossEntropyLoss(reduction="none")(weight, hidden, targets).float()
    return linear_logprobs(hidden, weight, targets, backend=path, filter_eps=filter_eps)


def batch_logprobs(policy: nn.Module, batch: DPOBatch) -> tuple[SequenceLogprobs, SequenceLogprobs]:
    """Summed policy log-probs of the chosen and the rejected responses of ``batch``."""
    token = policy(batch.input_ids, batch.attention_mask, batch.targets, batch.pixel_values)
    seqs = sequence_logprobs(token, batch.targets != IGNORE_INDEX)
    n = batch.num_pairs
    chosen = SequenceLogprobs(seqs.sums[:n], seqs.means[:n], seqs.lengths[:n])
    rejected = SequenceLogprobs(seqs.sums[n:], seqs.means[n:], seqs.lengths[n:])
    return chosen, rejected
