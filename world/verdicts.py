"""How right the pair's two verdicts are against exact truth: the h order (the lower-h response
as chosen) and CLIP's (the higher-scoring one), which the paper could not measure.

A response's truth cost is its hallucinated object mentions plus its wrong colours; of two
responses the lower cost is truly better; equal costs are ties and count in neither direction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from judgefree.world.metric import score
from judgefree.world.scenes import Scene


def cost(text: str, scene: Scene) -> int:
    s = score(text, scene)
    return s.hallucinated + s.wrong_colour


@dataclass(slots=True)
class Verdicts:
    pairs: int
    ties: int  # equal truth cost: no verdict can be right or wrong
    h_order_right: int  # of the non-ties, the lower-h response is truly better
    clip_right: int  # of the non-ties, CLIP's preferred response is truly better
    swaps: int
    swaps_right: int  # swapped, and the higher-h response was truly better
    swaps_wrong: int  # swapped, and the lower-h response was truly better

    @property
    def decided(self) -> int:
        return self.pairs - self.ties

    def to_json(self) -> dict:
        d = asdict(self)
        d["h_order_accuracy"] = self.h_order_right / self.decided if self.decided else None
        d["clip_accuracy"] = self.clip_right / self.decided if self.decided else None
        d["swap_rate"] = self.swaps / self.pairs if self.pairs else None
        return d


def judge(records, scene_of) -> Verdicts:
    """``records``: curated PairRecords; ``scene_of(image path) -> Scene``."""
    pairs = ties = h_right = clip_right = swaps = swaps_right = swaps_wrong = 0
    for r in records:
        if r.chosen_score is None or r.rejected_score is None:
            continue
        scene = scene_of(r.image)
        pairs += 1
        # after curation "chosen" is CLIP's preference; the h order is the lower-h text
        clip_cost, other_cost = cost(r.chosen_text, scene), cost(r.rejected_text, scene)
        low_h_cost, high_h_cost = (other_cost, clip_cost) if r.swapped else (clip_cost, other_cost)
        swaps += bool(r.swapped)
        if clip_cost == other_cost:
            ties += 1
            continue
        h_right += low_h_cost < high_h_cost
        clip_right += clip_cost < other_cost
        if r.swapped:
            swaps_right += high_h_cost < low_h_cost
            swaps_wrong += low_h_cost < high_h_cost
    return Verdicts(pairs, ties, h_right, clip_right, swaps, swaps_right, swaps_wrong)
