"""Host <-> device copies of a step's small tensors, one copy each way.

``HostStager`` packs a step's host lists (sampling parameters, row indices) into one
reusable host buffer, pinned on CUDA, and moves them with one asynchronous copy; the device
tensors are views of that one transfer. ``ResultFetcher.fetch`` brings [B] result tensors back in
one copy (float64 holds int64 tokens below 2**53, int32 flags and fp32 values exactly). On
the CPU neither copies anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_ALIGN = 16  # every array starts 16-byte aligned: any dtype can view it, kernels get aligned pointers


class HostStager:
    """``stage((values, dtype), ...)`` -> one device tensor per array (lists, or nested lists
    of equal-length rows). ``staged`` (default: the device is CUDA) packs them into one host
    buffer and one copy; otherwise each becomes a plain CPU tensor, as before staging."""

    def __init__(self, device: torch.device, *, staged: bool | None = None) -> None:
        self.device = torch.device(device)
        self.staged = self.device.type == "cuda" if staged is None else staged
        self._pin = self.device.type == "cuda"
        self._host: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None  # the last copy out of _host

    def stage(self, *arrays: tuple[Sequence, torch.dtype]) -> list[torch.Tensor]:
        hosts = [torch.tensor(values, dtype=dtype) for values, dtype in arrays]
        if not self.staged:
            return [t.to(self.device) for t in hosts]
        offsets, total = [], 0
        for t in hosts:
            offsets.append(total)
            total += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        buffer = self._buffer(max(total, _ALIGN))
        for t, offset in zip(hosts, offsets):
            nbytes = t.numel() * t.element_size()
            buffer[offset:offset + nbytes].view(t.dtype).copy_(t.reshape(-1))
        device_bytes = buffer[:total].to(self.device, non_blocking=True)
        if self._pin:
            self._copied = torch.cuda.Event()
            self._copied.record()
        return [device_bytes[offset:offset + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
                for t, offset in zip(hosts, offsets)]

    def _buffer(self, nbytes: int) -> torch.Tensor:
        """The host buffer, grown to a power of two, once the copy still reading it is done."""
        if self._copied is not None:
            self._copied.synchronize()  # the previous step's copy may not have run yet
        if self._host is None or self._host.numel() < nbytes:
            size = 1 << (nbytes - 1).bit_length()
            self._host = torch.empty(size, dtype=torch.uint8, pin_memory=self._pin)
        return self._host


class ResultFetcher:
    """``fetch(*tensors)`` -> one host list per [B] tensor, through one device-to-host copy
    into a reusable (pinned on CUDA) float64 buffer; on the CPU, ``tolist`` of each."""

    def __init__(self, device: torch.device, *, staged: bool | None = None) -> None:
        self.device = torch.device(device)
        self.staged = self.device.type == "cuda" if staged is None else staged
        self._pin = self.device.type == "cuda"
        self._host: torch.Tensor | None = None

    def fetch(self, *tensors: torch.Tensor) -> list[list]:
        if not self.staged:
            return [t.tolist() for t in tensors]
        rows, width = len(tensors), tensors[0].numel()
        if self._host is None or self._host.numel() < rows * width:
            size = 1 << max(rows * width - 1, 0).bit_length()
            self._host = torch.empty(size, dtype=torch.float64, pin_memory=self._pin)
        packed = torch.stack([t.reshape(-1).to(torch.float64) for t in tensors])
        host = self._host[:rows * width].view(rows, width)  # contiguous: one plain copy into pinned memory
        host.copy_(packed, non_blocking=self._pin)
        if self._pin:
            torch.cuda.current_stream(self.device).synchronize()
        return [[int(v) for v in row] if t.dtype in _INT_DTYPES else row
                for t, row in zip(tensors, host.tolist())]


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)
