"""Kill training with SIGKILL between checkpoints, resume it, and get the very same weights as
an uninterrupted run (fixed seed, fp32 on the CPU: bitwise equal)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import torch
from judgefree.testing.material import load_weights

from judgefree.train.checkpoint import checkpoint_dirs
from judgefree.train.config import TrainConfig
from judgefree.train.trainer import train_dpo

CONFIG = dict(finetune="lora", learning_rate=1e-3, epochs=3, batch_size=2, micro_batch_size=1, warmup_ratio=0.25,
              save_every=2, keep_checkpoints=2, seed=3)

CHILD = textwrap.dedent("""
    import os, signal, sys
    import torch
    from judgefree.train.config import TrainConfig
    from judgefree.train.trainer import train_dpo

    model, pairs, out, kill_at, config = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), eval(sys.argv[5])
    torch.set_num_threads(int(sys.argv[6]))  # the parent's: another count sums in another order

    def hook(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as a crash or an OOM kill

    train_dpo(model, pairs, out, TrainConfig(**config), progress=False, after_step=hook)
""")


def test_kill_and_resume_gives_the_weights_of_an_uninterrupted_run(train_llava_dir, llava_store, tmp_path):
    config = TrainConfig(**CONFIG)
    whole = train_dpo(train_llava_dir, llava_store, tmp_path / "whole", config, progress=False)
    assert whole.steps == 6

    out = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", CHILD, str(train_llava_dir), str(llava_store), str(out), "5",
                            repr(CONFIG), str(torch.get_num_threads())], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "1")})
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert [p.name for p in checkpoint_dirs(out)] == ["step-00000002", "step-00000004"]
    assert not (out / "model").exists() and not (out / "result.json").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 5  # step 5 was logged, not checkpointed

    resumed = train_dpo(train_llava_dir, llava_store, out, config, progress=False)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert [m["loss"] for m in resumed.metrics] == [m["loss"] for m in whole.metrics]
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]  # step 5's orphan line was dropped, then redone
    ours, theirs = load_weights(out / "model"), load_weights(whole.model_dir)
    assert ours.keys() == theirs.keys()
    differing = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert differing == []
    trained = load_weights(train_llava_dir)  # and training did change the weights
    assert any(not torch.equal(ours[name], trained[name]) for name in ours if "q_proj" in name)
