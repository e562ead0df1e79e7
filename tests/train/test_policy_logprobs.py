"""The trainer's policy log-probs: at step 0 they equal the reference log-probs the engine
recorded (same tokens, same prompt, same image), they match transformers' own full-logits
forward, and the lm_head never produces [tokens, vocab] logits. fp32 on the CPU; tolerance
1e-4 absolute per token (two implementations, different summation orders)."""

from __future__ import annotations

import pytest
import torch
from judgefree.testing.material import text_records, write_store

from judgefree.train.config import TrainConfig
from judgefree.train.data import IGNORE_INDEX, collate, load_examples
from judgefree.train.model import load_policy
from judgefree.train.policy import ResponseLogprobs, batch_logprobs

CPU = torch.device("cpu")


def _policy(folder, finetune="lora"):
    loaded = load_policy(folder, TrainConfig(finetune=finetune), CPU)
    return loaded, ResponseLogprobs(loaded.model, loaded.architecture)


def _per_token(policy, batch):
    with torch.no_grad():
        token = policy(batch.input_ids, batch.attention_mask, batch.targets, batch.pixel_values)
    mask = batch.targets != IGNORE_INDEX
    return [token[row][mask[row]] for row in range(token.shape[0])]


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_step0_policy_logprobs_equal_the_engines_reference(train_llava_dir, llava_store, finetune):
    examples, _ = load_examples(llava_store)
    loaded, policy = _policy(train_llava_dir, finetune)
    batch = collate(examples, loaded.pad_id, loaded.pixels)
    rows = _per_token(policy, batch)
    n = len(examples)
    for i, example in enumerate(examples):
        torch.testing.assert_close(rows[i], torch.tensor(example.chosen_ref), atol=1e-4, rtol=0)
        torch.testing.assert_close(rows[n + i], torch.tensor(example.rejected_ref), atol=1e-4, rtol=0)
    chosen, rejected = batch_logprobs(policy, batch)
    torch.testing.assert_close(chosen.sums.detach(), batch.ref_chosen, atol=1e-3, rtol=0)
    torch.testing.assert_close(rejected.sums.detach(), batch.ref_rejected, atol=1e-3, rtol=0)


def test_step0_holds_in_padded_batches_of_swapped_pairs(train_llava_dir, varied_store):
    """Rows of different lengths (right padding) and pairs whose roles curation exchanged: each
    row still scores its own response after its own prompt and its own pair's image, whatever
    micro-batch it lands in."""
    examples, _ = load_examples(varied_store)
    loaded, policy = _policy(train_llava_dir)
    lengths = {len(e.chosen_ids) for e in examples} | {len(e.rejected_ids) for e in examples}
    assert len(lengths) >= 5  # the batch really is ragged
    for group in ([0, 1, 2, 3], [3, 0], [2], [1, 3]):
        chunk = [examples[i] for i in group]
        batch = collate(chunk, loaded.pad_id, loaded.pixels)
        assert bool((batch.attention_mask == 0).any())  # padding present
        rows = _per_token(policy, batch)
        n = len(chunk)
        for i, example in enumerate(chunk):
            torch.testing.assert_close(rows[i], torch.tensor(example.chosen_ref), atol=1e-4, rtol=0)
            torch.testing.assert_close(rows[n + i], torch.tensor(example.rejected_ref), atol=1e-4, rtol=0)
    # The images matter: pairing each prompt with another pair's picture breaks the equality.
    batch = collate(examples, loaded.pad_id, loaded.pixels)
    with torch.no_grad():
        wrong = policy(batch.input_ids, batch.attention_mask, batch.targets, batch.pixel_values.roll(1, 0))
    mask = batch.targets != IGNORE_INDEX
    assert (wrong[0][mask[0]] - torch.tensor(examples[0].chosen_ref)).abs().max() > 1e-2


def test_step0_on_the_real_smollm2_text_model(tmp_path):
    """A real 30-layer model: near-ties and long sums expose any off-by-one or prompt mismatch."""
    from judgefree.engine import Engine
    from judgefree.assets.smollm import smollm2_path

    engine = Engine.from_pretrained(smollm2_path(), max_model_len=256, max_kv_blocks=64,
                                    attention_backend="torch", sampling_backend="torch")
    contexts = ["A black cat sleeps on a red sofa by the window.", "Boats."]  # prompts of different lengths
    stops = (28, 30, 42, 282)  # ",", ".", ":", " of": responses that end on a stop token, as on EOS
    records = text_records(engine, contexts, max_new_tokens=8, stop_token_ids=stops)
    del engine
    finished = [(r.chosen_finish_reason, r.chosen_token_ids) for r in records]
    finished += [(r.rejected_finish_reason, r.rejected_token_ids) for r in records]
    assert any(reason == "stop" for reason, _ in finished), finished
    assert all(ids[-1] in stops for reason, ids in finished if reason == "stop")  # the stop token is scored
    examples, _ = load_examples(write_store(tmp_path / "curated", records))
    assert len({len(e.prompt_ids) for e in examples}) == 2
    loaded, policy = _policy(smollm2_path())
    assert loaded.architecture.name == "llama"
    rows = _per_token(policy, collate(examples, loaded.pad_id))  # one right-padded batch of 4 rows
    for i, example in enumerate(examples):
        torch.testing.assert_close(rows[i], torch.tensor(example.chosen_ref), atol=1e-4, rtol=0)
        torch.testing.assert_close(rows[2 + i], torch.tensor(example.rejected_ref), atol=1e-4, rtol=0)


def test_matches_transformers_full_logits_forward_and_never_calls_the_lm_head(train_llava_dir, llava_store):
    from transformers import LlavaForConditionalGeneration

    examples, _ = load_examples(llava_store)
    loaded, policy = _policy(train_llava_dir, "full")

    def forbidden(*args, **kwargs):
        raise AssertionError("lm_head.forward was called: full [tokens, vocab] logits")

    loaded.model.lm_head.forward = forbidden
    batch = collate(examples[:2], loaded.pad_id, loaded.pixels)
    ours = _per_token(policy, batch)

    hf = LlavaForConditionalGeneration.from_pretrained(train_llava_dir).eval()
    pixel_rows = torch.cat([batch.pixel_values, batch.pixel_values])  # one image per row
    with torch.no_grad():
        logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, pixel_values=pixel_rows).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    for row in range(batch.input_ids.shape[0]):
        mask = batch.targets[row] != IGNORE_INDEX
        expected = logprobs[row][mask].gather(1, batch.targets[row][mask][:, None])[:, 0]
        torch.testing.assert_close(ours[row], expected, atol=1e-4, rtol=0)


def test_image_token_count_mismatch_is_a_clear_error(train_llava_dir, llava_store):
    examples, _ = load_examples(llava_store)
    loaded, policy = _policy(train_llava_dir)
    batch = collate(examples[:1], loaded.pad_id, loaded.pixels)
    image_token = loaded.model.get_base_model().config.image_token_id
    position = int((batch.input_ids[0] == image_token).nonzero()[0, 0])
    batch.input_ids[0, position] = 5  # one image token fewer in the chosen row
    with pytest.raises(ValueError, match="image tokens"):
        policy(batch.input_ids, batch.attention_mask, batch.targets, batch.pixel_values)
    with pytest.raises(ValueError, match="pixel_values"):
        policy(batch.input_ids, batch.attention_mask, batch.targets, None)
