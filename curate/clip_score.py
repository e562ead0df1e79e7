"""Sentence-level CLIP scores of both responses of each pair (open_clip, any model).

A response's score is the mean over its segments (sentences, cut to fit the tokenizer's
context, see ``sentences.py``) of ``2.5 * max(cos, 0)`` (CLIPScore, Hessel et al. 2021;
``kind="clipscore"``, the default) or of the raw cosine (``kind="cosine"``) between the
L2-normalised image and text embeddings. Each image is encoded once per chunk of pairs, texts
in large batches. torch and open_clip are imported only when a scorer is loaded.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from judgefree.store.records import PairRecord
from judgefree.curate.sentences import segments

SCORE_KINDS = ("clipscore", "cosine")
CLIPSCORE_WEIGHT = 2.5


@dataclass(slots=True)
class ClipConfig:
    """Which CLIP to load: ``model`` is an open_clip name, ``local-dir:PATH``, or a model config
    JSON file (registered under its stem); ``weights`` is a file or an open_clip pretrained tag."""

    model: str = "ViT-L-14-336"
    weights: str | None = "openai"
    kind: str = "clipscore"
    device: str = "auto"
    precision: str = "auto"
    quick_gelu: bool | None = None  # None: as the pretrained tag says (OpenAI weights need it)
    text_batch: int = 256
    image_batch: int = 32

    def __post_init__(self) -> None:
        if self.kind not in SCORE_KINDS:
            raise ValueError(f"score kind must be one of {', '.join(SCORE_KINDS)}, got {self.kind!r}")
        if self.text_batch < 1 or self.image_batch < 1:
            raise ValueError("text_batch and image_batch must be >= 1")

    def to_manifest(self) -> dict[str, Any]:
        """The settings that change the scores (a resumed run must repeat them)."""
        return {"model": self.model, "weights": self.weights, "kind": self.kind, "quick_gelu": self.quick_gelu,
                "precision": self.resolved_precision()}

    def resolved_device(self) -> str:
        import torch

        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device

    def resolved_precision(self) -> str:
        """fp16 on CUDA, fp32 elsewhere, unless set."""
        if self.precision != "auto":
            return self.precision
        return "fp16" if self.resolved_device().startswith("cuda") else "fp32"


@dataclass(slots=True)
class PairScore:
    pair_id: str
    chosen_score: float | None
    rejected_score: float | None
    chosen_segments: int
    rejected_segments: int
    error: str | None = None


def _resolve_model_name(model: str) -> str:
    import open_clip

    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"--clip: model config file not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    if model.startswith(("local-dir:", "hf-hub:")) or model in open_clip.list_models():
        return model
    raise ValueError(f"--clip: unknown open_clip model {model!r} (see open_clip.list_models(), "
                     "or pass a model config .json or local-dir:PATH)")


class ClipScorer:
    """A loaded CLIP model, its preprocessing and tokenizer, and the score kind."""

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, device: Any, kind: str = "clipscore",
                 *, image_batch: int = 32, text_batch: int = 256):
        if kind not in SCORE_KINDS:
            raise ValueError(f"score kind must be one of {', '.join(SCORE_KINDS)}, got {kind!r}")
        self.model, self.preprocess, self.tokenizer, self.device, self.kind = model, preprocess, tokenizer, device, kind
        self.context_length = int(tokenizer.context_length)
        self.image_batch, self.text_batch = image_batch, text_batch

    @classmethod
    def load(cls, config: ClipConfig) -> ClipScorer:
        import open_clip
        import torch

        name = _resolve_model_name(config.model)
        weights, quick_gelu = config.weights, config.quick_gelu
        if weights and not os.path.isfile(weights):
            tags = open_clip.list_pretrained_tags_by_model(name) if ":" not in name else []
            if weights not in tags:
                raise FileNotFoundError(f"--clip-weights: {weights!r} is neither a file nor a pretrained tag "
                                        f"of {name} (tags: {', '.join(tags) or 'none'})")
            if quick_gelu is None:
                quick_gelu = bool(open_clip.get_pretrained_cfg(name, weights).get("quick_gelu", False))
        elif weights and quick_gelu is None and ":" not in name and "openai" in open_clip.list_pretrained_tags_by_model(name):
            # A local file for an architecture OpenAI released (ViT-L-14-336 is LLaVA-1.5's encoder):
            # most likely OpenAI's weights, which were trained with QuickGELU.
            quick_gelu = bool(open_clip.get_pretrained_cfg(name, "openai").get("quick_gelu", False))
            print(f"note: --clip-weights is a file for {name}; assuming OpenAI's weights "
                  f"(quick_gelu={quick_gelu}); pass --no-clip-quick-gelu for other weights", file=sys.stderr)
        device = torch.device(config.resolved_device())
        precision = config.resolved_precision()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights or None, precision=precision, device=device,
                force_quick_gelu=bool(quick_gelu),
            )
        except RuntimeError as err:
            if not weights or os.path.isfile(weights):
                raise
            # a pretrained tag needs a download: say so plainly on an offline machine
            raise FileNotFoundError(f"--clip-weights: could not fetch pretrained '{weights}' weights of {name} "
                                    f"({err}); pass a local weights file instead") from err
        return cls(model.eval(), preprocess, open_clip.get_tokenizer(name), device, config.kind,
                   image_batch=config.image_batch, text_batch=config.text_batch)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in the CLIP context, start and end tokens included."""
        if hasattr(self.tokenizer, "encode") and hasattr(self.tokenizer, "sot_token_id"):
            return len(self.tokenizer.encode(text)) + 2  # open_clip's SimpleTokenizer (OpenAI BPE)
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer
        if inner is not None:
            return len(inner(self.tokenizer.clean_fn(text))["input_ids"])
        raise ValueError(f"cannot count tokens with tokenizer {type(self.tokenizer).__name__}")

    def segments(self, text: str) -> list[str]:
        return segments(text, self.count_tokens, self.context_length)

    def encode_images(self, images: list[Any]) -> Any:
        """L2-normalised fp32 embeddings of PIL images, ``image_batch`` at a time."""
        import torch

        dtype = next(self.model.visual.parameters()).dtype
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), self.image_batch):
                pixels = torch.stack([self.preprocess(im) for im in images[i:i + self.image_batch]])
                out.append(self.model.encode_image(pixels.to(self.device, dtype)).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def encode_texts(self, texts: list[str]) -> Any:
        """L2-normalised fp32 embeddings of texts (each must fit the context), ``text_batch`` at a time."""
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.text_batch):
                tokens = self.tokenizer(texts[i:i + self.text_batch]).to(self.device)
                out.append(self.model.encode_text(tokens).float())
        if not out:
            return torch.empty(0, 0)
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def segment_scores(self, cosines: Any) -> Any:
        return CLIPSCORE_WEIGHT * cosines.clamp(min=0) if self.kind == "clipscore" else cosines

    def score_records(self, records: list[PairRecord]) -> list[PairScore]:
        """Scores of both responses of every record; a pair whose image cannot be read (or has
        changed since generation) gets no scores and an ``error``."""
        import torch

        from judgefree.images import decode_image

        images, image_row, errors = [], {}, {}
        for record in records:
            if record.image_sha256 in image_row:
                continue
            try:
                data = Path(record.image).read_bytes()
                if hashlib.sha256(data).hexdigest() != record.image_sha256:
                    raise ValueError("image file changed since generation (content hash differs)")
                images.append(decode_image(data, record.image))  # 16-bit scaled as the engine does
                image_row[record.image_sha256] = len(images) - 1
            except (OSError, ValueError) as err:
                errors[record.pair_id] = f"{type(err).__name__}: {err}"
        image_emb = self.encode_images(images) if images else None
        texts, owner, spans = [], [], []
        for record in records:
            row_spans = []
            for text in (record.chosen_text, record.rejected_text):
                pieces = self.segments(text) if record.pair_id not in errors else []
                row_spans.append((len(texts), len(texts) + len(pieces)))
                texts.extend(pieces)
                owner.extend([image_row.get(record.image_sha256, 0)] * len(pieces))
            spans.append(row_spans)
        per_segment = torch.empty(0)
        if texts:
            text_emb = self.encode_texts(texts)
            rows = image_emb[torch.tensor(owner, device=image_emb.device)]
            per_segment = self.segment_scores((text_emb * rows).sum(-1))
        results = []
        for record, ((c0, c1), (r0, r1)) in zip(records, spans):
            def mean(a: int, b: int) -> float | None:
                return float(per_segment[a:b].double().mean()) if b > a else None
            results.append(PairScore(record.pair_id, mean(c0, c1), mean(r0, r1), c1 - c0, r1 - r0,
                                     errors.get(record.pair_id)))
        return results
