"""CLIP scoring throughput: ``ClipScorer.score_records`` (each image once, texts in batches)
against a naive baseline in the same run (image re-encoded per response, one text per forward).

    .venv/bin/python bench/bench_curate_clip.py --model ViT-B-32 --pairs 32          # CPU
    .venv/bin/python bench/bench_curate_clip.py --model ViT-L-14-336 --pairs 512     # GPU

Random weights (throughput does not depend on them); responses are synthetic 4-8 sentence
descriptions; images are scikit-image's bundled photos.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path


def _pairs(n: int, folder: Path):
    import skimage.data
    from PIL import Image

    from judgefree.store.records import PairRecord, file_sha256

    photos = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        path = folder / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        photos.append(path)
    words = "a cat dog man woman red blue table chair sits stands near under holds large small".split()
    rng = random.Random(0)

    def text() -> str:
        return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 20))).capitalize() + "."
                        for _ in range(rng.randint(4, 8)))

    records = []
    for i in range(n):
        image = photos[i % len(photos)]
        records.append(PairRecord(
            pair_id=str(i), image=str(image), image_hash=None, image_sha256=file_sha256(image), prompt="Describe.",
            prompt_token_ids=[], chosen_text=text(), chosen_token_ids=[], chosen_h=0.0, chosen_seed=0,
            chosen_cond_logprobs=[], chosen_logprobs=[], chosen_finish_reason="stop", rejected_text=text(),
            rejected_token_ids=[], rejected_h=0.5, rejected_seed=1, rejected_cond_logprobs=[], rejected_logprobs=[],
            rejected_finish_reason="stop"))
    return records


def _naive(scorer, records) -> int:
    import torch
    from PIL import Image

    n_texts = 0
    with torch.inference_mode():
        for record in records:
            for text in (record.chosen_text, record.rejected_text):
                image = scorer.encode_images([Image.open(record.image).convert("RGB")])
                for piece in scorer.segments(text):
                    emb = scorer.encode_texts([piece])
                    scorer.segment_scores((emb * image).sum(-1))
                    n_texts += 1
    return n_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from judgefree.curate.clip_score import ClipConfig, ClipScorer

    scorer = ClipScorer.load(ClipConfig(model=args.model, weights=None, device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        records = _pairs(args.pairs, Path(tmp))
        scorer.score_records(records[:4])  # warm-up
        sync = torch.cuda.synchronize if scorer.device.type == "cuda" else (lambda: None)
        sync(); start = time.perf_counter()
        scores = scorer.score_records(records)
        sync(); batched = time.perf_counter() - start
        start = time.perf_counter()
        n_texts = _naive(scorer, records)
        sync(); naive = time.perf_counter() - start
    assert n_texts == sum(s.chosen_segments + s.rejected_segments for s in scores)
    device = torch.cuda.get_device_name() if scorer.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.model}, {args.pairs} pairs, {n_texts} sentences, {device}")
    print(f"{'method':<40}{'seconds':>10}{'pairs/s':>10}{'sentences/s':>14}")
    for name, seconds in (("naive: image per response, text per call", naive), ("score_records (batched)", batched)):
        print(f"{name:<40}{seconds:>10.3f}{args.pairs / seconds:>10.1f}{n_texts / seconds:>14.1f}")
    print(f"speed-up: {naive / batched:.2f}x")


if __name__ == "__main__":
    main()
