"""What the scheduler moves around: a ``Response`` and its paths (``ResponsePath``).

A response with h > 0 has two paths that decode in lockstep: the conditional one (image +
instruction) and the unconditional one (instruction only). Both append the same sampled
token, so they share one ``output_ids`` list; each has its own prompt, positions and KV blocks.
``StepResult`` is what one step of the model runner gives the scheduler back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any, NamedTuple

from judgefree.engine.types import FinishReason, SamplingParams


class Status(Enum):
    WAITING = auto()  # not yet (or no longer, after preemption) holding a complete prefill
    RUNNING = auto()  # decoding
    FINISHED = auto()


@dataclass(slots=True, eq=False)
class ResponsePath:
    """One path's tokens and KV-cache state.

    ``num_computed``: tokens whose K/V are in the cache. ``num_scheduled``: tokens the current
    step computes (starting at ``compute_start``). ``last_row``: this step's batch row that
    holds the path's last computed position (set when the batch is prepared). ``block_keys``:
    prefix hashes of the full blocks, cached because full blocks never change.
    """

    prompt_ids: list[int]
    output_ids: list[int]
    image_hash: str | None = None
    image_span: tuple[int, int] | None = None  # [start, end) positions of image tokens
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_scheduled: int = 0
    last_row: int = -1
    block_keys: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def compute_start(self) -> int:
        """First position computed this step: the next uncomputed one, or the last token
        (whose K/V may already be cached, e.g. a shared prompt) when all are cached, since
        its logits are what the next token is drawn from."""
        return min(self.num_computed, len(self) - 1)

    @property
    def remaining(self) -> int:
        """Positions still to compute before this path can yield next-token logits."""
        return len(self) - self.compute_start

    def tokens(self, start: int, end: int) -> list[int]:
        """Token ids at positions [start, end)."""
        n_prompt = len(self.prompt_ids)
        if end <= n_prompt:
            return self.prompt_ids[start:end]
        if start >= n_prompt:
            return self.output_ids[start - n_prompt:end - n_prompt]
        return self.prompt_ids[start:] + self.output_ids[: end - n_prompt]

    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.prompt_ids[-1]

    def touches_image(self, start: int, end: int) -> bool:
        span = self.image_span
        return span is not None and start < span[1] and span[0] < end


@dataclass(slots=True, eq=False)
class Response:
    """One response being generated: its paths, sampling settings and what it has produced."""

    index: int  # position in the caller's request list
    cond: ResponsePath
    uncond: ResponsePath | None
    h: float
    seed: int
    sampling: SamplingParams
    max_new_tokens: int
    stop_ids: frozenset[int]
    pixel_values: Any = None  # the processed image until its features are computed
    image_features: Any = None  # kept while the image tokens are being prefilled
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    cond_logprobs: list[float] = field(default_factory=list)
    status: Status = Status.WAITING
    allocated: bool = False
    finish_reason: FinishReason | None = None
    error: str | None = None

    @property
    def paths(self) -> list[ResponsePath]:
        return [self.cond] if self.uncond is None else [self.cond, self.uncond]

    @property
    def step(self) -> int:
        """Index of the token to be sampled next (its seed stream position)."""
        return len(self.output_ids)


class StepResult(NamedTuple):
    """One step's tokens, entry i for ``batch.sampled[i]``: the token, its log-prob under the
    distribution it was drawn from, and log p_cond(token) (the DPO reference)."""

    tokens: list[int]
    logprobs: list[float]
    cond_logprobs: list[float]
