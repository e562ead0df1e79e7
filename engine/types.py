"""Public data types of the generation engine: what goes in (Request) and what comes out
(Completion, Pair). Plain dataclasses so every stage (curation, training, evaluation) can
read them without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FinishReason = Literal["stop", "length", "error"]


@dataclass(slots=True)
class SamplingParams:
    """How each token is picked (see ``judgefree.kernels.mix_sample``).

    ``temperature=0`` is greedy. ``mode="mix"`` mixes the two paths in probability space
    with weight h (the paper); ``mode="contrast"`` is VCD-style contrastive decoding with
    strength ``alpha`` and plausibility cut-off ``beta``.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    mode: Literal["mix", "contrast"] = "mix"
    alpha: float = 1.0
    beta: float = 0.1
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        # The engine's only check of these: its sampling step runs mix_sample unvalidated.
        for name in ("temperature", "top_p", "alpha", "beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k must be an integer, got {self.top_k!r}")
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be finite and >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.mode not in ("mix", "contrast"):
            raise ValueError(f"mode must be 'mix' or 'contrast', got {self.mode!r}")
        if not 0.0 < self.beta <= 1.0:
            raise ValueError(f"beta must lie in (0, 1], got {self.beta}")
        if not 0 <= self.alpha < math.inf:
            raise ValueError(f"alpha must be finite and >= 0, got {self.alpha}")


@dataclass(slots=True)
class Request:
    """One response to generate.

    ``image`` (a path or a PIL image) is what only the conditional path sees; for text
    models ``context`` plays that role (conditional prompt = context + prompt,
    unconditional = prompt alone). ``h`` in [0, 1] is the unconditional path's weight for the
    whole response (the pair planner, ``judgefree.generation``, draws it from a distribution).
    """

    prompt: str
    image: Any = None
    context: str | None = None
    h: float = 0.0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int = 0
    max_new_tokens: int = 256
    request_id: str | None = None


@dataclass(slots=True)
class Completion:
    """One generated response.

    ``cond_logprobs[i]`` is log p_cond(token_ids[i]) under the seed model at temperature 1
    (the DPO reference log-prob); ``logprobs[i]`` is the log-probability under the
    distribution the token was actually drawn from. ``prompt_token_ids`` are the ids of the
    conditional prompt exactly as the engine fed them (chat template applied, image
    placeholder tokens expanded), so a trainer scores the very same sequence. ``error`` is
    set (and ``finish_reason == "error"``) when this request failed; the others still finish.
    """

    request_id: str
    prompt: str
    token_ids: list[int]
    text: str
    h: float
    finish_reason: FinishReason
    cond_logprobs: list[float]
    logprobs: list[float]
    seed: int = 0
    image_hash: str | None = None
    prompt_token_ids: list[int] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class Pair:
    """Two responses to the same image and prompt; ``chosen`` is the lower-h one."""

    image: str | Path | None
    image_hash: str | None
    prompt: str
    chosen: Completion
    rejected: Completion
