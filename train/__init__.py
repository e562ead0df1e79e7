"""judgefree.train: DPO on curated pairs.

- losses: ``sequence_logprobs``, ``dpo_loss`` (TRL's sigmoid / ipo / hinge / robust).
- trainer: ``train_dpo(model, store, out, TrainConfig)`` with policy log-probs from
  ``kernels.linear_logprobs`` and reference log-probs from the pair store.
- launch: ``python -m judgefree.train.launch`` (torchrun's entry point).
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "losses": ("DPO_LOSS_TYPES", "SequenceLogprobs", "dpo_loss", "sequence_logprobs"),
    "config": ("TrainConfig",),
    "trainer": ("train_dpo", "TrainResult", "dpo_step"),
    "policy": ("ResponseLogprobs",),
    "model": ("load_policy",),
    "export": ("export_model",),
})
