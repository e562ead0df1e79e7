"""judgefree.train: DPO on curated pairs and the self-improvement loop.

- losses: ``sequence_logprobs``, ``dpo_loss`` (TRL's sigmoid / ipo / hinge / robust).
- trainer: ``train_dpo(model, store, out, TrainConfig)`` with policy log-probs from
  ``kernels.linear_logprobs`` and reference log-probs from the pair store.
- loop: ``Loop(LoopSettings)`` runs generate -> curate -> train (-> evaluate) per round.
Heavy modules (torch, transformers, peft) load on first use of their names.
"""

from .losses import DPO_LOSS_TYPES, SequenceLogprobs, dpo_loss, sequence_logprobs

_LAZY = {
    "TrainConfig": "config", "train_dpo": "trainer", "TrainResult": "trainer", "dpo_step": "trainer",
    "ResponseLogprobs": "policy", "load_policy": "model", "export_model": "export",
    "Loop": "loop", "LoopSettings": "loop", "EvalSettings": "loop",
}

__all__ = ["DPO_LOSS_TYPES", "SequenceLogprobs", "dpo_loss", "sequence_logprobs", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"judgefree.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'judgefree.train' has no attribute {name!r}")
