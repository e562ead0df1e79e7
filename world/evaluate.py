"""Captions of evaluation scenes by a model in the engine, scored against exact truth, and
written as JSONL (scene id, true objects with colours, the caption)."""

from __future__ import annotations

from pathlib import Path

from judgefree.world.grammar import PROMPT
from judgefree.world.metric import WorldMetrics, evaluate
from judgefree.world.render import render
from judgefree.world.scenes import Scene


def write_images(scenes: list[Scene], folder: Path, size: int) -> list[Path]:
    """PNG files of ``scenes`` (written once; a file already there is kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for scene in scenes:
        path = folder / f"{scene.scene_id}.png"
        if not path.is_file():
            tmp = path.with_suffix(".tmp.png")
            render(scene, size).save(tmp)
            tmp.replace(path)
        paths.append(path)
    return paths


def captions(model: str | Path, images: list[Path], max_new_tokens: int = 48, device: str | None = None) -> list[str]:
    """Greedy captions (the CHAIR convention) from the engine."""
    from judgefree.engine import Engine
    from judgefree.engine.types import Request, SamplingParams

    engine = Engine.from_pretrained(str(model), device=device, max_model_len=256)
    done = engine.generate([Request(PROMPT, image=str(p), sampling=SamplingParams(temperature=0.0),
                                    max_new_tokens=max_new_tokens) for p in images])
    failed = [d.error for d in done if d.error]
    if failed:
        raise RuntimeError(f"{len(failed)} captions failed, e.g. {failed[0]}")
    return [d.text.strip() for d in done]


def evaluate_model(model: str | Path, scenes: list[Scene], images: list[Path], jsonl: Path | None = None,
                   device: str | None = None) -> tuple[WorldMetrics, list[str]]:

    texts = captions(model, images, device=device)
    return _scored(texts, scenes, jsonl), texts


def evaluate_recorded(recorded: Path, scenes: list[Scene], jsonl: Path | None = None) -> tuple[WorldMetrics, list[str]] | None:
    """The metrics of captions an earlier ``evaluate_model`` wrote to ``recorded`` (the world
    build's m0 captions: greedy, so recaptioning would give the same text), rescored against
    ``scenes``; None when the file is missing or holds other scenes."""
    import json

    if not recorded.is_file():
        return None
    rows = [json.loads(line) for line in recorded.read_text().splitlines() if line.strip()]
    if [(r.get("scene_id"), r.get("objects")) for r in rows] != [(s.scene_id, s.truth()) for s in scenes]:
        return None
    texts = [r["caption"] for r in rows]
    return _scored(texts, scenes, jsonl), texts


def _scored(texts: list[str], scenes: list[Scene], jsonl: Path | None) -> WorldMetrics:
    metrics, scores = evaluate(texts, scenes)
    if jsonl is not None:
        _write_jsonl(jsonl, [{"scene_id": s.scene_id, "objects": s.truth(), "caption": t,
                              "hallucinated": [m.word for m in sc.chair.hallucinated],
                              "wrong_colours": sc.wrong_colour}
                             for s, t, sc in zip(scenes, texts, scores)])
    return metrics


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
