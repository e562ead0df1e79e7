"""The rendered TRL export fed to TRL's own DPOTrainer, unchanged: the batch TRL builds with
its own tokenisation holds exactly the prompt and response ids the engine generated, TRL's
reference log-probs equal the ones recorded during generation, and its step-0 loss is log 2.
Skipped when TRL is not installed (it is in the ``test`` extra). Checked TRL versions:
docs/trl_export.md."""

from __future__ import annotations

import dataclasses
import math

import pytest

from judgefree.store.export import export_trl
from judgefree.testing.material import varied_records, write_store

trl = pytest.importorskip("trl")


def _with_eos(record, model, processor):
    """The pair with EOS appended to the chosen response (the way a response that stopped is
    stored), its reference log-prob from a transformers forward of the seed model."""
    import torch
    from PIL import Image

    eos = processor.tokenizer.eos_token_id
    ids = record.chosen_token_ids + [eos]
    with Image.open(record.image) as picture:
        pixels = processor(images=[picture.convert("RGB")], text=["<image>"], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([record.prompt_token_ids + ids]), pixel_values=pixels).logits[0]
    eos_logprob = torch.log_softmax(logits[-2].float(), -1)[eos].item()
    return dataclasses.replace(record, pair_id=record.pair_id + "-eos", chosen_token_ids=ids,
                               chosen_cond_logprobs=record.chosen_cond_logprobs + [eos_logprob],
                               chosen_logprobs=record.chosen_logprobs + [eos_logprob], chosen_finish_reason="stop")


def _pairs_in_batch(batch) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(prompt ids, chosen ids, rejected ids) per pair, read back from TRL's padded batch."""
    half = batch["input_ids"].shape[0] // 2
    rows = []
    for row in range(batch["input_ids"].shape[0]):
        ids, attention, completion = (batch[k][row] for k in ("input_ids", "attention_mask", "completion_mask"))
        rows.append((tuple(ids[attention.bool() & ~completion.bool()].tolist()),
                     tuple(ids[completion.bool()].tolist())))
    assert all(rows[i][0] == rows[i + half][0] for i in range(half))  # both responses share the prompt
    return [(rows[i][0], rows[i][1], rows[i + half][1]) for i in range(half)]


def _reference_logps(trainer, batch):
    """TRL's own reference log-probs of a batch (its signature gained ``model`` in 1.9 or later)."""
    import inspect

    if "model" in inspect.signature(trainer.compute_ref_log_probs).parameters:
        return trainer.compute_ref_log_probs(trainer.model, batch)
    return trainer.compute_ref_log_probs(batch)


def _trainer(model_dir, dataset, output_dir):
    from peft import LoraConfig
    from transformers import AutoProcessor, LlavaForConditionalGeneration
    from trl import DPOConfig, DPOTrainer

    # bf16=False: DPOConfig defaults to bf16 autocast, on the CPU too, which moves log-probs by ~1e-3 per token.
    config = DPOConfig(output_dir=str(output_dir), per_device_train_batch_size=len(dataset), max_steps=1,
                       learning_rate=1e-3, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                       bf16=False, max_length=None, beta=0.1, disable_tqdm=True, seed=0,
                       dataloader_num_workers=0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    return DPOTrainer(model=LlavaForConditionalGeneration.from_pretrained(model_dir), args=config,
                      train_dataset=dataset, processing_class=AutoProcessor.from_pretrained(model_dir),
                      peft_config=lora)


@pytest.mark.slow  # ~15 s on 2 cores: TRL builds its trainer and takes one step
def test_trl_trains_on_exactly_the_generated_ids(tmp_path, monkeypatch, train_llava_dir, llava_records):
    import datasets
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(train_llava_dir)
    seed_model = LlavaForConditionalGeneration.from_pretrained(train_llava_dir).eval()
    # The engine's pairs, prefixes of them (a prefix keeps its recorded log-probs) with roles
    # swapped in every other pair, and one response that ends with EOS.
    prefixes = [dataclasses.replace(r, pair_id=f"{r.pair_id}-cut") for r in varied_records(llava_records)]
    records = llava_records + prefixes + [_with_eos(llava_records[3], seed_model, processor)]
    store = write_store(tmp_path / "store", records)
    out = tmp_path / "export" / "train.parquet"
    report = export_trl(store, out, model=train_llava_dir)  # rendered, image paths relative to export/
    by_id = {r.pair_id: r for r in records}
    exported = [r for r in records if r.pair_id not in {e["pair_id"] for e in report.inexact}]
    assert report.rows == len(exported) == len(records) - report.dropped
    assert report.rows >= 4 and report.dropped >= 1, report  # both kinds occur in this material

    monkeypatch.chdir(out.parent)  # relative image paths resolve from the export's folder
    dataset = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    trainer = _trainer(train_llava_dir, dataset, tmp_path / "trl")
    batch = next(iter(trainer.get_train_dataloader()))  # TRL's own tokenisation and collation
    expected = sorted((tuple(r.prompt_token_ids), tuple(r.chosen_token_ids), tuple(r.rejected_token_ids))
                      for r in exported)
    got = _pairs_in_batch(batch)
    assert sorted(got) == expected  # token for token, EOS included, nothing added
    assert any(pair[1][-1] == processor.tokenizer.eos_token_id for pair in got)

    # TRL recomputes the reference log-probs (it refuses precomputed ones for vision data):
    # they equal the ones the engine recorded while generating.
    ref_chosen, ref_rejected = _reference_logps(trainer, batch)
    recorded = {(p, c, j): (sum(by.chosen_cond_logprobs), sum(by.rejected_cond_logprobs))
                for by in exported for p, c, j in [(tuple(by.prompt_token_ids), tuple(by.chosen_token_ids),
                                                    tuple(by.rejected_token_ids))]}
    for index, key in enumerate(got):
        assert ref_chosen[index].item() == pytest.approx(recorded[key][0], abs=1e-3)
        assert ref_rejected[index].item() == pytest.approx(recorded[key][1], abs=1e-3)

    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 0

    # Every pair left out really would have been trained on other ids: TRL's collator on its
    # plainly decoded text gives a different tokenisation for the response reported.
    from PIL import Image

    for entry in report.inexact:
        record = by_id[entry["pair_id"]]
        decode = lambda ids: processor.tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
        row = {"prompt": dataset[0]["prompt"], "chosen": decode(record.chosen_token_ids),
               "rejected": decode(record.rejected_token_ids), "images": [Image.open(record.image).convert("RGB")]}
        (_, chosen, rejected), = _pairs_in_batch(trainer.data_collator([row]))
        differs = {"chosen": chosen != tuple(record.chosen_token_ids),
                   "rejected": rejected != tuple(record.rejected_token_ids)}
        assert all(differs[role] for role in entry["roles"]), entry
