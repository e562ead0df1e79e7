"""The improve loop holds its run folder's lock while it runs and first clears the temporary
files (stage markers) a killed run left."""

from __future__ import annotations

import os

from judgefree.locks import holder_of
from judgefree.pipeline.loop import Loop, LoopSettings


def test_the_loop_locks_its_folder_and_clears_stale_markers(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    (out / "round-1").mkdir(parents=True)
    stale = [out / ".loop.json.ab12.tmp", out / "round-1" / ".generate.done.cd34.tmp"]
    for path in stale:
        path.write_text("half")
    (out / "round-1" / "generate.done").write_text("{}")
    seen = []
    monkeypatch.setattr(Loop, "_run", lambda self: seen.append(holder_of(out)) or [])
    Loop(LoopSettings(model=str(tmp_path / "m"), images=["a.png"], out=str(out)), log=lambda line: None).run()
    assert seen[0]["pid"] == os.getpid()  # held while the stages run
    assert holder_of(out) is None  # and released after
    assert [p for p in stale if p.exists()] == [] and (out / "round-1" / "generate.done").exists()
