"""Python state (optimizer, scheduler, RNG) saved without pickle: tensors in a safetensors file,
everything else as JSON, so that loading a checkpoint someone else wrote can never run code.

``save_state(folder, "optimizer", state)`` writes ``optimizer.json`` (and ``optimizer.safetensors``
when the state holds tensors); ``load_state(folder, "optimizer")`` gives it back. Plain values
(None, bool, int, float, str), lists, tuples, dicts, torch tensors and numpy arrays are stored
exactly (a tuple stays a tuple, an int dict key stays an int); anything else is refused when
saving, rather than written in a form only pickle could read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Tags of the values JSON cannot hold as they are; a dict using one of them as a key is refused.
_TENSOR, _ARRAY, _TUPLE, _ITEMS = "__tensor__", "__ndarray__", "__tuple__", "__items__"
_TAGS = frozenset({_TENSOR, _ARRAY, _TUPLE, _ITEMS})


def _encode(value: Any, tensors: dict[str, Any], where: str) -> Any:
    import numpy as np
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):
        return {_ARRAY: {"dtype": value.dtype.str, "shape": list(value.shape), "data": value.ravel().tolist()}}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, tensors, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors, where) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not _TAGS & value.keys():
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {_ITEMS: [[_encode(k, tensors, where), _encode(v, tensors, where)] for k, v in value.items()]}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be saved without pickle")


def _decode(value: Any, tensors: dict[str, Any], where: Path) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, where) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, inner), = value.items()
        if tag == _TENSOR:
            if inner not in tensors:
                raise ValueError(f"{where}: tensor {inner!r} is missing from its safetensors file")
            return tensors[inner]
        if tag == _ARRAY:
            import numpy as np

            return np.asarray(inner["data"], dtype=np.dtype(inner["dtype"])).reshape(inner["shape"])
        if tag == _TUPLE:
            return tuple(_decode(v, tensors, where) for v in inner)
        if tag == _ITEMS:
            return {_hashable(_decode(k, tensors, where)): _decode(v, tensors, where) for k, v in inner}
    return {k: _decode(v, tensors, where) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def save_state(folder: Path, name: str, state: Any) -> list[str]:
    """Write ``state`` as ``NAME.json`` (+ ``NAME.safetensors``); returns the files written."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    encoded = _encode(state, tensors, name)
    files = [f"{name}.json"]
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
        files.append(f"{name}.safetensors")
    (folder / f"{name}.json").write_text(json.dumps({"tensors": bool(tensors), "state": encoded}) + "\n")
    return files


def load_state(folder: Path, name: str) -> Any:
    """What ``save_state(folder, name, ...)`` wrote. Reads JSON and safetensors only."""
    from safetensors.torch import load_file

    path = folder / f"{name}.json"
    stored = json.loads(path.read_text())
    tensors = load_file(str(folder / f"{name}.safetensors")) if stored.get("tensors") else {}
    return _decode(stored["state"], tensors, path)
