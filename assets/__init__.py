"""judgefree.assets: things built on this machine for tests, benchmarks and demos.

``checkpoints`` writes small random LLaVA / Llama checkpoints in Hugging Face layout,
``smollm`` converts the real SmolLM2-135M once, ``photos`` writes scikit-image's photos as
files, ``clip`` writes a small random open_clip model, ``cache`` builds each of them at most
once per machine.
"""

from judgefree._lazy import lazy_exports

_EXPORTS = {
    "build_tiny_llama": "checkpoints",
    "build_tiny_llava": "checkpoints",
    "demo_llava_path": "checkpoints",
    "smollm2_path": "smollm",
    "write_photos": "photos",
    "write_tiny_clip": "clip",
    "cached_folder": "cache",
    "default_cache_dir": "cache",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
