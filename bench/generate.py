"""Pair generation throughput: the engine against two transformers baselines, same run.

    python bench/generate.py                     # CPU: tiny random LLaVA and LLaVA-on-SmolLM2-135M
    python bench/generate.py --gpu               # GPU: LLaVA-1.5-7B shapes, random bf16 weights

Each method makes one pair (two responses, h from "fixed:0" and "gaussian:0.5,0.15") per
image with EOS ignored, so every response has exactly --new-tokens tokens. Baselines
(testing/baseline.py): "two-forward" runs each response alone, one forward per path per
token, each path with its own cache; "batched" runs both paths of --batch responses in one
forward per token. Slow baselines may run on the first --baseline-images images only: rates
are per pair and per token, so they compare. On the GPU the table also gives the engine's
decode roofline fraction: (weight bytes + KV bytes read per decode step) / step time, over
the device's measured copy bandwidth. Timings are wall clock after a warm-up run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import (  # bench/ is on sys.path
    copy_bandwidth_gbs,
    device_name,
    write_atomic,
)
from judgefree.engine import Engine, SamplingParams
from judgefree.testing.baseline import TransformersBaseline

PROMPT = "Describe this image in detail."


def distinct_photos(count: int, size: int = 160) -> list[np.ndarray]:
    """``count`` different real photos (scikit-image's set, shifted crops), size x size RGB."""
    from skimage import data
    from skimage.transform import resize

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    out = []
    for i in range(count):
        photo = sources[i % len(sources)]
        shift = 3 * (i // len(sources))
        crop = photo[shift:shift + photo.shape[0] * 3 // 4, shift:shift + photo.shape[1] * 3 // 4]
        out.append((resize(crop, (size, size)) * 255).astype(np.uint8))
    return out


def _timed(fn) -> tuple[float, object]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def _count(pairs) -> int:
    for pair in pairs:
        for c in (pair.chosen, pair.rejected):
            if c.error:
                raise RuntimeError(f"generation failed: {c.error}")
    return sum(len(p.chosen.token_ids) + len(p.rejected.token_ids) for p in pairs)


def measure(folder: Path, images, args, device: str, dtype: torch.dtype, engine_options: dict) -> list[dict]:
    """Rows of the table for one checkpoint: engine, two-forward, batched."""
    kwargs = dict(sampling=SamplingParams(temperature=args.temperature, ignore_eos=True),
                  max_new_tokens=args.new_tokens, seed=0)
    rows = [_engine_row(folder, images, kwargs, device, dtype, engine_options)]
    _free()
    rows += _baseline_rows(folder, images, kwargs, args, device, dtype)
    _free()
    return rows


def _engine_row(folder, images, kwargs, device, dtype, options) -> dict:
    engine = Engine.from_pretrained(folder, dtype=dtype, device=device, **options)
    engine.generate_pairs(images[:2], PROMPT, **{**kwargs, "max_new_tokens": 4})  # warm-up
    before = dict(engine.stats)
    seconds, pairs = _timed(lambda: engine.generate_pairs(images, PROMPT, **kwargs))
    stats = {k: engine.stats[k] - before[k] for k in engine.stats}
    return dict(method="engine", images=len(images), seconds=seconds, tokens=_count(pairs), stats=stats,
                weight_bytes=_lm_bytes(engine), kv_bytes_per_token=_kv_bytes_per_token(engine))


def _baseline_rows(folder, images, kwargs, args, device, dtype) -> list[dict]:
    baseline = TransformersBaseline(folder, dtype=dtype, device=device)
    baseline.generate_pairs(images[:1], PROMPT, **{**kwargs, "max_new_tokens": 4})  # warm-up
    subset = images[: args.baseline_images or len(images)]
    seconds, pairs = _timed(lambda: baseline.generate_pairs(subset, PROMPT, **kwargs))
    rows = [dict(method="two-forward", images=len(subset), seconds=seconds, tokens=_count(pairs))]
    subset = images[: args.batched_images or len(images)]
    seconds, pairs = _timed(lambda: baseline.generate_pairs(subset, PROMPT, batched=True, batch_size=args.batch, **kwargs))
    rows.append(dict(method=f"batched ({args.batch})", images=len(subset), seconds=seconds, tokens=_count(pairs)))
    return rows


def _lm_bytes(engine) -> int:
    lm = engine.model.language_model
    return sum(p.numel() * p.element_size() for p in lm.parameters())


def _kv_bytes_per_token(engine) -> int:
    cache = engine.runner.kv_cache  # [2, layers, blocks, block_size, kv_heads, head_dim]
    return 2 * cache.shape[1] * cache.shape[4] * cache.shape[5] * cache.element_size()


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def table(title: str, rows: list[dict], bandwidth_gbs: float | None) -> str:
    for row in rows:
        row["pairs_s"] = row["images"] / row["seconds"]
        row["tokens_s"] = row["tokens"] / row["seconds"]
    two = next(r for r in rows if r["method"] == "two-forward")
    batched = next(r for r in rows if r["method"].startswith("batched"))
    lines = [f"### {title}", "",
             "| method | images | seconds | pairs/s | tokens/s | vs two-forward | vs batched |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['images']} | {r['seconds']:.2f} | {r['pairs_s']:.3f} | {r['tokens_s']:.1f} "
                     f"| {r['tokens_s'] / two['tokens_s']:.2f}x | {r['tokens_s'] / batched['tokens_s']:.2f}x |")
    stats = rows[0]["stats"]
    if stats.get("decode_steps"):
        step_ms = 1e3 * stats["decode_seconds"] / stats["decode_steps"]
        rows_per_step = stats["decode_rows"] / stats["decode_steps"]
        lines += ["", f"engine: {stats['prefill_tokens']} prefill tokens in {stats['prefill_seconds']:.2f} s, "
                      f"{stats['decode_steps']} decode steps of {rows_per_step:.1f} rows on average, "
                      f"{step_ms:.1f} ms per decode step, {stats['preemptions']} preemptions"]
        if bandwidth_gbs:
            moved = stats["decode_steps"] * rows[0]["weight_bytes"] + stats["decode_context_tokens"] * rows[0]["kv_bytes_per_token"]
            achieved = moved / stats["decode_seconds"] / 1e9
            lines.append(f"decode roofline: {achieved:.0f} GB/s of weights + KV read per second vs "
                         f"{bandwidth_gbs:.0f} GB/s measured copy bandwidth = {achieved / bandwidth_gbs:.1%}")
    return "\n".join(lines) + "\n"


def cpu_checkpoints(work: Path) -> list[tuple[str, Path, dict]]:
    from judgefree.assets.checkpoints import build_tiny_llava, demo_llava_path

    tiny = build_tiny_llava(work / "tiny-llava", hidden=128, layers=4, image_size=112, patch_size=14, seed=0)
    options = dict(max_model_len=1024, max_kv_blocks=4096)
    return [("tiny random LLaVA (Llama 4x128, CLIP 112px: 64 image tokens)", tiny, options),
            ("LLaVA on SmolLM2-135M (CLIP 224px: 256 image tokens)", demo_llava_path(), options)]


def gpu_checkpoint(work: Path, donor: str | None) -> tuple[str, Path, dict]:
    """Random LLaVA-1.5-7B-shaped checkpoint (bf16) written once into ``work``.

    Tokenizer, processor (336 px CLIP crops) and chat template come from ``donor``, a tiny
    LLaVA folder (built here from the SmolLM2 tokenizer when not given; the GPU machine may
    lack the GGUF, so a donor built elsewhere can be carried along)."""
    from judgefree.assets.checkpoints import build_tiny_llava
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    folder = work / "llava-7b-shapes-random"
    if not (folder / "model.safetensors.index.json").is_file():
        source = Path(donor) if donor else build_tiny_llava(work / "donor", image_size=336, patch_size=14)
        tokenizer = AutoTokenizer.from_pretrained(source)
        text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                           num_key_value_heads=32, vocab_size=-(-len(tokenizer) // 64) * 64,
                           max_position_embeddings=4096, rms_norm_eps=1e-5,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                  image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
        config = LlavaConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_seq_length=576,
                             tie_word_embeddings=False)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cuda"):
                model = LlavaForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() >= 2:
                    param.normal_(0, 0.02)
                else:
                    param.fill_(0.0 if name.endswith("bias") else 1.0)
        model.save_pretrained(folder, max_shard_size="4GB")
        del model
        _free()
        for item in source.iterdir():
            if item.is_file() and not item.name.startswith(("model", "config")):
                (folder / item.name).write_bytes(item.read_bytes())
    return ("LLaVA-1.5-7B shapes, random bf16 weights (576 image tokens)", folder,
            dict(max_model_len=2048, max_num_seqs=512))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="LLaVA-1.5-7B shapes on CUDA (bf16)")
    parser.add_argument("--images", type=int, default=None, help="pairs to make (CPU 8, GPU 256)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per response (CPU 32, GPU 128)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16, help="responses per batched-baseline forward")
    parser.add_argument("--baseline-images", type=int, default=None, help="two-forward baseline on this many (GPU 8)")
    parser.add_argument("--batched-images", type=int, default=None, help="batched baseline on this many (GPU 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workdir", default=None, help="where checkpoints are built (default: a temp dir)")
    parser.add_argument("--out", default=None, help="also write the tables here (markdown)")
    parser.add_argument("--donor", default=None, help="--gpu: tiny LLaVA folder whose tokenizer/processor to use")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-generate-"))
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu needs CUDA", file=sys.stderr)
            return 2
        args.images, args.new_tokens = args.images or 256, args.new_tokens or 128
        args.baseline_images, args.batched_images = args.baseline_images or 8, args.batched_images or 64
        checkpoints, device, dtype = [gpu_checkpoint(work, args.donor)], "cuda", torch.bfloat16
        bandwidth = copy_bandwidth_gbs(torch.device("cuda"), 2048)
    else:
        args.images, args.new_tokens = args.images or 8, args.new_tokens or 32
        checkpoints, device, dtype, bandwidth = cpu_checkpoints(work), "cpu", torch.float32, None
    images = distinct_photos(args.images)
    header = (f"pair generation, {args.images} images, {args.new_tokens} new tokens per response (EOS ignored), "
              f"temperature {args.temperature}, h: fixed:0 / gaussian:0.5,0.15; device: {device_name(torch.device(device))}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}\n\n")
    print(header, flush=True)
    text = header
    for title, folder, options in checkpoints:
        section = table(title, measure(folder, images, args, device, dtype, options), bandwidth)
        print(section, flush=True)
        text += section + "\n"
    if args.out:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
