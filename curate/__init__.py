"""judgefree.curate: lightweight verification of generated pairs.

``clip_score`` scores each response sentence by sentence (``sentences``) with an open_clip
model; ``selection`` swaps, splits and keeps; ``curation`` drives it over a pair store
(resumable) and ``histogram`` draws the score differences.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "clip_score": ("ClipConfig", "ClipScorer"),
    "selection": ("Selection",),
    "curation": ("curate_store",),
})
