"""judgefree.train: DPO losses (and, later, the trainer)."""

from .losses import DPO_LOSS_TYPES, SequenceLogprobs, dpo_loss, sequence_logprobs

__all__ = ["DPO_LOSS_TYPES", "SequenceLogprobs", "dpo_loss", "sequence_logprobs"]
