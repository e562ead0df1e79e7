"""Hallucination-ratio distributions: ``fixed:H``, ``uniform:LO,HI``, ``gaussian:MU,SIGMA``.

The paper draws one h per response; draws are clipped to [0, 1] and recorded with the
response. A draw is a pure function of (distribution, seed), so a resumed run redraws the
same h for the same response.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

KINDS = ("fixed", "uniform", "gaussian")


@dataclass(frozen=True, slots=True)
class HDistribution:
    kind: str
    params: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str | float | int | HDistribution) -> HDistribution:
        """Parse ``"fixed:0.1"``, ``"uniform:0,1"``, ``"gaussian:0.5,0.15"`` or a number."""
        if isinstance(spec, HDistribution):
            return spec
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            return cls._checked("fixed", (float(spec),), str(spec))
        if not isinstance(spec, str):
            raise ValueError(f"h distribution must be a string or a number, got {type(spec).__name__}")
        kind, sep, rest = spec.strip().partition(":")
        kind = kind.strip().lower()
        if not sep and kind not in KINDS:
            try:  # a bare number means fixed
                return cls._checked("fixed", (float(kind),), spec)
            except ValueError:
                pass
        if kind not in KINDS:
            raise ValueError(
                f"bad h distribution {spec!r}: kind must be one of {', '.join(KINDS)} "
                "(e.g. 'fixed:0.1', 'uniform:0,1', 'gaussian:0.5,0.15')"
            )
        try:
            params = tuple(float(p) for p in rest.split(",")) if rest.strip() else ()
        except ValueError:
            raise ValueError(f"bad h distribution {spec!r}: parameters must be numbers") from None
        return cls._checked(kind, params, spec)

    @classmethod
    def _checked(cls, kind: str, params: tuple[float, ...], spec: str) -> HDistribution:
        want = {"fixed": 1, "uniform": 2, "gaussian": 2}[kind]
        if len(params) != want:
            raise ValueError(f"bad h distribution {spec!r}: {kind} takes {want} parameter(s)")
        if any(not math.isfinite(p) for p in params):
            raise ValueError(f"bad h distribution {spec!r}: parameters must be finite")
        if kind == "fixed" and not 0.0 <= params[0] <= 1.0:
            raise ValueError(f"bad h distribution {spec!r}: fixed h must lie in [0, 1]")
        if kind == "uniform" and not params[0] <= params[1]:
            raise ValueError(f"bad h distribution {spec!r}: uniform needs LO <= HI")
        if kind == "gaussian" and params[1] < 0:
            raise ValueError(f"bad h distribution {spec!r}: sigma must be >= 0")
        return cls(kind, params)

    def sample(self, seed: int) -> float:
        """One draw, clipped to [0, 1]; deterministic in ``seed``."""
        if self.kind == "fixed":
            return self.params[0]
        rng = random.Random(seed)
        if self.kind == "uniform":
            value = rng.uniform(*self.params)
        else:
            value = rng.gauss(*self.params)
        return min(1.0, max(0.0, value))

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"
