"""Fixtures for the curation tests (curate_helpers.py holds the material, shared with tests/cli)."""

from __future__ import annotations

import pytest
from curate_helpers import write_corrupt_image, write_photos, write_tiny_clip


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """Real photos as files, read-only by convention (tests copy before changing anything)."""
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    return folder


@pytest.fixture
def photos_with_corrupt(tmp_path, photo_dir):
    """A folder with the photos plus one corrupt image file in the middle of the order."""
    import shutil

    folder = tmp_path / "images"
    shutil.copytree(photo_dir, folder)
    write_corrupt_image(folder / "03_broken.png")
    return folder


@pytest.fixture(scope="session")
def tiny_clip_files(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_scorer(tiny_clip_files):
    from judgefree.curate.clip_score import ClipConfig, ClipScorer

    config, weights = tiny_clip_files
    return ClipScorer.load(ClipConfig(model=str(config), weights=str(weights), device="cpu", text_batch=7, image_batch=2))
