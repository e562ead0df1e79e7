"""Pair generation throughput: the engine against two transformers baselines, same run.

    python bench/generate.py                     # CPU: tiny random LLaVA and LLaVA-on-SmolLM2-135M
    python bench/generate.py --gpu               # GPU: LLaVA-1.5-7B shapes, random bf16 weights

Each method makes one pair (two responses, h from "fixed:0" and "gaussian:0.5,0.15") per
image with EOS ignored, so every response has exactly --new-tokens tokens. Baselines
(testing/baseline.py): "two-forward" runs each response alone, one forward per path per
token, each path with its own cache; "batched" runs both paths of --batch responses in one
forward per token; both keep only the last position's logits (``logits_to_keep=1``, as
transformers' ``generate``). "engine, no prefix sharing" is the engine with its prefix cache
off: the gap to "engine" is what sharing the prompts buys. Slow baselines may run on the
first --baseline-images images only: rates are per pair and per token, so they compare.
Methods are interleaved, --rounds rounds (order rotated), medians with min/max, the load
average before and after. A second table counts the language-model token-rows each method
runs and prints the bound they imply and measured / bound. On the GPU the table also gives
the engine's decode roofline fraction: (weight bytes + KV bytes read per decode step) / step
time, over the device's measured copy bandwidth.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _timing import (  # bench/ is on sys.path
    copy_bandwidth_gbs,
    device_name,
    interleaved,
    load_average,
    load_line,
    spread,
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


def _count(pairs) -> int:
    for pair in pairs:
        for c in (pair.chosen, pair.rejected):
            if c.error:
                raise RuntimeError(f"generation failed: {c.error}")
    return sum(len(p.chosen.token_ids) + len(p.rejected.token_ids) for p in pairs)


def measure(folder: Path, images, args, device: str, dtype: torch.dtype, engine_options: dict) -> dict:
    """One checkpoint: every method timed once per round, methods interleaved (bench/_timing.py)."""
    kwargs = dict(sampling=SamplingParams(temperature=args.temperature, ignore_eos=True),
                  max_new_tokens=args.new_tokens, seed=0)
    # the baseline first: on a GPU the engine sizes its KV cache from the memory left free
    baseline = TransformersBaseline(folder, dtype=dtype, device=device)
    engine = Engine.from_pretrained(folder, dtype=dtype, device=device, **engine_options)
    warm = {**kwargs, "max_new_tokens": 4}
    engine.generate_pairs(images[:2], PROMPT, **warm)
    baseline.generate_pairs(images[:1], PROMPT, **warm)
    baseline.generate_pairs(images[:2], PROMPT, batched=True, **warm)
    two_images = images[: args.baseline_images or len(images)]
    batched_images = images[: args.batched_images or len(images)]
    stats: dict = {}

    def engine_run(sharing: bool):
        def run():
            engine.config.prefix_caching = sharing  # read by the scheduler each generate call
            before = dict(engine.stats)
            pairs = engine.generate_pairs(images, PROMPT, **kwargs)
            stats[sharing] = {k: engine.stats[k] - before[k] for k in engine.stats}
            return pairs
        return run

    methods = {
        "engine": engine_run(True),
        "engine, no prefix sharing": engine_run(False),
        "two-forward": lambda: baseline.generate_pairs(two_images, PROMPT, **kwargs),
        f"batched ({args.batch})": lambda: baseline.generate_pairs(batched_images, PROMPT, batched=True,
                                                                    batch_size=args.batch, **kwargs),
    }
    counts = {"engine": len(images), "engine, no prefix sharing": len(images), "two-forward": len(two_images),
              f"batched ({args.batch})": len(batched_images)}
    sync = torch.cuda.synchronize if device == "cuda" else None
    load_before = load_average()
    samples, results = interleaved(methods, rounds=args.rounds, sync=sync)
    load_after = load_average()
    engine.config.prefix_caching = True
    rows = [dict(method=name, images=counts[name], samples=samples[name], tokens=_count(results[name]))
            for name in methods]
    rows[0]["stats"], rows[1]["stats"] = stats[True], stats[False]
    work = token_work(baseline, images, kwargs, args.batch, stats[True], stats[False])
    out = dict(rows=rows, work=work, load=load_line(load_before, load_after),
               weight_bytes=_lm_bytes(engine), kv_bytes_per_token=_kv_bytes_per_token(engine))
    del engine, baseline
    _free()
    return out


def token_work(baseline, images, kwargs, batch_size: int, shared: dict, unshared: dict) -> dict:
    """Token-rows each method runs through the language model for ``images`` (prefill + decode).

    On a CPU a forward's cost grows with the token-rows it processes, so a method that runs R
    times fewer of them is at most ~R times faster from sharing and skipping alone (attention's
    growth with context and the vision tower aside): the bound the table prints."""
    from judgefree.generation.pairs import build_pair_requests

    plan = build_pair_requests(images, PROMPT, "fixed:0", "gaussian:0.5,0.15", kwargs["sampling"],
                               kwargs["max_new_tokens"], kwargs["seed"])
    rows = []  # (prompt length, has an image) per LM row
    for request in plan.requests:
        prompt = baseline.prompts.build(request.prompt, request.image, request.context)
        rows.append([len(prompt.cond_ids)] + ([len(prompt.uncond_ids)] if request.h > 0 else []))
    steps = kwargs["max_new_tokens"] - 1  # the prefill forward gives the first token
    two = sum(sum(r) + len(r) * steps for r in rows)
    batched_prefill = batched_real = batched_decode = 0
    for start in range(0, len(rows), batch_size):
        chunk = [n for r in rows[start:start + batch_size] for n in r]
        batched_prefill += len(chunk) * max(chunk)
        batched_real += sum(chunk)
        batched_decode += len(chunk) * steps
    return dict(
        responses=len(rows), lm_rows=sum(len(r) for r in rows), uncond_skipped=sum(len(r) == 1 for r in rows),
        prompt_tokens=batched_real, two_forward=two, batched_prefill=batched_prefill,
        batched_padding=batched_prefill - batched_real, batched=batched_prefill + batched_decode,
        engine_prefill=shared["prefill_tokens"], engine=shared["prefill_tokens"] + shared["decode_rows"],
        unshared_prefill=unshared["prefill_tokens"], unshared=unshared["prefill_tokens"] + unshared["decode_rows"],
        images=len(images), baseline_image_encodes=len(rows))


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


def table(title: str, measured: dict, bandwidth_gbs: float | None, rounds: int) -> str:
    rows, work = measured["rows"], measured["work"]
    for row in rows:
        row["median"], row["min"], row["max"] = spread(row["samples"])
        per_image = row["tokens"] / row["images"]
        row["tokens_s"] = row["tokens"] / row["median"]
        row["tokens_s_lo"], row["tokens_s_hi"] = row["tokens"] / row["max"], row["tokens"] / row["min"]
        row["pairs_s"] = row["tokens_s"] / per_image
    two = next(r for r in rows if r["method"] == "two-forward")
    batched = next(r for r in rows if r["method"].startswith("batched"))
    lines = [f"### {title}", "", f"{rounds} rounds, methods interleaved (order rotated each round); "
             "median seconds [min, max]; rates from the median; " + measured["load"], "",
             "| method | images | seconds, median [min, max] | pairs/s | tokens/s [range] | vs two-forward | vs batched |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['images']} | {r['median']:.2f} [{r['min']:.2f}, {r['max']:.2f}] "
                     f"| {r['pairs_s']:.3f} | {r['tokens_s']:.1f} [{r['tokens_s_lo']:.1f}, {r['tokens_s_hi']:.1f}] "
                     f"| {r['tokens_s'] / two['tokens_s']:.2f}x | {r['tokens_s'] / batched['tokens_s']:.2f}x |")
    engine, unshared = rows[0], rows[1]
    lines += ["", f"Where the gain comes from ({work['images']} images, {work['responses']} responses, "
              f"{work['lm_rows']} LM rows: {work['uncond_skipped']} h=0 responses run no unconditional row, "
              "in every method): language-model token-rows per method (prefill + decode).", "",
              "| method | prefill token-rows | total token-rows | padding | image encodes | bound: batched rows / method rows | measured vs batched | measured / bound |",
              "|---|---|---|---|---|---|---|---|"]
    scale = work["images"] / batched["images"]  # the batched baseline may run on a subset
    entries = [("batched baseline", work["batched_prefill"], work["batched"], work["batched_padding"],
                work["baseline_image_encodes"], batched),
               ("two-forward baseline", work["prompt_tokens"], work["two_forward"], 0, work["baseline_image_encodes"], two),
               ("engine, no prefix sharing", work["unshared_prefill"], work["unshared"], 0, work["responses"], unshared),
               ("engine", work["engine_prefill"], work["engine"], 0, work["images"], engine)]
    for name, prefill, total, padding, encodes, row in entries:
        bound = work["batched"] / total
        speed = row["tokens_s"] / batched["tokens_s"]
        lines.append(f"| {name} | {prefill} | {total} | {padding} | {encodes} | {bound:.2f}x | {speed:.2f}x | {speed / bound:.2f} |")
    lines += ["", "The bound assumes a forward costs in proportion to its token-rows (true of the linear layers "
              "on a CPU); padding, the shared prefixes (one unconditional prompt for all, one image prompt per "
              "pair) and the skipped rows are what the engine saves. Measured / bound below 1 is per-step "
              "overhead (or batching the baseline profits from); above 1, cheaper work per row "
              f"(e.g. attention, vision tower once per image). Token counts scale to {work['images']} images "
              f"(x{scale:.0f} for the batched subset)."]
    stats = engine["stats"]
    if stats.get("decode_steps"):
        step_ms = 1e3 * stats["decode_seconds"] / stats["decode_steps"]
        rows_per_step = stats["decode_rows"] / stats["decode_steps"]
        lines += ["", f"engine (last round): {stats['prefill_tokens']} prefill tokens in {stats['prefill_seconds']:.2f} s, "
                      f"{stats['decode_steps']} decode steps of {rows_per_step:.1f} rows on average, "
                      f"{step_ms:.1f} ms per decode step, {stats['preemptions']} preemptions"]
        if bandwidth_gbs:
            moved = stats["decode_steps"] * measured["weight_bytes"] + stats["decode_context_tokens"] * measured["kv_bytes_per_token"]
            achieved = moved / stats["decode_seconds"] / 1e9
            lines.append(f"decode roofline: {achieved:.0f} GB/s of weights + KV read per second vs "
                         f"{bandwidth_gbs:.0f} GB/s measured copy bandwidth = {achieved / bandwidth_gbs:.1%}")
    return "\n".join(lines) + "\n"


def cpu_checkpoints(work: Path, tiny_only: bool = False) -> list[tuple[str, Path, dict]]:
    from judgefree.assets.checkpoints import build_tiny_llava, demo_llava_path

    tiny = build_tiny_llava(work / "tiny-llava", hidden=128, layers=4, image_size=112, patch_size=14, seed=0)
    options = dict(max_model_len=1024, max_kv_blocks=4096)
    out = [("tiny random LLaVA (Llama 4x128, CLIP 112px: 64 image tokens)", tiny, options)]
    if not tiny_only:
        out.append(("LLaVA on SmolLM2-135M (CLIP 224px: 256 image tokens)", demo_llava_path(), options))
    return out


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
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method, interleaved (>= 3 for a table)")
    parser.add_argument("--tiny-only", action="store_true", help="CPU: the tiny random LLaVA only")
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
        args.baseline_images = args.baseline_images or 4
        checkpoints, device, dtype, bandwidth = cpu_checkpoints(work, args.tiny_only), "cpu", torch.float32, None
    images = distinct_photos(args.images)
    header = (f"pair generation, {args.images} images, {args.new_tokens} new tokens per response (EOS ignored), "
              f"temperature {args.temperature}, h: fixed:0 / gaussian:0.5,0.15; device: {device_name(torch.device(device))}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}\n\n")
    print(header, flush=True)
    text = header
    for title, folder, options in checkpoints:
        section = table(title, measure(folder, images, args, device, dtype, options), bandwidth, args.rounds)
        print(section, flush=True)
        text += section + "\n"
    if args.out:
        write_atomic(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
