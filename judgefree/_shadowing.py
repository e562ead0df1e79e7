"""The repository's top-level folders, seen as top-level packages, must not hide installed ones.

Run from the repository root (``python -m ...``, ``python -m pytest``, ``torchrun -m ...``), the
root is on ``sys.path`` first, so ``import kernels`` finds ``kernels/`` (judgefree.kernels) before
Hugging Face's ``kernels`` package, which transformers >= 5.25 depends on and imports
(``transformers.integrations.hub_kernels``: ``from kernels import CUDAProperties, ...``). That
import then failed everywhere transformers loads a model.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def use_installed_package(name: str, init_file: str) -> None:
    """Replace the module being imported as ``name`` (a judgefree folder reached through the
    repository root on sys.path) by the installed package of that name, if there is one;
    without one, the folder's module stays (and exports nothing under that name)."""
    root = Path(init_file).resolve().parent.parent
    path = [p for p in sys.path if Path(p or os.curdir).resolve() != root]
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # what the running `import name` returns once this body ends
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
