"""CLIP scoring throughput: ``ClipScorer.score_records`` (each image once, texts in batches)
against a naive baseline in the same run (image re-encoded per response, one text per forward).

    .venv/bin/python bench/bench_curate_clip.py --model ViT-B-32 --pairs 32          # CPU
    .venv/bin/python bench/bench_curate_clip.py --model ViT-L-14-336 --pairs 512     # GPU

Random weights (throughput does not depend on them); responses are synthetic 4-8 sentence
descriptions; every pair has its own image (scikit-image's bundled photos, shifted crops), so
the batched side encodes as many distinct images as there are pairs and the naive side two
per pair. The two methods are interleaved over --rounds rounds; medians with min/max and the
load average before and after.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path


def _pairs(n: int, folder: Path):
    import skimage.data
    from PIL import Image

    from judgefree.store.records import PairRecord, file_sha256

    from generate import distinct_photos  # bench/generate.py

    photos = []
    for i, pixels in enumerate(distinct_photos(n, size=224)):
        path = folder / f"photo{i}.png"
        Image.fromarray(pixels).save(path)
        photos.append(path)
    if len({file_sha256(p) for p in photos}) != n:
        raise RuntimeError("the benchmark needs one distinct image per pair")
    words = "a cat dog man woman red blue table chair sits stands near under holds large small".split()
    rng = random.Random(0)

    def text() -> str:
        return " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(6, 20))).capitalize() + "."
                        for _ in range(rng.randint(4, 8)))

    records = []
    for i in range(n):
        image = photos[i]
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=None, help="also write the table here")
    args = parser.parse_args()

    import torch
    from _timing import interleaved, load_average, load_line, spread, write_atomic

    from judgefree.curate.clip_score import ClipConfig, ClipScorer

    scorer = ClipScorer.load(ClipConfig(model=args.model, weights=None, device=args.device))
    with tempfile.TemporaryDirectory() as tmp:
        records = _pairs(args.pairs, Path(tmp))
        scorer.score_records(records[:4])  # warm-up
        sync = torch.cuda.synchronize if scorer.device.type == "cuda" else None
        before = load_average()
        samples, results = interleaved({"naive: image per response, text per call": lambda: _naive(scorer, records),
                                        "score_records (batched)": lambda: scorer.score_records(records)},
                                       rounds=args.rounds, sync=sync)
        after = load_average()
    n_texts, scores = results["naive: image per response, text per call"], results["score_records (batched)"]
    assert n_texts == sum(s.chosen_segments + s.rejected_segments for s in scores)
    device = torch.cuda.get_device_name() if scorer.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    lines = [f"{args.model}, {args.pairs} pairs ({args.pairs} distinct images), {n_texts} sentences, {device}",
             f"{args.rounds} rounds interleaved; {load_line(before, after)}",
             f"{'method':<42}{'seconds median [min, max]':>28}{'pairs/s':>10}{'sentences/s':>14}"]
    medians = {}
    for name, seconds in samples.items():
        median, low, high = spread(seconds)
        medians[name] = median
        lines.append(f"{name:<42}{f'{median:.3f} [{low:.3f}, {high:.3f}]':>28}{args.pairs / median:>10.1f}"
                     f"{n_texts / median:>14.1f}")
    naive, batched = medians.values()
    lines.append(f"speed-up (medians): {naive / batched:.2f}x")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        write_atomic(args.out, text)


if __name__ == "__main__":
    main()
