"""Training state without pickle (train/state_files.py): optimizer, scheduler and RNG states go
to JSON + safetensors and come back exactly; what pickle alone could store is refused."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from judgefree.train.state_files import load_state, save_state


def test_nested_state_comes_back_exactly(tmp_path, fresh_seed):
    generator = torch.Generator().manual_seed(fresh_seed)
    state = {
        "state": {"model.layer.weight": {"step": torch.tensor(7.0), "exp_avg": torch.randn(3, 5, generator=generator),
                                         "exp_avg_sq": torch.rand(3, 5, generator=generator).to(torch.bfloat16)},
                  0: {"momentum": torch.arange(4, dtype=torch.int64)}},
        "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "foreach": None,
                          "params": ["model.layer.weight", 0], "initial_lr": float("inf")}],
        "__tensor__": "a key that looks like a tag",
        "array": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "scalar": np.float64(0.25),
    }
    files = save_state(tmp_path, "optimizer", state)
    assert files == ["optimizer.json", "optimizer.safetensors"]
    back = load_state(tmp_path, "optimizer")
    got, want = back["state"]["model.layer.weight"], state["state"]["model.layer.weight"]
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key])
    assert torch.equal(back["state"][0]["momentum"], state["state"][0]["momentum"])  # an int key stays an int
    assert back["param_groups"] == state["param_groups"]  # the tuple stays a tuple, inf stays inf
    assert isinstance(back["param_groups"][0]["betas"], tuple)
    assert back["__tensor__"] == state["__tensor__"]
    assert back["array"].dtype == np.uint32 and np.array_equal(back["array"], state["array"])
    assert back["scalar"] == 0.25
    json.loads((tmp_path / "optimizer.json").read_text())  # plain JSON


def test_rng_states_restore_the_same_draws(tmp_path):
    from judgefree.train.checkpoint import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # numpy keeps a cached gaussian: part of its state
    save_state(tmp_path, "rng", rng_state())
    expected = (random.random(), np.random.standard_normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(load_state(tmp_path, "rng"))
    got = (random.random(), np.random.standard_normal(), torch.rand(3))
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_a_state_only_pickle_could_hold_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match=r"optimizer\.lr_lambda: a function cannot be saved without pickle"):
        save_state(tmp_path, "optimizer", {"lr_lambda": lambda step: 1.0})
    assert not (tmp_path / "optimizer.json").exists()


def test_a_real_optimizer_and_scheduler_round_trip(tmp_path):
    from transformers import get_scheduler

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    scheduler = get_scheduler("cosine", optimizer, num_training_steps=10, num_warmup_steps=2)
    for _ in range(3):
        layer(torch.randn(2, 4)).sum().backward()
        optimizer.step(), scheduler.step(), optimizer.zero_grad()
    save_state(tmp_path, "optimizer", optimizer.state_dict())
    save_state(tmp_path, "scheduler", scheduler.state_dict())
    fresh = torch.optim.AdamW(layer.parameters(), lr=1e-2)
    fresh_scheduler = get_scheduler("cosine", fresh, num_training_steps=10, num_warmup_steps=2)
    fresh.load_state_dict(load_state(tmp_path, "optimizer"))
    fresh_scheduler.load_state_dict(load_state(tmp_path, "scheduler"))
    assert fresh_scheduler.get_last_lr() == scheduler.get_last_lr()
    for a, b in zip(optimizer.state_dict()["state"].values(), fresh.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
