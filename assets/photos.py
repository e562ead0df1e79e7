"""Real photos as image files: scikit-image's wheel bundles public-domain / CC0 photos."""

from __future__ import annotations

from pathlib import Path

DEMO_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "horse", "camera")


def write_photos(folder: str | Path, names: tuple[str, ...] = DEMO_PHOTOS, *, step: int = 1, rgb: bool = True,
                 suffixes: tuple[str, ...] = (".png",)) -> list[Path]:
    """Save ``skimage.data.<name>()`` for each name as ``folder/NN_name.suffix`` (sorted name
    order = list order); every ``step``-th pixel, converted to RGB when ``rgb`` (else a
    grey photo stays grey), suffixes taken in turn. Returns the paths."""
    import skimage.data
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        image = Image.fromarray(getattr(skimage.data, name)()[::step, ::step])
        path = folder / f"{i:02d}_{name}{suffixes[i % len(suffixes)]}"
        (image.convert("RGB") if rgb else image).save(path)
        paths.append(path)
    return paths
