"""judgefree.generation: what to generate and where it goes.

``pairs`` plans two responses per image (seeds from image content, h drawn from an
``hdist.HDistribution``) and assembles the engine's completions into pairs; ``driver``
runs the engine over an image folder in chunks into a pair store, resumably.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "hdist": ("HDistribution",),
    "driver": ("GenerationSettings", "GenerationReport", "generate_store", "list_images"),
    "pairs": ("build_pair_requests", "assemble_pairs", "derive_seed"),
})
