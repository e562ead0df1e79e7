"""Scheduler: token budget, chunked prefill, two-path lockstep, preemption and resumption,
finishing. Driven with fake tokens (no model)."""

import hashlib
import random

import pytest
from judgefree.engine.config import EngineConfig
from judgefree.engine.scheduler import Scheduler
from judgefree.engine.response import Response, ResponsePath, Status, StepResult
from judgefree.engine.types import SamplingParams

EOS = 999


def group(index, cond_len, uncond_len=None, max_new=4, base=0):
    outputs = []
    cond = ResponsePath([base + index * 100 + i for i in range(cond_len)], outputs)
    uncond = ResponsePath([50_000 + i for i in range(uncond_len)], outputs) if uncond_len else None
    return Response(index, cond, uncond, 0.5 if uncond else 0.0, index, SamplingParams(), max_new,
                         frozenset({EOS}), output_ids=outputs)


def run(scheduler, token=7, limit=500):
    """Drive the scheduler to the end with a constant token; returns the batches."""
    batches = []
    while scheduler.has_work():
        batch, failed = scheduler.schedule()
        assert not failed
        assert batch is not None
        batches.append(batch)
        n = len(batch.sampled)
        scheduler.postprocess(batch, StepResult([token] * n, [0.0] * n, [0.0] * n))
        assert len(batches) < limit
    return batches


def test_prefill_respects_the_token_budget_and_samples_complete_groups():
    config = EngineConfig(block_size=4, max_num_batched_tokens=20, max_num_seqs=8)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=64)
    groups = [group(i, 7, 3) for i in range(4)]  # 10 tokens each (7 + 3; the uncond prompts are shared)
    for g in groups:
        scheduler.add(g)
    batch, _ = scheduler.schedule()
    # group 1's unconditional prompt is group 0's: only its last token is recomputed, so
    # 10 + 8 tokens fit; group 2 (8 more) does not and waits for the next step
    assert batch.is_prefill and batch.num_tokens == 10 + 8
    assert batch.sampled == groups[:2] and groups[1].uncond.num_scheduled == 1
    assert groups[1].uncond.block_table == groups[0].uncond.block_table


def test_a_prompt_longer_than_the_budget_is_chunked_and_both_paths_finish_together():
    config = EngineConfig(block_size=4, max_num_batched_tokens=5, max_num_seqs=4)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=64)
    g = group(0, 12, 6, max_new=1)
    scheduler.add(g)
    seen = []
    while scheduler.has_work():
        batch, _ = scheduler.schedule()
        assert batch.num_tokens <= 5
        seen.append((g.cond.num_scheduled, g.uncond.num_scheduled, bool(batch.sampled)))
        if not batch.sampled:  # neither path computes its last position before the final step
            assert g.cond.compute_start + g.cond.num_scheduled < len(g.cond)
            assert g.uncond.compute_start + g.uncond.num_scheduled < len(g.uncond)
        scheduler.postprocess(batch, StepResult([7] * len(batch.sampled), [0.0] * len(batch.sampled), [0.0] * len(batch.sampled)))
    assert sum(c + u for c, u, _ in seen) == 18
    assert [s for *_, s in seen].count(True) == 1 and seen[-1][2]
    assert g.output_ids == [7]


def test_decode_runs_both_paths_of_every_running_group_in_one_batch():
    config = EngineConfig(block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=64)
    groups = [group(0, 5, 3), group(1, 6), group(2, 4, 3)]
    for g in groups:
        scheduler.add(g)
    batch, _ = scheduler.schedule()
    scheduler.postprocess(batch, StepResult([1, 2, 3], [0.0] * 3, [0.0] * 3))
    batch, _ = scheduler.schedule()
    assert not batch.is_prefill
    assert batch.paths == [groups[0].cond, groups[0].uncond, groups[1].cond, groups[2].cond, groups[2].uncond]
    assert all(s.num_scheduled == 1 for s in batch.paths)
    assert groups[0].cond.tokens(len(groups[0].cond) - 1, len(groups[0].cond)) == [1]
    assert groups[0].uncond.last_token() == 1  # both paths continue from the same sampled token


def test_finishing_on_eos_length_and_context():
    config = EngineConfig(block_size=4, max_num_batched_tokens=64)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=9)
    stop, length, context = group(0, 3, max_new=10), group(1, 3, max_new=2), group(2, 6, max_new=10)
    for g in (stop, length, context):
        scheduler.add(g)
    batch, _ = scheduler.schedule()
    scheduler.postprocess(batch, StepResult([EOS, 5, 5], [0.0] * 3, [0.0] * 3))
    assert stop.finish_reason == "stop" and stop.output_ids == [EOS]
    run(scheduler)
    assert length.finish_reason == "length" and len(length.output_ids) == 2
    assert context.finish_reason == "length" and len(context.cond) == 9  # the context is full
    assert all(b.ref_count == 0 for b in scheduler.block_manager.blocks)


