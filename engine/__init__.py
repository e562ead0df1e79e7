"""judgefree.engine: the two-path generation engine.

``Engine`` (engine.py) is the public entry point; ``types`` holds the records every stage
reads (Request, Completion, Pair, SamplingParams). ``Engine`` and ``EngineConfig`` are
imported lazily so that reading the types does not import torch.
"""

from judgefree.engine.types import Completion, Pair, Request, SamplingParams

__all__ = ["Engine", "EngineConfig", "Completion", "Pair", "Request", "SamplingParams"]


def __getattr__(name: str):
    if name == "Engine":
        from judgefree.engine.engine import Engine

        return Engine
    if name == "EngineConfig":
        from judgefree.engine.config import EngineConfig

        return EngineConfig
    raise AttributeError(f"module 'judgefree.engine' has no attribute {name!r}")
