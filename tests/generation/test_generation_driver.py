"""The generation driver (curate/generation.py) with a fake engine: records, skipped images,
and resume after an interruption (a test hook, and a SIGKILLed subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from judgefree.testing.fake_engine import FakeEngine
from judgefree.testing.material import SETTINGS

from judgefree.generation.driver import GenerationSettings, generate_store, list_images
from judgefree.store.records import file_sha256, record_from_pair
from judgefree.store.pair_store import PAIRS, STAGING, PairStore



class Interrupt(Exception):
    pass


def _stop_after(n_chunks: int):
    def hook(index: int) -> None:
        if index + 1 == n_chunks:
            raise Interrupt
    return hook


def _records(path: Path):
    return list(PairStore(path).records())


def test_generates_one_record_per_readable_image(tmp_path, photos_with_corrupt):
    images = list_images(photos_with_corrupt) + [str(tmp_path / "missing.png")]
    engine = FakeEngine()
    report = generate_store(engine, images, tmp_path / "pairs", SETTINGS, chunk_size=3, progress=False)
    good = [p for p in images if "broken" not in p and "missing" not in p]
    records = _records(tmp_path / "pairs")
    assert [r.image for r in records] == good
    assert report.generated == len(good) and report.total_images == len(images) and report.already_stored == 0
    reasons = {Path(s["image"]).name: s["reason"] for s in report.skipped}
    assert reasons.keys() == {"03_broken.png", "missing.png"}
    assert reasons["missing.png"] == "file not found" and reasons["03_broken.png"].startswith("engine error: cannot read")
    assert PairStore(tmp_path / "pairs").skipped == report.skipped
    assert all("missing" not in p for call in engine.calls for p in call)  # never sent to the engine
    # every field comes from the engine's Pair, and the content hash from the file
    expected = FakeEngine().generate_pairs([good[2]], SETTINGS.prompt, h_chosen=SETTINGS.h_chosen,
                                           h_rejected=SETTINGS.h_rejected, seed=SETTINGS.seed)[0]
    want = record_from_pair(expected, good[2], file_sha256(good[2]))
    for name in ("chosen_cond_logprobs", "chosen_logprobs", "rejected_cond_logprobs", "rejected_logprobs"):
        setattr(want, name, np.asarray(getattr(want, name), dtype=np.float32).tolist())  # stored as float32
    assert records[2] == want
    assert records[2].prompt_token_ids and records[2].chosen_h == 0.0 and 0.3 <= records[2].rejected_h <= 0.9
    assert PairStore(tmp_path / "pairs").settings["h_rejected"] == "uniform:0.3,0.9"


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, photos_with_corrupt):
    images = list_images(photos_with_corrupt)
    generate_store(FakeEngine(), images, tmp_path / "whole", SETTINGS, chunk_size=2, progress=False)

    first = FakeEngine()
    with pytest.raises(Interrupt):
        generate_store(first, images, tmp_path / "resumed", SETTINGS, chunk_size=2, progress=False,
                       after_chunk=_stop_after(2))
    assert len(_records(tmp_path / "resumed")) == 3  # two chunks of two, one of them corrupt
    second = FakeEngine()
    report = generate_store(second, images, tmp_path / "resumed", SETTINGS, chunk_size=2, progress=False)
    assert report.already_stored == 3 and report.generated == len(images) - 4
    assert _records(tmp_path / "resumed") == _records(tmp_path / "whole")
    sent = [p for engine in (first, second) for call in engine.calls for p in call if "broken" not in p]
    assert sorted(sent) == sorted(p for p in images if "broken" not in p)  # none generated twice
    assert [Path(s["image"]).name for s in PairStore(tmp_path / "resumed").skipped] == ["03_broken.png"]
    # a third run has nothing left but the corrupt image, and keeps listing it
    third = FakeEngine()
    assert generate_store(third, images, tmp_path / "resumed", SETTINGS, chunk_size=2, progress=False).generated == 0
    assert [Path(p).name for call in third.calls for p in call] == ["03_broken.png"]


_CHILD = textwrap.dedent("""
    import os, signal
    from judgefree.testing.fake_engine import FakeEngine
    from judgefree.testing.material import SETTINGS
    from judgefree.generation import driver as generation
    from judgefree.store import pair_store as store

    def die(*_args, **_kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if {where!r} == "before_commit":  # the shard is in place, the manifest not yet updated
        commits = []
        original = store.StoreWriter.commit
        def commit(self):
            commits.append(1)
            if len(commits) == 2:
                die()
            original(self)
        store.StoreWriter.commit = commit
        hook = None
    else:
        hook = lambda index: die() if index == 1 else None
    generation.generate_store(FakeEngine(), generation.list_images({images!r}), {out!r}, SETTINGS,
                              chunk_size=2, progress=False, after_chunk=hook)
""")


@pytest.mark.parametrize("where", ["after_chunk", "before_commit"])
def test_resume_after_sigkill(tmp_path, photos_with_corrupt, where):
    images = list_images(photos_with_corrupt)
    generate_store(FakeEngine(), images, tmp_path / "whole", SETTINGS, chunk_size=2, progress=False)
    out = tmp_path / "killed"
    child = _CHILD.format(where=where, images=str(photos_with_corrupt), out=str(out))
    result = subprocess.run([sys.executable, "-c", child], timeout=300, capture_output=True, text=True)
    assert result.returncode == -9, result.stderr
    stored = _records(out)
    assert 0 < len(stored) < len(images) - 1
    assert len(list((out / PAIRS).glob("*.parquet"))) == len(PairStore(out).manifest["shards"])
    if where == "before_commit":  # the orphan: written, never committed, invisible to folder readers
        assert len(list((out / STAGING).glob("*.parquet"))) == 1
    generate_store(FakeEngine(), images, out, SETTINGS, chunk_size=2, progress=False)
    assert _records(out) == _records(tmp_path / "whole")
    assert len(list((out / PAIRS).glob("*.parquet"))) == len(PairStore(out).manifest["shards"])
    assert not (out / STAGING).exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_resume_with_other_settings_is_refused(tmp_path, photo_dir):
    images = list_images(photo_dir)[:1]
    generate_store(FakeEngine(), images, tmp_path, SETTINGS, progress=False)
    other = GenerationSettings(model=SETTINGS.model, prompt="Something else.")
    with pytest.raises(ValueError, match="prompt: stored"):
        generate_store(FakeEngine(), images, tmp_path, other, progress=False)


def test_list_images_from_folder_and_list_file(tmp_path, photo_dir):
    from_folder = list_images(photo_dir)
    assert [Path(p).name for p in from_folder] == sorted(p.name for p in photo_dir.iterdir())
    listing = tmp_path / "list.txt"
    names = [p.name for p in photo_dir.iterdir()][:2]
    rel = os.path.relpath(photo_dir, tmp_path)
    listing.write_text(f"# two photos\n{rel}/{names[0]}\n\n{rel}/{names[1]}\n{rel}/{names[0]}\n")
    assert list_images(listing) == [str((photo_dir / n).resolve()) for n in names]  # repeat dropped
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(ValueError, match="no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        list_images(tmp_path / "nowhere")


@pytest.mark.parametrize("kwargs, message", [
    ({"h_rejected": "gauss:0.5"}, "bad h distribution 'gauss:0.5'"),
    ({"h_chosen": "fixed:2"}, "fixed h must lie in"),
    ({"prompt": "  "}, "prompt must not be empty"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**{"model": "m", "prompt": "p", **kwargs})


def test_pair_with_mismatched_prompt_ids_is_refused(photo_dir):
    image = list_images(photo_dir)[0]
    pair = FakeEngine().generate_pairs([image], "Describe.")[0]
    pair.rejected.prompt_token_ids = pair.rejected.prompt_token_ids + [7]
    with pytest.raises(ValueError, match="different prompt_token_ids"):
        record_from_pair(pair, image, "sha")


def test_resume_with_another_chunk_size_is_refused(tmp_path, photo_dir):
    images = list_images(photo_dir)
    with pytest.raises(Interrupt):
        generate_store(FakeEngine(), images, tmp_path, SETTINGS, chunk_size=2, progress=False,
                       after_chunk=_stop_after(1))
    with pytest.raises(ValueError, match="was generated with --chunk-size 2; resume with the same"):
        generate_store(FakeEngine(), images, tmp_path, SETTINGS, chunk_size=3, progress=False)
    assert len(_records(tmp_path)) == 2 and PairStore(tmp_path).manifest["chunk_size"] == 2
