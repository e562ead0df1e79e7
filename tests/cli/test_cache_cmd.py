"""``judgefree cache list / prune`` on a cache folder built in tmp: stale worlds and leftovers of
killed builds go, current worlds and other assets stay, a folder being built is never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from judgefree.assets.cache import DONE_MARKER, cached_folder, entries, remove_entry
from judgefree.cli.main import main
from judgefree.testing.holders import hold_lock
from judgefree.world.build import cache_name, current_cache_names
from judgefree.world.config import SMALL, WorldConfig

STALE = "world-0123456789"


def _entry(root: Path, name: str, size: int, *, complete: bool = True) -> Path:
    folder = root / name
    (folder / "m0").mkdir(parents=True)
    (folder / "m0" / "model.safetensors").write_bytes(b"w" * size)
    if complete:
        (folder / DONE_MARKER).write_text(name + "\n")
    (root / f"{name.strip('.').removesuffix('.tmp')}.lock").touch()
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("JUDGEFREE_CACHE", str(root))  # nothing here may reach the real cache
    current, small = cache_name(WorldConfig()), cache_name(SMALL)
    _entry(root, current, 3000)
    _entry(root, small, 1000)
    _entry(root, STALE, 2_000_000)
    _entry(root, "world-aaaaaaaaaa", 500)
    _entry(root, f".{'world-bbbbbbbbbb'}.tmp", 700, complete=False)  # a build killed midway
    _entry(root, "smollm2-135m-instruct", 4000)
    return root


def test_the_worlds_this_version_builds_are_listed_as_current(tmp_path, monkeypatch, capsys):
    """What ``world_folder`` really builds (its build stubbed) is what ``cache list`` calls current."""
    import judgefree.world.build as world_build

    monkeypatch.setattr(world_build, "build", lambda tmp, config, log: (tmp / "build.json").write_text("{}"))
    root = tmp_path / "cache"
    built = {world_build.world_folder(config, root).name for config in (WorldConfig(), SMALL)}
    assert built == current_cache_names() and len(built) == 2
    _entry(root, STALE, 10)
    assert main(["cache", "list", "--cache-dir", str(root)]) == 0
    states = {line.split()[-1]: line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("  ")}
    assert states == {**{name: "current" for name in built}, STALE: "stale"}


def test_list_shows_every_entry_with_its_state_and_size(cache, capsys):
    assert main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[-1]: line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert rows == {cache_name(WorldConfig()): "current", cache_name(SMALL): "current", STALE: "stale",
                    "world-aaaaaaaaaa": "stale", ".world-bbbbbbbbbb.tmp": "leftover", "smollm2-135m-instruct": "other"}
    assert "1.9 MB  world-0123456789" in out  # 2,000,000 bytes + its marker
    assert "3 stale or leftover" in out and "judgefree cache prune" in out


def test_prune_removes_stale_worlds_and_leftovers_only(cache, capsys):
    assert main(["cache", "prune", "--dry-run"]) == 0
    assert "would remove world-0123456789" in capsys.readouterr().out
    assert (cache / STALE).is_dir()  # a dry run removes nothing

    assert main(["cache", "prune"]) == 0
    out = capsys.readouterr().out
    left = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert left == sorted([cache_name(WorldConfig()), cache_name(SMALL), "smollm2-135m-instruct"])
    assert "removed world-0123456789" in out and "freed 1.9 MB" in out
    assert (cache / f"{STALE}.lock").is_file()  # lock files stay (see remove_entry)
    assert main(["cache", "prune"]) == 0 and "freed 0.0 MB" in capsys.readouterr().out


def test_prune_by_name_and_unknown_names(cache, capsys):
    assert main(["cache", "prune", "smollm2-135m-instruct"]) == 0
    assert not (cache / "smollm2-135m-instruct").exists() and (cache / STALE).is_dir()
    assert main(["cache", "prune", "no-such-entry"]) == 2
    assert "no cache entry no-such-entry" in capsys.readouterr().err


def test_an_entry_being_built_is_kept(cache, capsys):
    with hold_lock(cache, f"{STALE}.lock"):  # the lock cached_folder builds under
        assert main(["cache", "prune"]) == 0
        assert "kept world-0123456789: it is being built now" in capsys.readouterr().out
        assert (cache / STALE / DONE_MARKER).is_file()
        assert not (cache / "world-aaaaaaaaaa").exists()
    assert main(["cache", "prune"]) == 0 and not (cache / STALE).exists()


def test_a_removed_entry_is_gone_at_once_and_rebuilt_on_next_use(cache):
    entry = next(e for e in entries(cache) if e.name == STALE)
    assert entry.complete and entry.bytes > 2_000_000
    assert remove_entry(entry) and not (cache / STALE).exists() and not (cache / f".{STALE}.tmp").exists()
    assert remove_entry(entry)  # already gone: nothing to do
    built = cached_folder(STALE, lambda tmp: (tmp / "again").write_text("x"), cache)
    assert (built / "again").is_file() and (built / DONE_MARKER).is_file()


def test_world_build_says_how_to_prune_other_versions(cache, capsys):
    from judgefree.cli.world import _stale_hint

    _stale_hint(cache)
    out = capsys.readouterr().out
    assert "2 worlds of other versions" in out and "judgefree cache prune" in out
    main(["cache", "prune"])
    capsys.readouterr()
    _stale_hint(cache)
    assert capsys.readouterr().out == ""
