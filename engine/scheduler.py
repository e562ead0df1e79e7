"""Continuous batching: which responses run this step, and what their results do.

State flows one way: ``schedule()`` -> the model runner -> ``postprocess()``. A step is
either a prefill (new or resumed responses, within a token budget; a prompt longer than the
budget is computed in chunks) or a decode (one token for every path of every running
response, conditional and unconditional rows together). When decoding runs out of KV blocks
the most recently admitted responses are preempted: their blocks are released and they wait
to be recomputed later (prefix hits make that cheap); their tokens so far are kept. A
response that cannot fit even with the whole cache to itself fails with an error.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from judgefree.engine.block_manager import BlockManager
from judgefree.engine.config import EngineConfig
from judgefree.engine.sequence import Sequence, SequenceGroup, Status


@dataclass(slots=True)
class Batch:
    """One step's work. ``seqs`` in row order; ``sampling`` the responses whose paths all
    reach their last position this step, so they get a token; ``copies`` copy-on-write
    block pairs to apply first."""

    is_prefill: bool
    seqs: list[Sequence]
    sampling: list[SequenceGroup]
    groups: list[SequenceGroup]
    copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(seq.num_scheduled for seq in self.seqs)


class Scheduler:
    def __init__(self, config: EngineConfig, num_blocks: int, max_model_len: int) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.block_manager = BlockManager(num_blocks, config.block_size, prefix_caching=config.prefix_caching)
        self.waiting: deque[SequenceGroup] = deque()
        self.running: list[SequenceGroup] = []
        self.num_preemptions = 0

    def add(self, group: SequenceGroup) -> None:
        self.waiting.append(group)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[Batch | None, list[SequenceGroup]]:
        """The next batch (None when nothing can run) and the responses that failed to be
        admitted (finished with an error)."""
        failed: list[SequenceGroup] = []
        batch = self._schedule_prefill(failed)
        if batch is None and self.running:
            batch = self._schedule_decode()
            if batch is None:  # every running response was preempted: readmit (or fail) the first
                batch = self._schedule_prefill(failed)
        return batch, failed

    # -- prefill ----------------------------------------------------------------------------
    def _schedule_prefill(self, failed: list[SequenceGroup]) -> Batch | None:
        manager = self.block_manager
        budget = self.config.max_num_batched_tokens
        seqs: list[Sequence] = []
        groups: list[SequenceGroup] = []
        sampling: list[SequenceGroup] = []
        while self.waiting and budget > 0 and len(self.running) + len(groups) < self.config.max_num_seqs:
            group = self.waiting[0]
            if not group.allocated:
                need = sum(manager.blocks_needed(seq) for seq in group.seqs)
                if need > manager.num_free or not self._allocate(group):
                    if not self.running and not groups and need > len(manager.blocks):
                        self.waiting.popleft()
                        group.status, group.finish_reason = Status.FINISHED, "error"
                        group.error = (f"needs {need} KV blocks but the cache holds {len(manager.blocks)}: "
                                       "raise the KV cache size or lower max_model_len")
                        failed.append(group)
                        continue
                    break
            remaining = [seq.remaining for seq in group.seqs]
            if sum(remaining) <= budget:
                counts, completes = remaining, True
            elif not groups:
                counts, completes = self._chunk(remaining, budget), False
            else:
                break
            for seq, count in zip(group.seqs, counts):
                if count:
                    seq.num_scheduled = count
                    manager.register(seq, seq.compute_start + count)
                    seqs.append(seq)
            budget -= sum(counts)
            groups.append(group)
            if completes:
                self.waiting.popleft()
                sampling.append(group)
            else:
                break  # a chunked prompt takes the rest of the step
        if not seqs:
            return None
        return Batch(True, seqs, sampling, groups)

    def _allocate(self, group: SequenceGroup) -> bool:
        """Allocate every path of ``group``, or none. The sum of the paths' ``blocks_needed``
        can fall short: one path's fresh blocks may evict a free cached block (and with it
        the cached chain after it) that the other path counted on, so each path is checked
        against what is left once the ones before it hold their blocks."""
        manager = self.block_manager
        done: list[Sequence] = []
        for seq in group.seqs:
            if manager.blocks_needed(seq) > manager.num_free:
                for held in done:
                    manager.release(held)
                return False
            manager.allocate(seq)
            done.append(seq)
        group.allocated = True
        return True

    @staticmethod
    def _chunk(remaining: list[int], budget: int) -> list[int]:
        """Split ``budget`` over the paths, never computing a path's last position before the
        step that computes all of them (the token is drawn from both paths' last logits)."""
        counts = []
        for left in remaining:
            take = min(left - 1, budget)
            counts.append(take)
            budget -= take
        return counts

    # -- decode -----------------------------------------------------------------------------
    def _schedule_decode(self) -> Batch | None:
        manager = self.block_manager
        queue = deque(self.running)
        scheduled: list[SequenceGroup] = []
        copies: list[tuple[int, int]] = []
        while queue:
            group = queue.popleft()
            while sum(manager.append_cost(seq) for seq in group.seqs) > manager.num_free:
                victim = queue.pop() if queue else group
                self._preempt(victim)
                if victim is group:
                    break
            else:
                for seq in group.seqs:
                    manager.prepare_append(seq, copies)
                    seq.num_scheduled = 1
                    manager.register(seq, len(seq), len(seq) - 1)
                scheduled.append(group)
        self.running = scheduled
        if not scheduled:
            return None
        seqs = [seq for group in scheduled for seq in group.seqs]
        return Batch(False, seqs, list(scheduled), list(scheduled), copies)

    def _preempt(self, group: SequenceGroup) -> None:
        for seq in group.seqs:
            self.block_manager.release(seq)
            seq.num_scheduled = 0
        group.allocated = False
        group.status = Status.WAITING
        self.waiting.appendleft(group)
        self.num_preemptions += 1

    # -- results ----------------------------------------------------------------------------
    def postprocess(self, batch: Batch, tokens: list[int], logprobs: list[float],
                    cond_logprobs: list[float]) -> list[SequenceGroup]:
        """Record the step's tokens (one per ``batch.sampling`` group); returns the responses
        that finished."""
        for seq in batch.seqs:
            seq.num_computed = seq.compute_start + seq.num_scheduled
            seq.num_scheduled = 0
        finished = []
        for group, token, logprob, cond in zip(batch.sampling, tokens, logprobs, cond_logprobs):
            group.output_ids.append(token)  # shared by both paths
            group.logprobs.append(logprob)
            group.cond_logprobs.append(cond)
            group.image_features = None  # in the cache now (pixels stay for a preempted rerun)
            reason = self._finish_reason(group, token)
            if reason is not None:
                group.status, group.finish_reason = Status.FINISHED, reason
                for seq in group.seqs:
                    self.block_manager.release(seq)
                finished.append(group)
            elif group.status is not Status.RUNNING:
                group.status = Status.RUNNING
                self.running.append(group)
        if finished:
            done = {id(g) for g in finished}
            self.running = [g for g in self.running if id(g) not in done]
        return finished

    def _finish_reason(self, group: SequenceGroup, token: int) -> str | None:
        if token in group.stop_ids:
            return "stop"
        if len(group.output_ids) >= group.max_new_tokens or len(group.cond) >= self.max_model_len:
            return "length"
        return None
