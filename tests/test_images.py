"""Image reading (judgefree/images.py): high bit depths scaled, not clipped; decompression
bombs, unknown pixel ranges and unusable files refused with the reason."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from judgefree.images import decode_image, file_problem, load_image
from judgefree.testing.hostile import fifo, non_utf8_name, sixteen_bit_twin, symlink_loop, write_bomb, write_png


@pytest.fixture
def grey(photos):
    return photos[3][..., 0].copy()  # scikit-image's camera, 8-bit grey


def test_sixteen_bit_grey_png_scales_to_its_eight_bit_twin(tmp_path, grey, fresh_seed):
    Image.fromarray(sixteen_bit_twin(grey)).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode == "I;16"  # what PIL's convert("RGB") clips to nearly all white
    Image.fromarray(grey).save(tmp_path / "g8.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g16.png")), np.asarray(load_image(tmp_path / "g8.png")))
    # values between the exact ones round to the nearest 8-bit level
    wide = np.random.default_rng(fresh_seed).integers(0, 65536, size=(17, 23), dtype=np.uint16)
    wide[0, :3] = (0, 65535, 128)
    Image.fromarray(wide).save(tmp_path / "noise.png")
    got = np.asarray(load_image(str(tmp_path / "noise.png")))
    assert np.array_equal(got[..., 0], np.rint(wide / 257.0).astype(np.uint8))
    assert np.array_equal(got[..., 0], got[..., 2])
    data = (tmp_path / "noise.png").read_bytes()
    assert np.array_equal(np.asarray(decode_image(data, "noise.png")), got)  # bytes decode the same


def test_sixteen_bit_grey_tiff_and_rgb_png_are_scaled(tmp_path, photos, grey):
    Image.fromarray(sixteen_bit_twin(grey)).save(tmp_path / "g16.tif")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g16.tif"))[..., 1], grey)
    photo = photos[0]
    write_png(tmp_path / "rgb16.png", sixteen_bit_twin(photo), bit_depth=16, color_type=2)
    assert np.array_equal(np.asarray(load_image(tmp_path / "rgb16.png")), photo)


def test_float_pixels_are_refused_not_guessed(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match="floating-point pixels have no known range"):
        load_image(tmp_path / "f.tif")


def test_a_decompression_bomb_is_a_clear_error(tmp_path):
    bomb = write_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200
    with pytest.raises(ValueError, match=r"image too large .*bomb.png.*196000000 pixels"):
        load_image(bomb)
    with pytest.raises(ValueError, match="image too large"):
        decode_image(bomb.read_bytes(), "bomb.png")


def test_file_problems_name_their_reason(tmp_path, photo_dir):
    good = next(photo_dir.iterdir())
    odd = non_utf8_name(tmp_path)
    shutil.copy(good, odd)
    (tmp_path / "folder.png").mkdir()
    cases = {
        str(good): None,
        odd: "file name is not valid UTF-8 (rename the file)",
        str(symlink_loop(tmp_path / "loop.png")): "symlink loop",
        str(fifo(tmp_path / "pipe.png")): "not a regular file",
        str(tmp_path / "folder.png"): "not a regular file",
        str(tmp_path / "gone.png"): "file not found",
    }
    assert {path: file_problem(path) for path in cases} == cases
    os.symlink(good, tmp_path / "link.png")
    assert file_problem(str(tmp_path / "link.png")) is None  # a link to a real image is fine
