"""judgefree.train: DPO on curated pairs.

- losses: ``sequence_logprobs``, ``dpo_loss`` (TRL's sigmoid / ipo / hinge / robust).
- trainer: ``train_dpo(model, store, out, TrainConfig)`` with policy log-probs from
  ``kernels.linear_logprobs`` and reference log-probs from the pair store.
- launch: ``python -m judgefree.train.launch`` (torchrun's entry point).
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "DPO_LOSS_TYPES": "losses",
    "SequenceLogprobs": "losses",
    "dpo_loss": "losses",
    "sequence_logprobs": "losses",
    "TrainConfig": "config",
    "train_dpo": "trainer",
    "TrainResult": "trainer",
    "dpo_step": "trainer",
    "ResponseLogprobs": "policy",
    "load_policy": "model",
    "export_model": "export",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
