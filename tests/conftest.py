"""Test-wide setup.

Triton kernels run through the interpreter when no GPU is present: TRITON_INTERPRET must be
in the environment before the first ``@triton.jit`` decorator executes, i.e. before any
``judgefree.kernels`` module is imported, so it is set here at collection start.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ON_GPU = torch.cuda.is_available()

# The shared fixtures (checkpoints, engines, photos, CLIP, pair stores) live in the package.
pytest_plugins = ("judgefree.testing.fixtures",)


@pytest.fixture
def device() -> torch.device:
    """Where kernel tests place their tensors: the GPU when there is one, else the CPU
    (the Triton interpreter runs kernels on CPU tensors)."""
    return torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture
def fresh_seed() -> int:
    """A new seed per test run (printed on failure) so inputs are fresh random each time."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"fresh_seed={seed}")
    return seed


def pytest_collection_modifyitems(config, items):
    if ON_GPU:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
