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
    kept: int = 0  # kept for DPO (any curation mode)
    kept_ties: int = 0
    kept_right: int = 0  # of the kept non-ties, "chosen" (what DPO will prefer) is truly better

    @property
    def decided(self) -> int:
        return self.pairs - self.ties

    def to_json(self) -> dict:
        d = asdict(self)
        d["h_order_accuracy"] = self.h_order_right / self.decided if self.decided else None
        d["clip_accuracy"] = self.clip_right / self.decided if self.decided else None
        d["swap_rate"] = self.swaps / self.pairs if self.pairs else None
        kept_decided = self.kept - self.kept_ties
        d["kept_accuracy"] = self.kept_right / kept_decided if kept_decided else None
        return d


def judge(records, scene_of) -> Verdicts:
    """``records``: curated PairRecords; ``scene_of(image path) -> Scene``.

    CLIP's preference is read from the scores and the h order from the h values, so the
    verdicts mean the same whatever the curation did with disagreements (swap, drop, ignore)."""
    v = Verdicts(0, 0, 0, 0, 0, 0, 0)
    for r in records:
        if r.chosen_score is None or r.rejected_score is None:
            continue
        scene = scene_of(r.image)
        v.pairs += 1
        chosen_cost, rejected_cost = cost(r.chosen_text, scene), cost(r.rejected_text, scene)
        clip_cost, clip_other = ((chosen_cost, rejected_cost) if r.chosen_score >= r.rejected_score
                                 else (rejected_cost, chosen_cost))
        low_h_cost, high_h_cost = ((chosen_cost, rejected_cost) if r.chosen_h <= r.rejected_h
                                   else (rejected_cost, chosen_cost))
        v.swaps += bool(r.swapped)
        v.kept += bool(r.kept)
        if chosen_cost == rejected_cost:
            v.ties += 1
            v.kept_ties += bool(r.kept)
            continue
        v.h_order_right += low_h_cost < high_h_cost
        v.clip_right += clip_cost < clip_other
        v.kept_right += bool(r.kept) and chosen_cost < rejected_cost
        if r.swapped:
            v.swaps_right += high_h_cost < low_h_cost
            v.swaps_wrong += low_h_cost < high_h_cost
    return v
