"""The world's cache key follows its generator's code (world/version.py): an edit of any module
that builds a world gives a new key, so a world cached by older code is never reused; the
modules that only read built worlds do not count; every module of the package is classed."""

from __future__ import annotations

import shutil

import pytest

import judgefree.world.build as world_build
from judgefree.world import version
from judgefree.world.build import current_cache_names, world_folder
from judgefree.world.config import SMALL, WorldConfig


@pytest.fixture
def world_copy(tmp_path, monkeypatch):
    """The world package's sources copied to tmp and read by the fingerprint from there."""
    copy = tmp_path / "world-src"
    shutil.copytree(version.WORLD_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(version, "WORLD_DIR", copy)
    return copy


def test_every_module_of_the_world_package_is_classed():
    on_disk = {path.stem for path in version.WORLD_DIR.glob("*.py")}
    generator, other = set(version.GENERATOR_MODULES), set(version.OTHER_MODULES)
    assert on_disk == generator | other, "class the new module in world/version.py"
    assert not generator & other


def test_an_edit_of_any_generator_module_changes_the_key_and_a_reader_does_not(world_copy):
    original_key = WorldConfig().key()
    original = version.generator_fingerprint()
    assert len(original) == 64
    for name in version.GENERATOR_MODULES:
        path = world_copy / f"{name}.py"
        source = path.read_bytes()
        path.write_bytes(source + b"\n")  # even a blank line: the bytes are hashed
        assert version.generator_fingerprint() != original, name
        assert WorldConfig().key() != original_key, name
        path.write_bytes(source)
    assert version.generator_fingerprint() == original and WorldConfig().key() == original_key
    (world_copy / "verdicts.py").write_text("# reads built worlds only\n")
    assert WorldConfig().key() == original_key


def test_the_hand_revision_changes_the_key(monkeypatch):
    before = WorldConfig().key(), SMALL.key()
    monkeypatch.setattr(version, "REVISION", version.REVISION + 1)
    after = WorldConfig().key(), SMALL.key()
    assert after[0] != before[0] and after[1] != before[1] and len(set(after)) == 2


def test_a_world_cached_by_older_generator_code_is_not_reused(world_copy, tmp_path, monkeypatch):
    builds = []

    def build(tmp, config, log):  # the real build takes minutes; what is built does not matter here
        builds.append(tmp)
        (tmp / "build.json").write_text("{}")

    monkeypatch.setattr(world_build, "build", build)
    root = tmp_path / "cache"
    old = world_folder(SMALL, root, log=lambda line: None)
    assert world_folder(SMALL, root, log=lambda line: None) == old and len(builds) == 1  # cached
    scenes = world_copy / "scenes.py"
    scenes.write_text(scenes.read_text().replace("GRID = 3", "GRID = 4", 1))  # the generator changed
    new = world_folder(SMALL, root, log=lambda line: None)
    assert len(builds) == 2 and new != old and new.parent == old.parent
    assert new.name in current_cache_names() and old.name not in current_cache_names()  # prune removes the old
