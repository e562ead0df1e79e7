"""The world CLIP's image tower, first pretrained by supervised recognition on unbiased scenes,
then trained contrastively with its text tower (world/clip.py).

Real CLIP towers learn to see from hundreds of millions of pairs; this one gets a few thousand
scenes and two minutes of CPU. Measured here (docs/world.md), contrastive training alone left a
tower whose patch features told the classes apart poorly (an MLP probe's class F1 about 0.5 on
held-out scenes), and the seed built on it was blind. Multi-label recognition (which classes
and which class-colour pairs a scene holds; a binary cross-entropy per label) reached F1 0.93
in the same kind of budget, as image towers pretrained on labelled images (LiT, Zhai et al.,
2022) start contrastive training from what they already see. The recognition head is dropped
afterwards; only the tower's weights go on.
"""

from __future__ import annotations

import time

import numpy as np

from judgefree.world.scenes import CLASS_NAMES, COLOUR_NAMES, Scene


def labels(scenes: list[Scene]):
    """[N, classes + classes x colours] presence targets."""
    import torch

    y = torch.zeros(len(scenes), len(CLASS_NAMES) * (1 + len(COLOUR_NAMES)))
    for row, scene in enumerate(scenes):
        for obj in scene.objects:
            c = CLASS_NAMES.index(obj.cls)
            y[row, c] = 1.0
            y[row, len(CLASS_NAMES) + c * len(COLOUR_NAMES) + COLOUR_NAMES.index(obj.colour)] = 1.0
    return y


def pretrain_visual(visual, pixels, scenes: list[Scene], steps: int, batch_size: int = 32,
                    learning_rate: float = 1e-3, seed: int = 0, log=print) -> dict:
    """Train open_clip's ``visual`` (in place) to recognise the scenes' objects from its last
    layer's tokens, through a small attention-pooling head that is then thrown away."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    width = visual.conv1.out_channels
    targets = labels(scenes)
    head = _head(width, targets.shape[1])
    params = [*visual.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    rng = np.random.default_rng([seed, 0x9E7])
    start, losses = time.perf_counter(), []
    visual.train()
    for step in range(steps):
        idx = torch.as_tensor(rng.choice(len(scenes), size=batch_size, replace=False))
        tokens = visual.transformer(visual._embeds(pixels[idx]))
        loss = F.binary_cross_entropy_with_logits(head(tokens), targets[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 500 == 0:
            log(f"  tower pretraining step {step + 1}/{steps}: loss {np.mean(losses[-500:]):.4f}")
    return {"steps": steps, "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "seconds": round(time.perf_counter() - start, 1)}


def _head(width: int, outputs: int, hidden: int = 96, queries: int = 4):
    """Four learned queries attend over the patch tokens; their pooled features give the label logits."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU())
            self.queries = torch.nn.Parameter(torch.randn(queries, hidden) * 0.02)
            self.out = torch.nn.Linear(hidden * queries, outputs)

        def forward(self, tokens):
            z = self.inp(tokens[:, 1:])  # patch tokens, as the seed LLaVA reads them
            attention = torch.softmax(torch.einsum("btd,qd->bqt", z, self.queries), dim=-1)
            return self.out(torch.einsum("bqt,btd->bqd", attention, z).flatten(1))

    return Head()
