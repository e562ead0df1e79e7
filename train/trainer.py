"""The DPO trainer: a pair store and a checkpoint in, a trained Hugging Face checkpoint out.

    result = train_dpo(model_path, curated_store, out_dir, TrainConfig(...))

``out_dir`` receives ``train.json`` (settings), ``metrics.jsonl`` (one line per step: loss,
reward margin and accuracy, tokens/s, peak memory), ``checkpoints/`` (resumable), the
exported model in ``model/`` and ``result.json``, written last: a finished run is skipped,
an interrupted one resumes from its newest checkpoint, both only with the settings and pairs
``train.json`` holds (anything else is refused). Under torchrun every rank calls it.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from judgefree.io import write_json_atomic
from judgefree.train import distributed as D
from judgefree.errors import FolderLocked
from judgefree.locks import FolderLock
from judgefree.store.pair_store import PairStore
from judgefree.train.checkpoint import CHECKPOINTS, load_checkpoint, resume_point, save_checkpoint
from judgefree.train.config import TrainConfig, resume_differences
from judgefree.train.data import (DPOBatch, StepPlan, check_images_unchanged, collate, examples_digest,
                                  load_examples, micro_batches)
from judgefree.train.export import export_model
from judgefree.train.losses import dpo_loss
from judgefree.train.metrics import MetricsLog, StepStats
from judgefree.train.model import LoadedPolicy, load_policy
from judgefree.train.policy import ResponseLogprobs, batch_logprobs
from judgefree.train.reference import check_reference_model, fill_reference, policy_scorer

RESULT = "result.json"


@dataclass(slots=True)
class TrainResult:
    out_dir: Path
    model_dir: Path
    steps: int
    resumed_from: int  # the step the run resumed at (0: from the start)
    metrics: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    reference_computed: int  # pairs whose reference log-probs were computed (store lacked them)
    seconds: float
    already_done: bool = False


def is_trained(out_dir: str | Path) -> bool:
    return (Path(out_dir) / RESULT).is_file()


def train_dpo(model_path: str | Path, pairs_path: str | Path, out_dir: str | Path, config: TrainConfig, *,
              device: str | torch.device | None = None, progress: bool = True,
              after_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``model_path`` with DPO on the pairs of ``pairs_path`` into ``out_dir`` (see the
    module docstring). ``after_step(step)`` runs after each optimizer step (a test hook)."""
    start = time.perf_counter()
    out = Path(out_dir)
    ctx = D.setup(device)
    lock = None
    try:
        lock = _lock(out, ctx)
        return _Run(model_path, pairs_path, out, config, ctx, progress, after_step, start).run()
    finally:
        if lock is not None:
            lock.release()
        D.teardown(ctx)


def _lock(out: Path, ctx: D.DistContext) -> FolderLock | None:
    """Rank 0 locks ``out`` for the job (its other ranks are the same job); a refusal reaches
    every rank, so none of them waits for a rank 0 that has stopped."""
    lock, refusal = None, None
    if ctx.is_main:
        try:
            lock = FolderLock(out).acquire()
        except FolderLocked as err:
            refusal = str(err)
    refusal = D.broadcast_object(refusal, ctx)
    if refusal is not None:
        raise FolderLocked(refusal)
    return lock


