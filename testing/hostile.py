"""Image files an adversarial user puts into an image folder, for the fault tests: a
decompression bomb, 16-bit PNGs, a name that is not UTF-8, a symlink loop, a FIFO, a folder
with an image suffix."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path: Path, pixels: np.ndarray, *, bit_depth: int, color_type: int,
              size: tuple[int, int] | None = None) -> Path:
    """A PNG written byte by byte (PIL cannot write 16-bit RGB). ``pixels`` HxW or HxWxC of
    unsigned ints; ``size`` (width, height) overrides the header's size (a bomb's header
    claims a size its data does not have)."""
    height, width = pixels.shape[:2]
    width, height = size or (width, height)
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows))
                     + _chunk(b"IEND", b""))
    return path


def write_bomb(path: Path, side: int = 14000) -> Path:
    """A small file whose header claims side x side pixels: PIL's DecompressionBombError."""
    return write_png(path, np.zeros((1, 1), np.uint8), bit_depth=8, color_type=0, size=(side, side))


def sixteen_bit_twin(photo: np.ndarray) -> np.ndarray:
    """The 16-bit version of an 8-bit picture that scales back to it exactly (v -> 257 v)."""
    return photo.astype(np.uint16) * 257


def non_utf8_name(folder: Path, stem: bytes = b"caf\xe9", suffix: str = ".png") -> str:
    """A path in ``folder`` whose file name is not valid UTF-8 (as Python sees it: surrogates)."""
    return os.fsdecode(os.fsencode(folder) + b"/" + stem + suffix.encode())


def symlink_loop(path: Path) -> Path:
    os.symlink(path.name, path)  # points at itself
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)  # reading it would block for ever
    return path
