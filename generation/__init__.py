"""judgefree.generation: what to generate and where it goes.

``pairs`` plans two responses per image (seeds from image content, h drawn from an
``hdist.HDistribution``) and assembles the engine's completions into pairs; ``driver``
runs the engine over an image folder in chunks into a pair store, resumably.
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "HDistribution": "hdist",
    "GenerationSettings": "driver",
    "GenerationReport": "driver",
    "generate_store": "driver",
    "list_images": "driver",
    "build_pair_requests": "pairs",
    "assemble_pairs": "pairs",
    "derive_seed": "pairs",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
