"""The world's parameters, fixed before any m1 was looked at (docs/world.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from judgefree.world.clip import ClipTrainSettings
from judgefree.world.seed import SeedSettings


@dataclass(frozen=True, slots=True)
class WorldConfig:
    image_size: int = 72
    train_scenes: int = 2000
    clip_scenes: int = 8000  # the CLIP's unbiased pretraining scenes (scenes.web_scenes)
    eval_scenes: int = 200
    cooccurrence: float = 0.9
    colour_prior: float = 0.8
    clip: ClipTrainSettings = field(default_factory=lambda: ClipTrainSettings(
        steps=1000, batch_size=64, learning_rate=1e-3, warmup=100, pretrain_steps=2500))
    seed_model: SeedSettings = field(default_factory=lambda: SeedSettings(hidden=96, layers=2, steps=1500,
                                                                          batch_size=32, learning_rate=3e-3,
                                                                          text_only=0.2))

    def key(self) -> str:
        """A short hash of every parameter and of the generator's code (world/version.py): the
        cache folder's name, so that neither a parameter nor a code change reuses an old world."""
        from judgefree.world import version

        payload = {"config": asdict(self), "generator": version.generator_fingerprint()}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]


# The CI test's world: fewer scenes and steps (the same code).
SMALL = WorldConfig(train_scenes=1500, clip_scenes=4000, eval_scenes=100,
                    clip=ClipTrainSettings(steps=300, batch_size=48, learning_rate=1e-3, warmup=30, pretrain_steps=2000),
                    seed_model=SeedSettings(hidden=64, layers=2, steps=1000, batch_size=24, learning_rate=3e-3,
                                            text_only=0.2))
