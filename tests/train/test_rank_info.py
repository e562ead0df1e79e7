"""Rank information from torchrun's environment and contiguous shares of the work."""

import pytest
from judgefree.train.distributed import RankInfo, rank_info, shard_bounds


@pytest.mark.parametrize("total", [0, 1, 7, 64, 103])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shares_cover_everything_once_and_differ_by_at_most_one(total, world):
    bounds = [shard_bounds(total, rank, world) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    items = list(range(total))
    assert sum((items[start:stop] for start, stop in bounds), []) == items


def test_rank_info_reads_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_info() == RankInfo(0, 1, 0)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = rank_info()
    assert info == RankInfo(5, 8, 1) and not info.is_main
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(ValueError, match="RANK=8"):
        rank_info()
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        rank_info()


def test_bad_bounds_arguments():
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(10, 3, 3)
    with pytest.raises(ValueError, match="total"):
        shard_bounds(-1, 0, 1)
