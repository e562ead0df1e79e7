"""A duck-typed stand-in for ``judgefree.engine.Engine`` (issue 4's contract) for driver tests.

Like the real engine, every response is a pure function of (seed, image content hash, role),
so the pairs do not depend on how the images were chunked; unreadable images give a Pair whose
completions carry ``error`` and finish_reason "error".
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

from PIL import Image

from judgefree.generation.hdist import HDistribution
from judgefree.engine.types import Completion, Pair

WORDS = ("a cat sits on the red mat near two small dogs while a man in a blue coat reads "
         "an old book under the tall green tree beside the wooden bench e.g. at noon").split()


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    @classmethod
    def from_pretrained(cls, path: str, dtype: str = "auto", device: str = "cpu") -> FakeEngine:
        engine = cls()
        engine.loaded_from = (path, dtype, device)
        return engine

    def generate_pairs(self, images, prompt, *, h_chosen="fixed:0", h_rejected="gaussian:0.5,0.15",
                       sampling=None, max_new_tokens=256, seed=0) -> list[Pair]:
        self.calls.append([str(i) for i in images])
        return [self._pair(str(image), prompt, h_chosen, h_rejected, max_new_tokens, seed) for image in images]

    def generate(self, requests) -> list[Completion]:
        """Plain responses (``eval run``): a pure function of the prompt, the image's pixels and the seed."""
        self.calls.append([str(r.request_id) for r in requests])
        out = []
        for r in requests:
            pixels = r.image.tobytes() if hasattr(r.image, "tobytes") else str(r.image).encode()
            key = hashlib.sha256(pixels + f"/{r.prompt}/{r.seed}".encode()).hexdigest()
            rng = random.Random(int(key[:8], 16))
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            out.append(Completion(r.request_id, r.prompt, [rng.randrange(32000) for _ in words],
                                  " ".join(words).capitalize() + ".", r.h, "stop", [], []))
        return out

    def _pair(self, image, prompt, h_chosen, h_rejected, max_new_tokens, seed) -> Pair:
        try:
            data = Path(image).read_bytes()
            Image.open(io.BytesIO(data)).load()
        except Exception as err:  # noqa: BLE001 - any failure to read is reported, as the engine does
            bad = [Completion(f"{image}/{role}", prompt, [], "", 0.0, "error", [], [], error=f"cannot read image: {err}")
                   for role in ("chosen", "rejected")]
            return Pair(image, None, prompt, bad[0], bad[1])
        image_hash = hashlib.sha256(data).hexdigest()[:16]
        prompt_ids = [1] + [ord(c) % 97 for c in prompt]
        chosen = self._completion(image, image_hash, prompt, prompt_ids, "chosen", h_chosen, max_new_tokens, seed)
        rejected = self._completion(image, image_hash, prompt, prompt_ids, "rejected", h_rejected, max_new_tokens, seed)
        return Pair(image, image_hash, prompt, chosen, rejected)

    @staticmethod
    def _completion(image, image_hash, prompt, prompt_ids, role, h_spec, max_new_tokens, seed) -> Completion:
        role_seed = int(hashlib.sha256(f"{seed}/{image_hash}/{role}".encode()).hexdigest()[:8], 16)
        rng = random.Random(role_seed)
        sentences = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            sentences.append(" ".join(words).capitalize() + ".")
        text = " ".join(sentences)
        n = min(max_new_tokens, len(text.split()))
        return Completion(
            request_id=f"{image_hash}/{role}", prompt=prompt, token_ids=[rng.randrange(32000) for _ in range(n)],
            text=text, h=HDistribution.parse(h_spec).sample(role_seed), finish_reason="stop",
            cond_logprobs=[-rng.random() * 5 for _ in range(n)], logprobs=[-rng.random() * 5 for _ in range(n)],
            seed=role_seed, image_hash=image_hash, prompt_token_ids=list(prompt_ids),
        )
