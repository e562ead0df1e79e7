"""BlockManager: ref counts, prefix sharing (image-salted keys, partial prompt tails),
copy-on-write, and reviving freed blocks. Pure Python, no model."""

import random

import pytest
from judgefree.engine.block_manager import BlockManager
from judgefree.engine.response import ResponsePath

BS = 4


def seq(tokens, image_hash=None, span=None, outputs=None):
    return ResponsePath(list(tokens), outputs if outputs is not None else [], image_hash, span)


def prefill(manager, s):
    """Allocate and mark the whole prompt computed, as a prefill step would."""
    manager.allocate(s)
    manager.register(s, len(s))
    s.num_computed = len(s)


def test_fresh_allocation_takes_ceil_blocks_and_release_returns_them(fresh_seed):
    rng = random.Random(fresh_seed)
    manager = BlockManager(64, BS)
    n = rng.randrange(1, 40)
    s = seq(rng.randrange(1000) for _ in range(n))
    assert manager.blocks_needed(s) == -(-n // BS)
    manager.allocate(s)
    assert len(s.block_table) == -(-n // BS) and len(set(s.block_table)) == len(s.block_table)
    assert s.num_computed == 0
    assert manager.num_free == 64 - len(s.block_table)
    manager.release(s)
    assert manager.num_free == 64 and s.block_table == [] and s.num_computed == 0


def test_identical_prompts_share_every_block_including_the_partial_tail():
    manager = BlockManager(16, BS)
    a, b = seq(range(10)), seq(range(10))  # 2 full blocks + a 2-token tail
    prefill(manager, a)
    assert manager.blocks_needed(b) == 0
    manager.allocate(b)
    assert b.block_table == a.block_table
    assert b.num_computed == 10  # all cached: only the last token is recomputed (no write)
    assert b.compute_start == 9 and b.remaining == 1
    assert all(manager.blocks[i].ref_count == 2 for i in a.block_table)


def test_longer_prompt_shares_only_the_full_blocks():
    manager = BlockManager(16, BS)
    a, b = seq(range(10)), seq(list(range(10)) + [77, 78])
    prefill(manager, a)
    manager.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert b.num_computed == 8


def test_same_tokens_with_another_image_share_nothing_from_the_image_on():
    manager = BlockManager(16, BS)
    tokens = [1, 2, 9, 9, 9, 9, 9, 9, 3, 4]  # image tokens at positions 2..7
    a = seq(tokens, "imgA", (2, 8))
    b = seq(tokens, "imgB", (2, 8))
    c = seq(tokens, "imgA", (2, 8))
    prefill(manager, a)
    manager.allocate(b)
    assert b.num_computed == 0 and not set(b.block_table) & set(a.block_table)
    manager.allocate(c)
    assert c.block_table == a.block_table


def test_write_into_a_shared_block_copies_it_first():
    manager = BlockManager(16, BS)
    outputs_a, outputs_b = [], []
    a, b = seq(range(6), outputs=outputs_a), seq(range(6), outputs=outputs_b)
    prefill(manager, a)
    manager.allocate(b)
    tail = a.block_table[1]
    outputs_b.append(42)  # b decodes its first token: position 6, inside the shared tail block
    assert manager.append_cost(b) == 1
    copies = []
    manager.prepare_append(b, copies)
    assert copies == [(tail, b.block_table[1])] and b.block_table[1] != tail
    assert manager.blocks[tail].ref_count == 1
    outputs_a.append(7)  # a is now the tail's only holder: writes in place, no copy
    assert manager.append_cost(a) == 0
    copies = []
    manager.prepare_append(a, copies)
    assert copies == [] and a.block_table[1] == tail


def test_decode_into_a_new_block_allocates_one():
    manager = BlockManager(16, BS)
    outputs = []
    a = seq(range(8), outputs=outputs)
    prefill(manager, a)
    outputs.append(5)  # position 8 starts block 2
    assert manager.append_cost(a) == 1
    manager.prepare_append(a, [])
    assert len(a.block_table) == 3


def test_freed_blocks_are_revived_by_key_until_reused():
    manager = BlockManager(3, BS)
    a = seq(range(8))
    prefill(manager, a)
    blocks = list(a.block_table)
    manager.release(a)
    b = seq(range(8))
    assert manager.blocks_needed(b) == 2  # cached but free: they still come out of the pool
    manager.allocate(b)
    assert b.block_table == blocks and b.num_computed == 8
    manager.release(b)
    c = seq(range(100, 112))  # needs all 3 blocks: overwrites the cached ones
    prefill(manager, c)
    manager.release(c)
    d = seq(range(8))
    manager.allocate(d)
    assert d.num_computed == 0


def test_a_filled_tail_block_is_republished_under_its_full_key():
    manager = BlockManager(8, BS)
    outputs = []
    a = seq(range(3), outputs=outputs)
    prefill(manager, a)
    outputs.append(3)  # position 3 fills block 0
    manager.prepare_append(a, [])
    manager.register(a, len(a))
    partial = seq(range(3))
    assert manager.blocks_needed(partial) == 1  # the partial key is gone
    full = seq(range(4))
    manager.allocate(full)
    assert full.block_table == a.block_table and full.num_computed == 4


def test_prefix_caching_off_shares_nothing():
    manager = BlockManager(16, BS, prefix_caching=False)
    a, b = seq(range(8)), seq(range(8))
    prefill(manager, a)
    manager.allocate(b)
    assert b.num_computed == 0 and not set(a.block_table) & set(b.block_table)


@pytest.mark.parametrize("n", [1, BS - 1, BS, BS + 1])
def test_ref_counts_balance_after_random_sharing(n, fresh_seed):
    rng = random.Random(fresh_seed)
    manager = BlockManager(64, BS)
    live = []
    for _ in range(30):
        if live and rng.random() < 0.4:
            manager.release(live.pop(rng.randrange(len(live))))
            continue
        s = seq([rng.randrange(3) for _ in range(n)] + [rng.randrange(2) for _ in range(rng.randrange(6))])
        if manager.blocks_needed(s) <= manager.num_free:
            prefill(manager, s)
            live.append(s)
    held = {}
    for s in live:
        for b in s.block_table:
            held[b] = held.get(b, 0) + 1
    for block in manager.blocks:
        assert block.ref_count == held.get(block.block_id, 0)
        assert (block.ref_count == 0) == (block.block_id in manager.free)
