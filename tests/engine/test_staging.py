"""The engine's one-copy staging (engine/staging.py) and its sampling-step checks.

The packed path runs here on the CPU (``staged=True``; pinning and CUDA events are the
only parts left to a GPU): every array must come back bit for bit, whatever its dtype,
shape or position in the buffer, also when the buffer is reused and grown.
"""

import math

import pytest
import torch

from judgefree.engine.staging import HostStager, ResultFetcher
from judgefree.engine.types import SamplingParams
from judgefree.kernels.mix_sample import mix_sample, raise_for_flags


def test_staged_arrays_come_back_bit_for_bit(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    stager = HostStager(torch.device("cpu"), staged=True)
    for size in (1, 3, 17, 300, 2):  # grows, then reuses the larger buffer
        floats = (torch.randn(size, generator=gen) * 1e30).tolist()
        seeds = [-2**63, 2**63 - 1] + torch.randint(-2**62, 2**62, (size,), generator=gen).tolist()
        table = torch.randint(0, 1000, (size, 5), generator=gen).tolist()
        empty: list[int] = []
        arrays = [(floats, torch.float32), (seeds, torch.int64), (empty, torch.int32), (table, torch.int32),
                  ([v % 2 == 0 for v in range(size)], torch.bool), (list(range(size)), torch.int64)]
        staged = stager.stage(*arrays)
        for (values, dtype), got in zip(arrays, staged):
            want = torch.tensor(values, dtype=dtype)
            assert got.dtype == dtype and got.shape == want.shape and got.is_contiguous()
            assert torch.equal(got, want)
            assert got.data_ptr() % 16 == 0  # aligned views of the one transfer
    # the unstaged (CPU engine) path gives plain tensors
    plain = HostStager(torch.device("cpu")).stage(([1.5, 2.5], torch.float32), ([[1, 2]], torch.int32))
    assert torch.equal(plain[0], torch.tensor([1.5, 2.5])) and torch.equal(plain[1], torch.tensor([[1, 2]]))


def test_packed_results_equal_tolist(fresh_seed):
    gen = torch.Generator().manual_seed(fresh_seed)
    packed, plain = ResultFetcher(torch.device("cpu"), staged=True), ResultFetcher(torch.device("cpu"))
    for size in (5, 1, 70):
        tensors = (torch.randint(0, 152064, (size,), generator=gen),
                   torch.randn(size, generator=gen) * 1e-3 - 7.0,
                   torch.randn(size, generator=gen).float(),
                   torch.randint(0, 32, (size,), generator=gen, dtype=torch.int32))
        got, want = packed.fetch(*tensors), plain.fetch(*tensors)
        assert got == want
        assert [type(v) for v in got[0]] == [int] * size and [type(v) for v in got[1]] == [float] * size


def test_flags_come_back_with_the_results_and_raise_as_validation_does():
    """validate=False still reports bad logits: the flags, read on the host, raise the
    message that validate=True raises."""
    c = torch.randn(3, 40)
    c[1, 4] = math.nan
    out = mix_sample(c, None, 0.0, seeds=torch.arange(3), step=0, validate=False, backend="torch")
    assert out.flags.tolist()[0] == 0 and out.flags.tolist()[1] != 0
    with pytest.raises(ValueError, match="logits_c row 1 contains NaN") as validated:
        mix_sample(c, None, 0.0, seeds=torch.arange(3), step=0, backend="torch")
    with pytest.raises(ValueError, match="logits_c row 1 contains NaN") as from_flags:
        raise_for_flags(out.flags.tolist())
    assert str(validated.value) == str(from_flags.value)
    raise_for_flags([0, 0, 0])


@pytest.mark.parametrize("kwargs,message", [
    (dict(temperature=math.inf), "temperature must be finite"),
    (dict(temperature=math.nan), "temperature must be finite"),
    (dict(alpha=math.inf), "alpha must be finite"),
    (dict(top_k=2.0), "top_k must be an integer"),
    (dict(top_k=True), "top_k must be an integer"),
    (dict(top_p="0.9"), "top_p must be a number"),
    (dict(top_p=0.0), "top_p must lie in"),
])
def test_sampling_params_are_checked_at_admission(kwargs, message):
    """The engine's sampling step runs mix_sample unvalidated: SamplingParams is the check."""
    with pytest.raises(ValueError, match=message):
        SamplingParams(**kwargs)