def test_running_out_of_blocks_preempts_and_resumes_without_losing_tokens():
    config = EngineConfig(block_size=2, max_num_batched_tokens=64, max_num_seqs=8)
    scheduler = Scheduler(config, num_blocks=12, max_model_len=64)
    groups = [group(i, 3, max_new=8) for i in range(3)]
    for g in groups:
        scheduler.add(g)
    run(scheduler)
    assert scheduler.num_preemptions > 0
    for g in groups:
        assert g.status is Status.FINISHED and g.output_ids == [7] * 8
    assert scheduler.block_manager.num_free == 12


def test_a_response_larger_than_the_whole_cache_fails_alone():
    config = EngineConfig(block_size=2, max_num_batched_tokens=64)
    scheduler = Scheduler(config, num_blocks=4, max_model_len=64)
    big, small = group(0, 20), group(1, 3, max_new=2)
    scheduler.add(big)
    scheduler.add(small)
    batch, failed = scheduler.schedule()
    assert failed == [big] and big.finish_reason == "error" and "KV blocks" in big.error
    assert batch.sampled == [small]


@pytest.mark.parametrize("max_num_seqs", [1, 2])
def test_max_num_seqs_bounds_the_running_responses(max_num_seqs):
    config = EngineConfig(block_size=4, max_num_batched_tokens=64, max_num_seqs=max_num_seqs)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=64)
    for i in range(4):
        scheduler.add(group(i, 3, 2, max_new=3))
    for batch in run(scheduler):
        assert len(batch.responses) <= max_num_seqs


def test_a_response_that_outgrows_the_whole_cache_alone_fails_instead_of_looping():
    """Decoding alone, it needs a block the cache does not have: no empty batch, no
    preempt/readmit loop, a clear error, every block back in the pool."""
    config = EngineConfig(block_size=2, max_num_batched_tokens=64)
    scheduler = Scheduler(config, num_blocks=4, max_model_len=64)
    g = group(0, 3, max_new=20)  # 3 + 20 tokens need 12 blocks
    scheduler.add(g)
    for _ in range(50):
        if not scheduler.has_work():
            break
        batch, _ = scheduler.schedule()
        assert batch is None or batch.paths
        if batch is not None:
            n = len(batch.sampled)
            scheduler.postprocess(batch, StepResult([7] * n, [0.0] * n, [0.0] * n))
    assert not scheduler.has_work()
    assert g.finish_reason == "error" and "KV blocks" in g.error
    assert scheduler.block_manager.num_free == 4


def test_admission_never_overcommits_when_one_path_evicts_the_others_cached_prefix():
    """A free cached block whose cached child another response still holds: the
    conditional path's fresh blocks evict it, and with it the unconditional path's whole
    cached chain. Admission checks each path after the one before it holds its blocks."""
    config = EngineConfig(block_size=2, max_num_batched_tokens=64, max_num_seqs=8)
    scheduler = Scheduler(config, num_blocks=12, max_model_len=64)
    a, b = group(0, 4, max_new=3), group(1, 4, max_new=6)
    b.cond.prompt_ids[:] = a.cond.prompt_ids[:] = [1, 2, 3, 4]  # the same prompt: b shares a's blocks
    scheduler.add(a)
    scheduler.add(b)
    for _ in range(5):  # both decode 5s; a publishes block [5, 5] first (b holds a duplicate), a finishes
        batch, _ = scheduler.schedule()
        n = len(batch.sampled)
        scheduler.postprocess(batch, StepResult([5] * n, [0.0] * n, [0.0] * n))
    manager = scheduler.block_manager
    assert a.finish_reason == "length" and b.output_ids == [5] * 5
    parents = [blk.block_id for blk in manager.blocks if blk.ref_count == 0 and blk.key is not None]
    assert len(parents) == 1  # a's [5, 5]: free, still cached; b holds the cached block after it
    manager.free = dict.fromkeys(parents + [i for i in manager.free if i != parents[0]])  # least recently used
    outputs = []
    g = Response(2, ResponsePath(list(range(40, 52)), outputs), ResponsePath([1, 2, 3, 4] + [5] * 5, outputs),
                      0.5, 0, SamplingParams(), 2, frozenset({EOS}), output_ids=outputs)
    assert sum(manager.blocks_needed(s) for s in g.paths) == manager.num_free  # the estimate says it fits
    scheduler.add(g)
    batches = run(scheduler)
    assert g.status is Status.FINISHED and g.finish_reason == "length" and len(g.output_ids) == 2
    assert all(batch.paths for batch in batches)
    assert manager.num_free == 12


