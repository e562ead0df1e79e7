"""`judgefree improve` under torchrun on the CPU (gloo, 2 processes, the tiny real LLaVA and a
tiny CLIP): every rank works in every stage; the round's pair store, curated store and the seed
model's answers equal those of one process, and the round trains to its end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from judgefree.testing.store_checks import assert_valid_store, rows
from judgefree.threads import torch_threads

# A torchrun job of two ranks and the same script in this process (the one-process reference),
# each generating, scoring, training and answering with the real engine in the Triton
# interpreter: ~1-2 minutes on 2 busy cores.
pytestmark = pytest.mark.slow

_LOOP = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from judgefree.curate.clip_score import ClipConfig
    from judgefree.curate.selection import Selection
    from judgefree.engine.types import SamplingParams
    from judgefree.generation.driver import GenerationSettings
    from judgefree.pipeline.loop import EvalSettings, Loop, LoopSettings
    from judgefree.train.config import TrainConfig

    model, photos, out, clip_config, clip_weights, questions, coco = sys.argv[1:8]
    settings = LoopSettings(
        model=model, images=json.loads(photos), out=out, rounds=1, chunk_size=1,
        generation=GenerationSettings(model="", prompt="Describe the image.", h_rejected="fixed:0.8",
                                      sampling=SamplingParams(temperature=1.0), max_new_tokens=6, seed=1),
        clip=ClipConfig(model=clip_config, weights=clip_weights, device="cpu"),
        selection=Selection(splits=1),
        train=TrainConfig(finetune="full", learning_rate=1e-3, epochs=1, batch_size=2, micro_batch_size=1,
                          warmup_ratio=0.0, save_every=100),
        evaluation=EvalSettings(questions, coco, max_new_tokens=6, batch_size=1),
        dtype="float32", device="cpu", progress=False)
    Loop(settings).run()
""")


def _coco(folder, photos):
    folder.mkdir(parents=True, exist_ok=True)
    images = [{"id": i + 1, "file_name": f"{i}.jpg"} for i in range(3)]
    (folder / "instances_val2014.json").write_text(json.dumps({
        "images": images, "categories": [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}],
        "annotations": [{"id": 0, "image_id": 1, "category_id": 1}, {"id": 1, "image_id": 2, "category_id": 17}]}))
    (folder / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": []}))
    questions = folder / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": f"q{i}", "image_id": i + 1, "image": photos[i],
                                             "question": "Describe the image."}) + "\n" for i in range(3)))
    return questions, folder


def _loop_here(tmp_path, out, argv, monkeypatch):
    """The script in this process, one torch thread (as each rank): no launcher, no imports."""
    import runpy

    script = tmp_path / "loop_script.py"
    script.write_text(_LOOP)
    monkeypatch.setattr(sys, "argv", [str(script), *argv[:2], str(out), *argv[2:]])
    with torch_threads(1):
        runpy.run_path(str(script), run_name="__main__")


def _loop(nproc, tmp_path, out, argv):
    script = tmp_path / "loop_script.py"
    script.write_text(_LOOP)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "JUDGEFREE_JOB_ID"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               str(script), *argv[:2], str(out), *argv[2:]]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def test_improve_on_two_ranks_matches_one_process(train_llava_dir, train_photos, tiny_clip_files, tmp_path,
                                                  monkeypatch):
    questions, coco = _coco(tmp_path / "coco", train_photos)
    argv = [str(train_llava_dir), json.dumps(train_photos[:3]), *map(str, tiny_clip_files), str(questions), str(coco)]
    one, two = tmp_path / "one", tmp_path / "two"
    _loop_here(tmp_path, one, argv, monkeypatch)
    done = _loop(2, tmp_path, two, argv)
    assert done.returncode == 0, done.stderr[-4000:]
    for stage in ("generate", "curate", "train", "evaluate"):
        assert (two / "round-1" / f"{stage}.done").is_file()
    by_image = lambda path: sorted(rows(path), key=lambda row: row["image"])  # noqa: E731
    assert_valid_store(two / "round-1" / "pairs")
    assert by_image(two / "round-1" / "pairs") == by_image(one / "round-1" / "pairs")
    names = [p.name for p in assert_valid_store(two / "round-1" / "pairs").shard_paths()]
    assert any("-r1-" in n for n in names)  # rank 1 generated
    assert rows(two / "round-1" / "curated") == rows(one / "round-1" / "curated")
    assert (two / "round-0" / "eval" / "answers.jsonl").read_text() == \
        (one / "round-0" / "eval" / "answers.jsonl").read_text()
    assert json.loads((two / "round-1" / "train.done").read_text())["steps"] == \
        json.loads((one / "round-1" / "train.done").read_text())["steps"] > 0
    assert (two / "round-1" / "train" / "model" / "model.safetensors").is_file()