def dpo_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, batches: Iterable[DPOBatch],
             num_batches: int, num_pairs: int, config: TrainConfig, params: list[torch.nn.Parameter]) -> StepStats:
    """Forward + backward over ``batches`` (``num_pairs`` pairs in ``num_batches`` micro-batches,
    gradients accumulated as the mean over pairs), then clip, optimizer and scheduler step.
    Statistics are this process's sums; ``StepStats.reduce`` combines the ranks."""
    policy.train()
    stats = StepStats.zeros(next(iter(params)).device)
    for index, batch in enumerate(batches):
        if hasattr(policy, "set_requires_gradient_sync"):  # FSDP2: reduce-scatter once per step
            policy.set_requires_gradient_sync(index == num_batches - 1)
        chosen, rejected = batch_logprobs(policy, batch)
        ref_chosen, ref_rejected = batch.ref_chosen, batch.ref_rejected
        if ref_chosen is None or ref_rejected is None:
            raise ValueError(f"pairs {batch.pair_ids} have no reference log-probs")
        if config.loss_type == "ipo":  # TRL's IPO compares length-normalised log-probs
            policy_chosen, policy_rejected = chosen.means, rejected.means
            ref_chosen, ref_rejected = ref_chosen / chosen.lengths, ref_rejected / rejected.lengths
        else:
            policy_chosen, policy_rejected = chosen.sums, rejected.sums
        loss, chosen_rewards, rejected_rewards = dpo_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=config.beta,
            loss_type=config.loss_type, label_smoothing=config.label_smoothing)
        # Mean over this rank's pairs; FSDP2 averages over the (equal) shares of the ranks.
        (loss * (batch.num_pairs / num_pairs)).backward()
        stats.add(loss.detach() * batch.num_pairs, chosen_rewards, rejected_rewards, batch.num_tokens)
    max_norm = config.max_grad_norm if config.max_grad_norm > 0 else float("inf")
    stats.grad_norm_tensor = torch.nn.utils.clip_grad_norm_(params, max_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


def _finished(out: Path) -> TrainResult:
    info = json.loads((out / RESULT).read_text())
    return TrainResult(out, Path(info["model_dir"]), info["steps"], info["steps"], MetricsLog(out).read(),
                       info["skipped"], 0, 0.0, already_done=True)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    """One invocation of ``train_dpo`` on one rank."""

    def __init__(self, model_path, pairs_path, out: Path, config: TrainConfig, ctx: D.DistContext,
                 progress: bool, after_step, start: float) -> None:
        self.model_path, self.pairs_path, self.out, self.config, self.ctx = model_path, pairs_path, out, config, ctx
        self.progress, self.after_step, self.start = progress and ctx.is_main, after_step, start
        if config.batch_size % ctx.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be a multiple of the number of processes "
                             f"({ctx.world_size}) so that every rank gets the same share")

    def _settings(self, examples) -> dict[str, Any]:
        # "auto" choices depend on the world size: a resume under another one must not switch
        # a LoRA run to full fine-tuning (its checkpoint would not fit) or change the rate.
        world = self.ctx.world_size
        return {"model": str(Path(self.model_path).resolve()), "pairs": str(Path(self.pairs_path).resolve()),
                "examples": len(examples), "pairs_digest": examples_digest(examples),
                "finetune_resolved": self.config.resolved_finetune(world),
                "learning_rate_resolved": self.config.resolved_learning_rate(world), **self.config.to_manifest()}

    def _check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to continue a run made with other settings. Without a checkpoint or a result
        there is nothing to continue (a run stopped by a check or killed before its first
        checkpoint): its ``train.json`` is replaced, so a corrected rerun is never blocked."""
        path = self.out / "train.json"
        progress = is_trained(self.out) or any((self.out / CHECKPOINTS).glob("step-*"))
        if path.is_file() and progress:
            stored = json.loads(path.read_text())
            differing = resume_differences(stored, settings)
            if differing:
                detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}" for k in differing)
                raise ValueError(f"{self.out} holds a training run with other settings ({detail}); "
                                 "rerun with the same settings to resume, or choose another output folder")
        D.barrier(self.ctx)
        if self.ctx.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, settings)

    def run(self) -> TrainResult:
        ctx, config = self.ctx, self.config
        store = PairStore(self.pairs_path)  # opened once: its pairs, then its recorded model
        examples, skipped = load_examples(store, kept_only=config.kept_only)
        self._check_settings(self._settings(examples))  # also before reusing a finished run
        if is_trained(self.out):
            return _finished(self.out)
        batch_size = config.batch_size
        if len(examples) < batch_size:
            raise ValueError(f"{len(examples)} pairs to train on, fewer than batch_size={batch_size}; "
                             "lower --batch-size")
        plan = StepPlan(len(examples), batch_size, config.epochs, config.seed, config.max_steps)
        fingerprint = self._check_reference_source(examples, store.model)  # before the model loads: a refusal is quick
        _seed_everything(config.seed)  # LoRA's initial A matrices come from torch's RNG
        loaded = load_policy(self.model_path, config, ctx.device, ctx.world_size)
        if loaded.pixels is not None:  # an image model reads every pair's image: it must be unchanged
            check_images_unchanged(examples)
        autocast = loaded.compute_dtype if (loaded.finetune == "full" and not ctx.distributed
                                            and loaded.compute_dtype != torch.float32) else None
        policy = ResponseLogprobs(loaded.model, loaded.architecture, autocast, logprobs=config.logprobs,
                                  filter_eps=config.logprobs_filter_eps)
        if ctx.distributed:
            param_dtype = loaded.compute_dtype if loaded.compute_dtype != torch.float32 else None
            D.shard_policy(policy, loaded.architecture.decoder(loaded.model).layers, ctx, param_dtype)
        computed = self._fill_reference(examples, loaded, policy, fingerprint)

        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.resolved_learning_rate(ctx.world_size),
                                      weight_decay=config.weight_decay, eps=config.adam_eps)
        from transformers import get_scheduler

        scheduler = get_scheduler(config.scheduler, optimizer, num_training_steps=plan.total_steps,
                                  num_warmup_steps=math.ceil(config.warmup_ratio * plan.total_steps))
        log = MetricsLog(self.out)
        first, metrics = 0, []
        checkpoint = resume_point(self.out, ctx)
        if checkpoint is not None:
            state = load_checkpoint(checkpoint, policy, optimizer, scheduler, ctx)
            first, metrics = state["step"], state["metrics"]
        if ctx.is_main:
            log.rewrite(metrics)  # drops lines of steps done after the checkpoint

        bar = tqdm(total=plan.total_steps, initial=first, desc="dpo", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        for step in range(first, plan.total_steps):
            lr = scheduler.get_last_lr()[0]
            stats = self._step(policy, optimizer, scheduler, examples, loaded, plan, step, params)
            record = stats.record(step + 1, (step + 1) / plan.steps_per_epoch, lr, ctx.device)
            metrics.append(record)
            if ctx.is_main:
                log.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", margin=f"{record['rewards/margins']:.3f}",
                            acc=f"{record['rewards/accuracies']:.2f}", tok_s=f"{record['tokens_per_s']:.0f}")
            last = step + 1 == plan.total_steps
            if (step + 1) % config.save_every == 0 or last:
                save_checkpoint(self.out, step + 1, policy, optimizer, scheduler, {"metrics": metrics}, ctx,
                                keep=config.keep_checkpoints)
            if self.after_step is not None:
                self.after_step(step + 1)
        bar.close()

        summary = {"steps": plan.total_steps, "pairs": len(examples), "first": metrics[0] if metrics else None,
                   "last": metrics[-1] if metrics else None}
        model_dir = export_model(loaded, policy, self.out / "model", config, ctx, summary)
        if ctx.is_main:
            write_json_atomic(self.out / RESULT, {"model_dir": str(model_dir), "steps": plan.total_steps,
                                                  "skipped": skipped, "reference_computed": computed, **summary})
        D.barrier(ctx)
        return TrainResult(self.out, model_dir, plan.total_steps, first, metrics, skipped, computed,
                           time.perf_counter() - self.start)

    def _step(self, policy, optimizer, scheduler, examples, loaded: LoadedPolicy, plan: StepPlan, step: int,
              params: list[torch.nn.Parameter]) -> StepStats:
        """One optimizer step over this rank's share of the global batch."""
        ctx, config = self.ctx, self.config
        begin = time.perf_counter()
        share = plan.indices(step, ctx.rank, ctx.world_size)
        chunks = micro_batches(share, config.micro_batch_size)
        batches = (collate([examples[i] for i in chunk], loaded.pad_id, loaded.pixels).to(ctx.device)
                   for chunk in chunks)
        stats = dpo_step(policy, optimizer, scheduler, batches, len(chunks), len(share), config, params)
        stats.reduce(ctx, stats.grad_norm_tensor, time.perf_counter() - begin)
        return stats

    def _check_reference_source(self, examples, store_model: dict | None) -> str | None:
        """The store's recorded reference log-probs are the generating model's: refuse them for
        another model (``check_reference_model``), or drop them when ``recompute_reference`` asks
        (they are then computed like missing ones). Rank 0 reads the weights once and every rank
        gets its verdict; returns the model's fingerprint digest when it was computed."""
        from judgefree.fingerprint import model_fingerprint

        if self.config.recompute_reference:
            for e in examples:
                e.chosen_ref = e.rejected_ref = None
            return None
        if store_model is None or not (Path(self.model_path) / "config.json").is_file():
            return None  # nothing recorded to compare with; a bad model folder is load_policy's to report
        digest, refusal = None, None
        if self.ctx.is_main:
            try:
                fingerprint = model_fingerprint(self.model_path)
                digest = fingerprint["digest"]
                check_reference_model(store_model, fingerprint, self.pairs_path)
            except (ValueError, OSError) as err:
                refusal = str(err)
        digest, refusal = D.broadcast_object((digest, refusal), self.ctx)
        if refusal is not None:
            raise ValueError(refusal)
        return digest

    def _fill_reference(self, examples, loaded: LoadedPolicy, policy: ResponseLogprobs, fingerprint: str | None) -> int:
        """Reference log-probs for pairs whose store lacks them, from the initial weights (every
        rank scores its share, rank 0 saves them beside the store)."""
        score = policy_scorer(policy, loaded.pad_id, loaded.pixels, self.ctx, self.config.micro_batch_size)
        computed = fill_reference(examples, self.pairs_path, loaded.source, score, write=self.ctx.is_main,
                                  fingerprint=fingerprint)
        D.barrier(self.ctx)
        return computed
