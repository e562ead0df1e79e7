"""Scheduler: token budget, chunked prefill, two-path lockstep, preemption and resumption,
finishing. Driven with fake tokens (no model)."""

import pytest
from judgefree.engine.config import EngineConfig
from judgefree.engine.scheduler import Scheduler
from judgefree.engine.sequence import Sequence, SequenceGroup, Status
from judgefree.engine.types import SamplingParams

EOS = 999


def group(index, cond_len, uncond_len=None, max_new=4, base=0):
    outputs = []
    cond = Sequence([base + index * 100 + i for i in range(cond_len)], outputs)
    uncond = Sequence([50_000 + i for i in range(uncond_len)], outputs) if uncond_len else None
    return SequenceGroup(index, cond, uncond, 0.5 if uncond else 0.0, index, SamplingParams(), max_new,
                         frozenset({EOS}), output_ids=outputs)


def run(scheduler, token=7, limit=500):
    """Drive the scheduler to the end with a constant token; returns the batches."""
    batches = []
    while scheduler.has_work():
        batch, failed = scheduler.schedule()
        assert not failed
        assert batch is not None
        batches.append(batch)
        n = len(batch.sampling)
        scheduler.postprocess(batch, [token] * n, [0.0] * n, [0.0] * n)
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
    assert batch.sampling == groups[:2] and groups[1].uncond.num_scheduled == 1
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
        seen.append((g.cond.num_scheduled, g.uncond.num_scheduled, bool(batch.sampling)))
        if not batch.sampling:  # neither path computes its last position before the final step
            assert g.cond.compute_start + g.cond.num_scheduled < len(g.cond)
            assert g.uncond.compute_start + g.uncond.num_scheduled < len(g.uncond)
        scheduler.postprocess(batch, [7] * len(batch.sampling), [0.0] * len(batch.sampling), [0.0] * len(batch.sampling))
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
    scheduler.postprocess(batch, [1, 2, 3], [0.0] * 3, [0.0] * 3)
    batch, _ = scheduler.schedule()
    assert not batch.is_prefill
    assert batch.seqs == [groups[0].cond, groups[0].uncond, groups[1].cond, groups[2].cond, groups[2].uncond]
    assert all(s.num_scheduled == 1 for s in batch.seqs)
    assert groups[0].cond.tokens(len(groups[0].cond) - 1, len(groups[0].cond)) == [1]
    assert groups[0].uncond.last_token() == 1  # both paths continue from the same sampled token


def test_finishing_on_eos_length_and_context():
    config = EngineConfig(block_size=4, max_num_batched_tokens=64)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=9)
    stop, length, context = group(0, 3, max_new=10), group(1, 3, max_new=2), group(2, 6, max_new=10)
    for g in (stop, length, context):
        scheduler.add(g)
    batch, _ = scheduler.schedule()
    scheduler.postprocess(batch, [EOS, 5, 5], [0.0] * 3, [0.0] * 3)
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
    assert batch.sampling == [small]


@pytest.mark.parametrize("max_num_seqs", [1, 2])
def test_max_num_seqs_bounds_the_running_responses(max_num_seqs):
    config = EngineConfig(block_size=4, max_num_batched_tokens=64, max_num_seqs=max_num_seqs)
    scheduler = Scheduler(config, num_blocks=64, max_model_len=64)
    for i in range(4):
        scheduler.add(group(i, 3, 2, max_new=3))
    for batch in run(scheduler):
        assert len(batch.groups) <= max_num_seqs
