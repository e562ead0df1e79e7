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

    Raises ValueError (naming the image) when it cannot be read or decoded, is larger than
    PIL's decompression-bomb limit, or has pixels whose range is unknown (``to_rgb``).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return to_rgb(image, "the image")
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as handle:
                return to_rgb(handle, image)
        except FileNotFoundError:
            raise ValueError(f"image not found: {image}") from None
        except Image.DecompressionBombError as err:
            raise ValueError(f"image too large {image}: {err}") from None
        except UnsupportedPixels:
            raise
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


def decode_image(data: bytes, name: str):
    """``load_image`` for a file's bytes already in memory (``name`` goes into the errors)."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as handle:
            return to_rgb(handle, name)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large {name}: {err}") from None
    except (OSError, SyntaxError) as err:  # PIL's messages name the in-memory buffer: say what failed
        raise ValueError(f"unreadable image {name} ({type(err).__name__})") from None


class UnsupportedPixels(ValueError):
    """Pixels that cannot be turned into 8-bit RGB without guessing."""


# 16-bit grey (PNG, TIFF): PIL's convert("RGB") clips every value above 255 to white.
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def to_rgb(picture, name: Any):
    """``picture`` as 8-bit RGB, high bit depths scaled (not clipped) to 0..255. 16-bit grey
    (``I;16*``, and ``I`` from a PNG, which only holds 16-bit grey in that mode) scales by
    255/65535; 32-bit integer or float pixels of other formats have no range to scale from,
    so they are refused rather than guessed."""
    mode = picture.mode
    if mode in _SIXTEEN_BIT or (mode == "I" and picture.format == "PNG"):
        import numpy as np
        from PIL import Image

        wide = np.asarray(picture).astype(np.uint32)
        eight = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # rounded: 257 * v -> v exactly
        return Image.fromarray(eight, "L").convert("RGB")
    if mode in ("I", "F"):
        raise UnsupportedPixels(f"unsupported image {name}: {'32-bit integer' if mode == 'I' else 'floating-point'} "
                         "pixels have no known range to scale to 8 bits")
    return picture.convert("RGB")


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


def file_problem(path: str) -> str | None:
    """Why the image file at ``path`` cannot be used before even opening it, or None: a name
    that is not valid UTF-8 (no record, manifest or listing could hold it faithfully), a missing
    file, a symlink loop, something that is not a regular file (a folder, a FIFO that would
    block the read, a device)."""
    import errno
    import stat

    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8 (rename the file)"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symlink loop"
        return f"unreadable: {err.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return None
