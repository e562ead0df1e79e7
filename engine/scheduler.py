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
from judgefree.engine.response import Response, ResponsePath, Status, StepResult


@dataclass(slots=True)
class Batch:
    """One step's work. ``responses``: those with a path in this step; ``paths``: their
    paths that compute something, in row order; ``sampled``: the responses whose paths all
    reach their last position this step, so they get a token; ``copies``: copy-on-write
    block pairs to apply first."""

    is_prefill: bool
    paths: list[ResponsePath]
    sampled: list[Response]
    responses: list[Response]
    copies: list[tuple[int, int]] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(path.num_scheduled for path in self.paths)


class Scheduler:
    def __init__(self, config: EngineConfig, num_blocks: int, max_model_len: int) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.block_manager = BlockManager(num_blocks, config.block_size, prefix_caching=config.prefix_caching)
        self.waiting: deque[Response] = deque()
        self.running: list[Response] = []
        self.num_preemptions = 0

    def add(self, response: Response) -> None:
        self.waiting.append(response)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[Batch | None, list[Response]]:
        """The next batch (None when nothing can run) and the responses that failed to be
        admitted (finished with an error)."""
        failed: list[Response] = []
        batch = self._schedule_prefill(failed)
        if batch is None and self.running:
            batch = self._schedule_decode()
            if batch is None:  # every running response was preempted: readmit (or fail) the first
                batch = self._schedule_prefill(failed)
        return batch, failed

    # -- prefill ----------------------------------------------------------------------------
    def _schedule_prefill(self, failed: list[Response]) -> Batch | None:
        manager = self.block_manager
        budget = self.config.max_num_batched_tokens
        paths: list[ResponsePath] = []
        responses: list[Response] = []
        sampled: list[Response] = []
        while self.waiting and budget > 0 and len(self.running) + len(responses) < self.config.max_num_seqs:
            response = self.waiting[0]
            if not response.allocated:
                need = sum(manager.blocks_needed(path) for path in response.paths)
                if need > manager.num_free or not self._allocate(response):
                    if not self.running and not responses and need > len(manager.blocks):
                        self.waiting.popleft()
                        response.status, response.finish_reason = Status.FINISHED, "error"
                        response.error = (f"needs {need} KV blocks but the cache holds {len(manager.blocks)}: "
                                          "raise the KV cache size or lower max_model_len")
                        failed.append(response)
                        continue
                    break
            remaining = [path.remaining for path in response.paths]
            if sum(remaining) <= budget:
                counts, completes = remaining, True
            elif not responses:
                counts, completes = self._chunk(remaining, budget), False
            else:
                break
            for path, count in zip(response.paths, counts):
                if count:
                    path.num_scheduled = count
                    manager.register(path, path.compute_start + count)
                    paths.append(path)
            budget -= sum(counts)
            responses.append(response)
            if completes:
                self.waiting.popleft()
                sampled.append(response)
            else:
                break  # a chunked prompt takes the rest of the step
        if not paths:
            return None
        return Batch(True, paths, sampled, responses)

    def _allocate(self, response: Response) -> bool:
        """Allocate every path of ``response``, or none. The sum of the paths' ``blocks_needed``
        can fall short: one path's fresh blocks may evict a free cached block (and with it
        the cached chain after it) that the other path counted on, so each path is checked
        against what is left once the ones before it hold their blocks."""
        manager = self.block_manager
        done: list[ResponsePath] = []
        for path in response.paths:
            if manager.blocks_needed(path) > manager.num_free:
                for held in done:
                    manager.release(held)
                return False
            manager.allocate(path)
            done.append(path)
        response.allocated = True
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
        scheduled: list[Response] = []
        copies: list[tuple[int, int]] = []
        while queue:
            response = queue.popleft()
            while sum(manager.append_cost(path) for path in response.paths) > manager.num_free:
                victim = queue.pop() if queue else response
                self._preempt(victim)
                if victim is response:
                    break
            else:
                for path in response.paths:
                    manager.prepare_append(path, copies)
                    path.num_scheduled = 1
                    manager.register(path, len(path), len(path) - 1)
                scheduled.append(response)
        self.running = scheduled
        if not scheduled:
            return None
        paths = [path for response in scheduled for path in response.paths]
        return Batch(False, paths, list(scheduled), list(scheduled), copies)

    def _preempt(self, response: Response) -> None:
        for path in response.paths:
            self.block_manager.release(path)
            path.num_scheduled = 0
        response.allocated = False
        response.status = Status.WAITING
        self.waiting.appendleft(response)
        self.num_preemptions += 1

    # -- results ----------------------------------------------------------------------------
    def postprocess(self, batch: Batch, result: StepResult) -> list[Response]:
        """Record the step's tokens (entry i for ``batch.sampled[i]``); returns the responses
        that finished."""
        for path in batch.paths:
            path.num_computed = path.compute_start + path.num_scheduled
            path.num_scheduled = 0
        finished = []
        for i, response in enumerate(batch.sampled):
            token = result.tokens[i]
            response.output_ids.append(token)  # shared by both paths
            response.logprobs.append(result.logprobs[i])
            response.cond_logprobs.append(result.cond_logprobs[i])
            response.image_features = None  # in the cache now (pixels stay for a preempted rerun)
            reason = self._finish_reason(response, token)
            if reason is not None:
                response.status, response.finish_reason = Status.FINISHED, reason
                for path in response.paths:
                    self.block_manager.release(path)
                finished.append(response)
            elif response.status is not Status.RUNNING:
                response.status = Status.RUNNING
                self.running.append(response)
        if finished:
            done = {id(r) for r in finished}
            self.running = [r for r in self.running if id(r) not in done]
        return finished

    def _finish_reason(self, response: Response, token: int) -> str | None:
        if token in response.stop_ids:
            return "stop"
        if len(response.output_ids) >= response.max_new_tokens or len(response.cond) >= self.max_model_len:
            return "length"
        return None
