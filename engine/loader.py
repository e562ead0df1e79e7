"""Reading a Hugging Face checkpoint folder into the engine's model classes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

# Buffers some checkpoints carry that the model recomputes.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "position_ids")


def check_folder(path: str | os.PathLike) -> Path:
    """The checkpoint folder, or a clear error when it is missing or not one."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"model path is not a folder: {folder}")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    files = weight_files(folder)
    if not files:
        raise ValueError(f"{folder} has no *.safetensors weights")
    for file in files:
        if file.is_file():
            check_safetensors(file)
    return folder


def check_safetensors(file: Path) -> None:
    """A clear error for a weights file that is truncated or not safetensors at all: its size
    must be what its header describes (8 + header + the end of the last tensor), as the
    format requires. Reads the header only."""
    size = file.stat().st_size
    with open(file, "rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        header = handle.read(length) if 0 < length <= min(size - 8, 100 << 20) else b""
    try:
        entries = json.loads(header)
        end = max([entry["data_offsets"][1] for key, entry in entries.items() if key != "__metadata__"], default=0)
    except (ValueError, TypeError, KeyError, IndexError):
        raise ValueError(f"{file} is not a readable safetensors file (damaged header, {size} bytes); "
                         "copy or export the model again") from None
    expected = 8 + length + end
    if size != expected:
        raise ValueError(f"{file} is damaged: {size} bytes where its header describes {expected} "
                         f"({'truncated' if size < expected else 'extra bytes'}); copy or export the model again")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors shards (those an index names, when there is one)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in names]
    return sorted(folder.glob("*.safetensors"))


def iter_checkpoint(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in weight_files(folder):
        if not file.is_file():
            raise FileNotFoundError(f"weight shard missing: {file}")
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


def load_weights(model: torch.nn.Module, tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Copy checkpoint tensors into ``model`` (which has ``load_weight``/``expected_weights``)
    and check that nothing was left out or unknown."""
    loaded, unknown = set(), []
    for name, tensor in tensors:
        if name.endswith(_SKIPPED_SUFFIXES):
            continue
        try:
            loaded.add(model.load_weight(name, tensor))
        except (KeyError, AttributeError):
            unknown.append(name)
    if unknown:
        raise ValueError(f"{source}: unexpected weights {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    missing = model.expected_weights() - loaded
    if missing:
        raise ValueError(f"{source}: weights missing from the checkpoint: {sorted(missing)[:5]}")
