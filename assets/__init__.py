"""judgefree.assets: things built on this machine for tests, benchmarks and demos.

``checkpoints`` writes small random LLaVA / Llama checkpoints in Hugging Face layout,
``smollm`` converts the real SmolLM2-135M once, ``photos`` writes scikit-image's photos as
files, ``clip`` writes a small random open_clip model, ``cache`` builds each of them at most
once per machine.
"""

from judgefree._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "checkpoints": ("build_tiny_llama", "build_tiny_llava", "demo_llava_path"),
    "smollm": ("smollm2_path",),
    "photos": ("write_photos",),
    "clip": ("write_tiny_clip",),
    "cache": ("cached_folder", "default_cache_dir"),
})