class _FakeModel:
    """Stands in for the model runner: each step writes, for every position it computes,
    the identity of the path's history up to it into the simulated cache; every position
    a path attends to must hold its own history's identity. Tokens are a pure function of
    (seed, step, both paths' histories)."""

    def __init__(self, block_size):
        self.block_size, self.cache = block_size, {}

    @staticmethod
    def identity(seq, position):
        image = seq.image_hash if seq.image_span is not None and seq.image_span[0] <= position else None
        return image, tuple(seq.tokens(0, position + 1))

    def slot(self, seq, position):
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def step(self, batch):
        bs = self.block_size
        for src, dst in batch.copies:
            for offset in range(bs):
                self.cache[dst * bs + offset] = self.cache.get(src * bs + offset)
        for seq in batch.paths:
            for position in range(max(seq.compute_start, seq.num_computed), seq.compute_start + seq.num_scheduled):
                self.cache[self.slot(seq, position)] = self.identity(seq, position)
        for seq in batch.paths:
            for position in range(seq.compute_start + seq.num_scheduled):
                assert self.cache.get(self.slot(seq, position)) == self.identity(seq, position)
        tokens = []
        for g in batch.sampled:
            histories = [self.identity(s, len(s) - 1) for s in g.paths]
            digest = hashlib.blake2b(repr((g.seed, g.step, histories)).encode(), digest_size=4).digest()
            tokens.append(int.from_bytes(digest, "little") % 5 + EOS - 4)  # EOS now and then
        return tokens


def _random_groups(rng, n):
    groups = []
    for i in range(n):
        outputs = []
        image = f"img{rng.randrange(2)}"
        text = [rng.randrange(3) for _ in range(rng.randrange(1, 6))]
        cond = ResponsePath([1] + [9] * 4 + text, outputs, image, (1, 5))
        kind = rng.randrange(3)
        uncond = None if kind == 0 else ResponsePath([1] + text if kind == 1 else [1, 2, 3], outputs)
        groups.append(Response(i, cond, uncond, 0.5 if uncond else 0.0, rng.randrange(3), SamplingParams(),
                                    rng.randrange(1, 12), frozenset({EOS}), output_ids=outputs))
    return groups


def _simulate(groups, block_size, num_blocks, budget, max_num_seqs, max_model_len):
    config = EngineConfig(block_size=block_size, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs)
    scheduler = Scheduler(config, num_blocks, max_model_len)
    model = _FakeModel(block_size)
    for g in groups:
        scheduler.add(g)
    steps = 0
    while scheduler.has_work():
        batch, failed = scheduler.schedule()
        assert not failed and batch is not None and batch.paths
        tokens = model.step(batch)
        scheduler.postprocess(batch, StepResult(tokens, [0.0] * len(tokens), [0.0] * len(tokens)))
        held = {}
        for g in groups:
            for s in g.paths:
                for b in s.block_table:
                    held[b] = held.get(b, 0) + 1
        for block in scheduler.block_manager.blocks:
            assert block.ref_count == held.get(block.block_id, 0)
            assert (block.ref_count == 0) == (block.block_id in scheduler.block_manager.free)
        steps += 1
        assert steps < 2000
    assert scheduler.block_manager.num_free == num_blocks
    return [(g.output_ids, g.finish_reason) for g in groups], scheduler.num_preemptions


def test_shared_prefixes_copy_on_write_and_preemption_keep_every_path_reading_its_own_history(fresh_seed):
    """Random two-path responses sharing images, instructions and partial tail blocks, run
    with the smallest cache the engine allows (two full-length paths), small budgets and
    few slots: at every step each path reads exactly its own tokens (and image) at every
    position, ref counts equal holders, and the outputs equal a roomy run's."""
    preemptions = 0
    for trial in range(40):
        rng = random.Random(fresh_seed + trial)
        n, block_size, max_model_len = rng.randrange(2, 10), rng.choice([1, 2, 3, 4]), 20
        per_seq = -(-max_model_len // block_size)
        roomy, _ = _simulate(_random_groups(random.Random(trial), n), block_size, 400, 64, 16, max_model_len)
        tight, count = _simulate(_random_groups(random.Random(trial), n), block_size,
                                 rng.randrange(2 * per_seq, 2 * per_seq + 4), rng.choice([2, 3, 7, 64]),
                                 rng.choice([1, 3, 16]), max_model_len)
        assert tight == roomy, trial
        preemptions += count
    assert preemptions > 0
