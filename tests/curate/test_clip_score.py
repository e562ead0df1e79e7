"""CLIP scoring (curate/clip_score.py) with a tiny randomly initialised open_clip model on real
photos, against a one-text-at-a-time reference computed here with open_clip directly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from judgefree.testing.material import make_record

from judgefree.curate.clip_score import ClipConfig, ClipScorer
from judgefree.store.records import file_sha256

LONG = " ".join(["a very long winding description of the astronaut in a white suit"] * 12)  # > 77 tokens


def _record(i, image, chosen, rejected):
    record = make_record(i, None, None)
    record.image, record.image_sha256 = str(image), file_sha256(image)
    record.chosen_text, record.rejected_text = chosen, rejected
    return record


def _reference_score(scorer: ClipScorer, image_path, text: str, kind: str) -> float | None:
    """Mean over segments of 2.5*max(cos,0) (or cos), each text and the image encoded alone."""
    from PIL import Image

    with torch.inference_mode():
        image = scorer.preprocess(Image.open(image_path).convert("RGB")).unsqueeze(0)
        img = torch.nn.functional.normalize(scorer.model.encode_image(image).float(), dim=-1)[0]
        values = []
        for piece in scorer.segments(text):
            txt = torch.nn.functional.normalize(scorer.model.encode_text(scorer.tokenizer([piece])).float(), dim=-1)[0]
            cos = float(txt @ img)
            values.append(2.5 * max(cos, 0.0) if kind == "clipscore" else cos)
    return sum(values) / len(values) if values else None


@pytest.mark.parametrize("kind", ["clipscore", "cosine"])
def test_scores_match_the_reference(tiny_scorer, photo_dir, kind):
    scorer = ClipScorer(tiny_scorer.model, tiny_scorer.preprocess, tiny_scorer.tokenizer, "cpu", kind,
                        image_batch=2, text_batch=3)
    photos = sorted(photo_dir.iterdir())
    records = [
        _record(0, photos[0], "An astronaut poses. She holds a helmet, e.g. a white one.", "A cat sleeps on a sofa."),
        _record(1, photos[1], "A ginger cat looks at the camera!\n- whiskers\n- ears", LONG),
        _record(2, photos[4], "A man with a camera (grey-scale photo).", "   "),  # empty rejected
        _record(3, photos[0], "Same image again.", "Dr. Who? No."),
    ]
    scores = scorer.score_records(records)
    assert [s.pair_id for s in scores] == ["p0", "p1", "p2", "p3"]
    for record, score in zip(records, scores):
        for role in ("chosen", "rejected"):
            text = getattr(record, f"{role}_text")
            expected = _reference_score(scorer, record.image, text, kind)
            got = getattr(score, f"{role}_score")
            assert (got is None) == (expected is None)
            if expected is not None:
                assert got == pytest.approx(expected, abs=1e-5)
            assert getattr(score, f"{role}_segments") == len(scorer.segments(text))
    assert scores[1].rejected_segments > 1  # the long sentence was cut to fit
    assert scores[2].rejected_score is None and scores[2].error is None
    if kind == "clipscore":
        assert all(0.0 <= s.chosen_score <= 2.5 for s in scores)


def test_each_image_encoded_once_and_texts_batched(tiny_scorer, photo_dir, monkeypatch):
    photos = sorted(photo_dir.iterdir())
    records = [_record(i, photos[i % 2], f"Photo {i}. Second sentence.", f"Other {i}.") for i in range(6)]
    image_rows, text_rows = [], []
    model = tiny_scorer.model
    encode_image, encode_text = model.encode_image, model.encode_text
    monkeypatch.setattr(model, "encode_image", lambda x, **kw: image_rows.append(len(x)) or encode_image(x, **kw))
    monkeypatch.setattr(model, "encode_text", lambda x, **kw: text_rows.append(len(x)) or encode_text(x, **kw))
    tiny_scorer.score_records(records)
    assert sum(image_rows) == 2  # six pairs, two distinct images
    assert sum(text_rows) == 18 and max(text_rows) == tiny_scorer.text_batch == 7


def test_unreadable_or_changed_image_gives_an_error_not_a_crash(tiny_scorer, photo_dir, tmp_path):
    from judgefree.testing.material import write_corrupt_image

    photos = sorted(photo_dir.iterdir())
    broken = write_corrupt_image(tmp_path / "broken.png")
    changed = tmp_path / "changed.png"
    changed.write_bytes(photos[0].read_bytes())
    gone = tmp_path / "gone.png"
    gone.write_bytes(photos[0].read_bytes())
    records = [_record(0, photos[1], "A cat.", "A dog."), _record(1, broken, "A cat.", "A dog."),
               _record(2, changed, "A cat.", "A dog."), _record(3, gone, "A.", "B.")]
    changed.write_bytes(photos[2].read_bytes())  # the files changed / vanished after "generation"
    gone.unlink()
    scores = tiny_scorer.score_records(records)
    assert scores[0].error is None and scores[0].chosen_score is not None
    assert "UnidentifiedImageError" in scores[1].error
    assert "changed since generation" in scores[2].error
    assert "FileNotFoundError" in scores[3].error
    assert all(s.chosen_score is None and s.rejected_score is None for s in scores[1:])


def test_load_errors_are_clear(tiny_clip_files):
    config, weights = tiny_clip_files
    with pytest.raises(ValueError, match="unknown open_clip model 'No-Such-CLIP'"):
        ClipScorer.load(ClipConfig(model="No-Such-CLIP", weights=None))
    with pytest.raises(FileNotFoundError, match="model config file not found"):
        ClipScorer.load(ClipConfig(model=str(config.with_name("absent.json"))))
    with pytest.raises(FileNotFoundError, match="neither a file nor a pretrained tag"):
        ClipScorer.load(ClipConfig(model=str(config), weights=str(weights) + ".missing"))
    with pytest.raises(ValueError, match="score kind"):
        ClipConfig(kind="cider")


def test_loaded_weights_are_the_saved_ones(tiny_scorer, tiny_clip_files):
    from safetensors.torch import load_file

    saved = load_file(str(tiny_clip_files[1]))
    state = tiny_scorer.model.state_dict()
    assert saved.keys() == state.keys()
    assert all(torch.equal(saved[k], state[k]) for k in saved)
    assert dataclasses.asdict(ClipConfig())["model"] == "ViT-L-14-336"  # the paper's default CLIP
