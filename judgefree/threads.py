"""torch's intra-op thread count for the length of a call, restored after it: a library call
must not change the thread count of the process that imports it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Inside: ``torch.set_num_threads(count)``; after: the count before (also a decorator)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
