"""Text two-path decoding on Llama checkpoints: a tiny random one and the real SmolLM2-135M
(converted once per machine from its GGUF), against transformers."""

import pytest
import torch
from judgefree.testing.material import GREEDY
from judgefree.engine import Engine, Request
from judgefree.testing.baseline import TransformersBaseline


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM

    engine = Engine.from_pretrained(smollm2_dir, max_model_len=512, max_kv_blocks=256)
    return engine, AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()


def hf_greedy(hf, prompt_ids, new_tokens):
    ids = torch.tensor([prompt_ids])
    out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


def test_smollm2_greedy_equals_transformers_generate(smollm2):
    engine, hf = smollm2
    requests = [Request("What is the capital of France?", sampling=GREEDY, max_new_tokens=16),
                Request("Name three colours of the rainbow.", sampling=GREEDY, max_new_tokens=24)]
    completions = engine.generate(requests)
    for completion, request in zip(completions, requests):
        # transformers stops at the same EOS; a length-limited response equals its prefix
        assert completion.token_ids == hf_greedy(hf, completion.prompt_token_ids, request.max_new_tokens)
        assert completion.finish_reason == ("stop" if completion.token_ids[-1] in engine.stop_ids else "length")
    assert "Paris" in completions[0].text


def test_smollm2_two_path_greedy_equals_the_baseline_and_logprobs_match(smollm2, smollm2_dir):
    engine, hf = smollm2
    request = Request("What animal is it?", context="My pet barks and fetches sticks.", h=0.4,
                      sampling=GREEDY, max_new_tokens=12)
    ours = engine.generate([request])[0]
    theirs = TransformersBaseline(smollm2_dir).generate([request])[0]
    assert ours.token_ids == theirs.token_ids
    ids = torch.tensor([ours.prompt_token_ids + ours.token_ids])
    with torch.no_grad():
        logits = hf(ids).logits[0].float()
    n = len(ours.prompt_token_ids)
    expected = torch.log_softmax(logits, -1)[n - 1:-1].gather(1, torch.tensor(ours.token_ids)[:, None])[:, 0]
    torch.testing.assert_close(torch.tensor(ours.cond_logprobs), expected, atol=1e-4, rtol=0)


def test_tiny_llama_context_is_the_conditional_path(tiny_llama_dir):
    engine = Engine.from_pretrained(tiny_llama_dir, max_model_len=128, max_kv_blocks=64)
    baseline = TransformersBaseline(tiny_llama_dir)
    requests = [Request("Continue.", context="Once upon a time", h=h, sampling=GREEDY, max_new_tokens=8)
                for h in (0.0, 0.6)]
    ours = engine.generate(requests)
    assert [c.token_ids for c in ours] == [c.token_ids for c in baseline.generate(requests)]
    assert [c.token_ids for c in ours] == [c.token_ids for c in baseline.generate_batched(requests)]
    cond = engine.prompts.build("Continue.", context="Once upon a time")
    assert ours[0].prompt_token_ids == cond.cond_ids and len(cond.uncond_ids) < len(cond.cond_ids)
    failed = engine.generate([Request("Describe.", image="photo.jpg")])[0]
    assert failed.finish_reason == "error" and "no vision tower" in failed.error


def test_a_request_without_context_runs_one_path_whatever_its_h(tiny_llama_dir):
    """Without a context both paths would read the same prompt; mixing a distribution with
    itself changes nothing, so no unconditional path is computed and the sampled tokens are
    those of h = 0 (the drawn h is still recorded)."""
    from judgefree.engine.types import SamplingParams

    engine = Engine.from_pretrained(tiny_llama_dir, max_model_len=128, max_kv_blocks=64)
    sampled = SamplingParams(temperature=1.0)
    runs = {}
    for h in (0.0, 0.7):
        before = engine.stats["prefill_tokens"]
        runs[h] = engine.generate([Request("Tell me a story.", h=h, sampling=sampled, seed=11, max_new_tokens=6)])[0]
        runs[h, "prefill"] = engine.stats["prefill_tokens"] - before
    assert runs[0.7].token_ids == runs[0.0].token_ids and runs[0.7].h == 0.7
    assert runs[0.7].logprobs == pytest.approx(runs[0.0].logprobs, abs=1e-5)
    assert runs[0.7, "prefill"] == runs[0.0, "prefill"]
