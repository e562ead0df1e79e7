"""The DPO options of the command line, defined once: ``judgefree improve`` and
``python -m judgefree.train.launch`` both add them and build their ``TrainConfig`` here."""

from __future__ import annotations

import argparse


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """DPO options (shared with ``python -m judgefree.train.launch``)."""
    g = p.add_argument_group("training (DPO)")
    g.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1)")
    g.add_argument("--loss-type", default="sigmoid", help="sigmoid (default), ipo, hinge or robust")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--finetune", default="auto", choices=("auto", "lora", "full"),
                   help="auto (default): LoRA in one process, full fine-tuning under torchrun")
    g.add_argument("--lora-r", type=int, default=16)
    g.add_argument("--lora-alpha", type=int, default=32)
    g.add_argument("--lr", type=float, default=None, help="learning rate (default 5e-5 LoRA, 5e-7 full)")
    g.add_argument("--epochs", type=int, default=1)
    g.add_argument("--scheduler", default="cosine", help="cosine (default), linear, constant, constant_with_warmup")
    g.add_argument("--warmup-ratio", type=float, default=0.1, help="share of the steps spent warming up")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step, all processes together")
    g.add_argument("--micro-batch-size", type=int, default=2, help="pairs per forward on one process")
    g.add_argument("--train-dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16")
    g.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on with CUDA, off on the CPU")
    g.add_argument("--liger", action=argparse.BooleanOptionalAction, default=None,
                   help="liger-kernel's Llama kernels (default: on with CUDA)")
    g.add_argument("--logprobs", default="auto", choices=("auto", "triton", "torch", "eager", "liger"),
                   help="policy log-prob path (TrainConfig.logprobs): auto = the Triton kernel on CUDA")
    g.add_argument("--logprobs-filter-eps", type=float, default=None,
                   help="gradient filtering of the Triton log-prob backward (TrainConfig.logprobs_filter_eps; "
                        "2^-12 = 0.000244 is the documented threshold): drops d logits below it, bounded; default exact")
    g.add_argument("--recompute-reference", action="store_true",
                   help="compute the DPO reference log-probs with the model being trained instead of using the "
                        "ones the store recorded at generation (required when another model generated the pairs)")
    g.add_argument("--save-every", type=int, default=50, help="checkpoint every N steps (default 50)")
    g.add_argument("--train-seed", type=int, default=0)


def train_config(args: argparse.Namespace, **overrides):
    """A TrainConfig from ``add_train_arguments``'s options (imports torch)."""
    from judgefree.train.config import TrainConfig

    return TrainConfig(beta=args.beta, loss_type=args.loss_type, label_smoothing=args.label_smoothing,
                       finetune=args.finetune, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                       learning_rate=args.lr, epochs=args.epochs, max_steps=args.max_steps,
                       scheduler=args.scheduler, warmup_ratio=args.warmup_ratio,
                       batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, dtype=args.train_dtype,
                       gradient_checkpointing=args.gradient_checkpointing, liger=args.liger,
                       logprobs=args.logprobs, logprobs_filter_eps=args.logprobs_filter_eps,
                       recompute_reference=args.recompute_reference,
                       save_every=args.save_every, seed=args.train_seed, **overrides)
