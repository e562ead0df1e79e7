"""Reading images and hashing their content.

The content hash names an image independently of how it was passed (a path, a PIL image,
an array): it salts the KV prefix hashes of image tokens (two prompts with the same text
but different pictures must never share blocks) and seeds the responses of a pair.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any


def load_image(image: Any):
    """A PIL RGB image from a path, a PIL image, or an HxWx3 uint8 array.

    Raises ValueError (naming the image) when it cannot be read or decoded.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as handle:
                return handle.convert("RGB")
        except FileNotFoundError:
            raise ValueError(f"image not found: {image}") from None
        except (OSError, SyntaxError, ValueError) as err:  # PIL's decode errors
            raise ValueError(f"unreadable image {image}: {err}") from None
    try:
        import numpy as np

        array = np.asarray(image)
    except Exception:  # noqa: BLE001 - anything numpy cannot take is simply not an image
        array = None
    if array is not None and array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8:
        return Image.fromarray(array, "RGB")
    raise ValueError(
        f"image must be a path, a PIL image or an HxWx3 uint8 array, got {type(image).__name__}"
    )


def image_content_hash(image) -> str:
    """sha256 (hex) of a PIL image's RGB pixels and size: the same picture hashes the same
    whatever file format or container it came in."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"RGB{rgb.size[0]}x{rgb.size[1]}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def describe_image(image: Any) -> str | None:
    """The path of an image given by path (for records), else None."""
    return os.fspath(image) if isinstance(image, (str, os.PathLike)) else None
