"""judgefree.curate: lightweight verification of generated pairs.

``clip_score`` scores each response sentence by sentence (``sentences``) with an open_clip
model; ``selection`` swaps, splits and keeps; ``curation`` drives it over a pair store
(resumable) and ``histogram`` draws the score differences.
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "ClipConfig": "clip_score",
    "ClipScorer": "clip_score",
    "Selection": "selection",
    "curate_store": "curation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
