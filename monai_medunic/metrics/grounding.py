"""Grounding measured, not just drawn: does a saliency map point at the finding's lesion?

For an image with a lesion mask of a finding (the demo radiographs carry one per finding,
``manifest_datalist(..., truth=True)``) and a map computed for that finding's prompt:

* **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016,
  Sec. 5.1): a hit when the map's maximum lies inside the mask (or within ``tolerance`` pixels of
  it; Zhang et al. allow 15 pixels, the default here is 0). Tied maxima are replaced by their
  centroid. A **flat** map (max == min, e.g. a Grad-CAM whose ReLU removed everything) points
  nowhere: it is a miss, and it is counted under ``flat`` so that an empty map is seen as such.
* **mask IoU at a fixed threshold**: the map is scaled to [0, 1] by its own min and max, the pixels
  ``>= threshold`` (default 0.5) form the predicted region, and the IoU with the mask is reported
  (a flat map predicts nothing: IoU 0).

Both are reported per finding and per prompt language for every map method, next to a
**centre-of-image baseline** (:func:`centre_map`: 1 at the centre, falling with the normalised
elliptical distance; a method that does not beat it has not localised anything).

:func:`evaluate_grounding` computes the table from any map functions; :func:`grounding_report` runs
it for a trained bundle with :meth:`~monai_medunic.pretrained.PretrainedInference.similarity_map`
(both kinds) and prompt Grad-CAM (:mod:`monai_medunic.metrics.gradcam`); ``medunic grounding``
prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from monai_medunic.errors import DataError, MetricInputError

__all__ = [
    "GroundingCase",
    "normalise_map",
    "map_peak",
    "pointing_game_hit",
    "mask_iou",
    "centre_map",
    "score_map",
    "evaluate_grounding",
    "summarise_grounding",
    "grounding_table",
    "grounding_report",
    "cli_main",
    "GROUNDING_METHODS",
]

logger = logging.getLogger(__name__)

#: map methods of :func:`grounding_report`, in table order
GROUNDING_METHODS = ("similarity_map", "similarity_map_cosine", "gradcam", "centre")


@dataclass
class GroundingCase:
    """One image x finding x prompt language x method."""

    image_id: str
    finding: str
    language: str
    method: str
    hit: bool
    iou: float
    flat: bool


def _check_pair(saliency: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(saliency, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if s.ndim != 2 or s.shape != m.shape:
        raise MetricInputError(f"the map {s.shape} and the mask {m.shape} must be 2D arrays of one shape")
    if not np.isfinite(s).all():
        raise MetricInputError("the map holds NaN or infinite values")
    if not m.any():
        raise MetricInputError("the mask is empty: grounding needs a lesion to point at")
    return s, m


def normalise_map(saliency: Any) -> np.ndarray:
    """``(x - min) / (max - min)`` in [0, 1]; a flat map becomes zeros."""
    s = np.asarray(saliency, dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def map_peak(saliency: Any) -> tuple[float, float] | None:
    """``(row, column)`` of the map's maximum (the centroid of tied maxima); ``None`` for a flat map."""
    s = np.asarray(saliency, dtype=np.float64)
    hi = float(s.max())
    if hi <= float(s.min()):
        return None
    rows, cols = np.nonzero(s >= hi)
    return float(rows.mean()), float(cols.mean())


def pointing_game_hit(saliency: Any, mask: Any, tolerance: float = 0.0) -> bool:
    """Pointing game: the map's maximum (:func:`map_peak`) is inside ``mask`` or within ``tolerance`` pixels of it."""
    s, m = _check_pair(saliency, mask)
    peak = map_peak(s)
    if peak is None:
        return False
    r, c = int(round(peak[0])), int(round(peak[1]))
    if m[r, c]:
        return True
    if tolerance <= 0:
        return False
    rows, cols = np.nonzero(m)
    return bool(np.min((rows - peak[0]) ** 2 + (cols - peak[1]) ** 2) <= tolerance**2)


def mask_iou(saliency: Any, mask: Any, threshold: float = 0.5) -> float:
    """IoU of ``normalise_map(saliency) >= threshold`` with ``mask`` (0 for a flat map)."""
    if not 0.0 < threshold <= 1.0:
        raise MetricInputError(f"the IoU threshold must be in (0, 1], got {threshold}")
    s, m = _check_pair(saliency, mask)
    if map_peak(s) is None:
        return 0.0
    pred = normalise_map(s) >= threshold
    return float(np.logical_and(pred, m).sum() / np.logical_or(pred, m).sum())


def centre_map(shape: Sequence[int]) -> np.ndarray:
    """The centre-of-image baseline: ``1 - d / sqrt(2)`` with ``d`` the distance to the centre in half-sizes
    (1 at the centre, 0 at the corners); thresholded at 0.5 it is the central ellipse of ~39 % of the image."""
    h, w = int(shape[0]), int(shape[1])
    rows = (np.arange(h) + 0.5 - h / 2.0) / (h / 2.0)
    cols = (np.arange(w) + 0.5 - w / 2.0) / (w / 2.0)
    d = np.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)
    return (1.0 - d / math.sqrt(2.0)).astype(np.float32)


def score_map(saliency: Any, mask: Any, threshold: float = 0.5, tolerance: float = 0.0) -> dict[str, Any]:
    """``{"hit", "iou", "flat"}`` of one map against one mask."""
    return {
        "hit": pointing_game_hit(saliency, mask, tolerance),
        "iou": mask_iou(saliency, mask, threshold),
        "flat": map_peak(saliency) is None,
    }


MapFunction = Callable[[Any, str, str], np.ndarray]


def evaluate_grounding(
    samples: Iterable[Mapping[str, Any]],
    methods: Mapping[str, MapFunction],
    languages: Sequence[str],
    threshold: float = 0.5,
    tolerance: float = 0.0,
) -> list[GroundingCase]:
    """Score every map method on every (image, finding with a mask, prompt language).

    Args:
        samples: dicts with ``id``, ``image`` (anything the map functions take) and ``masks``
            ``{finding: (H, W) bool array}`` at the image's size.
        methods: name -> ``f(image, finding, language) -> (H, W) map``.
        languages: prompt languages.
    """
    cases: list[GroundingCase] = []
    for sample in samples:
        for finding, mask in sample["masks"].items():
            for language in languages:
                for name, method in methods.items():
                    scores = score_map(method(sample["image"], finding, language), mask, threshold, tolerance)
                    cases.append(GroundingCase(str(sample["id"]), finding, language, name, **scores))
    return cases


def summarise_grounding(cases: Sequence[GroundingCase]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{method: {finding or "all": {language: {"n", "pointing", "iou", "flat"}}}}``: the hit rate, the mean
    IoU and the number of flat maps."""
    groups: dict[tuple[str, str, str], list[GroundingCase]] = defaultdict(list)
    for c in cases:
        groups[(c.method, c.finding, c.language)].append(c)
        groups[(c.method, "all", c.language)].append(c)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (method, finding, language), group in sorted(groups.items()):
        out.setdefault(method, {}).setdefault(finding, {})[language] = {
            "n": len(group),
            "pointing": float(np.mean([c.hit for c in group])),
            "iou": float(np.mean([c.iou for c in group])),
            "flat": int(sum(c.flat for c in group)),
        }
    return out


def grounding_table(summary: Mapping[str, Any], methods: Sequence[str] | None = None) -> str:
    """The summary as a Markdown table: one row per finding x language, pointing / IoU / flat per method."""
    methods = [m for m in (methods or GROUNDING_METHODS) if m in summary] or sorted(summary)
    first = summary[methods[0]]
    findings = sorted(f for f in first if f != "all") + ["all"]
    header = ["finding", "prompts", "n"] + [f"pointing {m}" for m in methods] + [f"IoU {m}" for m in methods]
    header += [f"flat {m}" for m in methods if m != "centre"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for finding in findings:
        for language in sorted(first.get(finding, {})):
            cells = [summary[m][finding][language] for m in methods]
            row = [finding, language, str(cells[0]["n"])]
            row += [f"{c['pointing']:.2f}" for c in cells] + [f"{c['iou']:.3f}" for c in cells]
            row += [str(c["flat"]) for m, c in zip(methods, cells) if m != "centre"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _read_mask(path: str, shape: Sequence[int]) -> np.ndarray:
    import nibabel as nib

    try:
        mask = np.asarray(nib.load(path).dataobj)
    except Exception as err:
        raise DataError(f"cannot read the mask ({type(err).__name__})", path=path, field="masks") from None
    mask = mask.reshape(mask.shape[:2]) if mask.ndim == 3 and mask.shape[2] == 1 else mask
    if tuple(mask.shape) != tuple(shape):
        raise DataError(f"mask of shape {tuple(mask.shape)} for an image of shape {tuple(shape)}", path=path, field="masks")
    return mask > 0


def grounding_report(
    bundle_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    split: str | None = "test",
    languages: Sequence[str] | None = None,
    methods: Sequence[str] = GROUNDING_METHODS,
    threshold: float = 0.5,
    tolerance: float = 0.0,
    max_images: int | None = None,
    device: str = "cpu",
    plot_dir: str | os.PathLike | None = None,
    plot_images: int = 2,
) -> dict[str, Any]:
    """Pointing game and mask IoU of a trained bundle's maps on the frontal radiographs of a manifest split
    that carry lesion masks, per finding and prompt language, against the centre baseline.

    Every map is computed for the finding's positive prompt in the language
    (:func:`~monai_medunic.text.prompts.build_prompts`): ``similarity_map`` /
    ``similarity_map_cosine`` are :meth:`~monai_medunic.pretrained.PretrainedInference.similarity_map`
    of kind ``contribution`` / ``cosine``; ``gradcam`` is
    :func:`~monai_medunic.metrics.gradcam.prompt_gradcam` of the zero-shot margin (upsampled bilinearly
    to the image); ``centre`` is :func:`centre_map`. Only findings of the bundle that have masks count.

    Args:
        plot_dir: when given, overlays (:func:`~monai_medunic.metrics.plots.plot_similarity_overlay`) of
            the first ``plot_images`` cases, every method and language, are written there.

    Returns:
        ``{"summary": summarise_grounding(...), "table": Markdown, "cases": [...], "settings": {...}, "plots": [...]}``.
    """
    import torch
    import torch.nn.functional as F

    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.metrics.gradcam import prompt_gradcam
    from monai_medunic.pretrained import load_inference
    from monai_medunic.text.prompts import build_prompts

    unknown = [m for m in methods if m not in GROUNDING_METHODS]
    if unknown:
        raise MetricInputError(f"unknown grounding methods {unknown}; choose from {list(GROUNDING_METHODS)}")
    inference = load_inference(bundle_dir, device=device)
    languages = [str(x).lower() for x in (languages or inference.languages)]
    split = None if split in (None, "all") else split
    records = [
        r for r in manifest_datalist(manifest, split=split, truth=True)
        if any(f in inference.finding_keys for f in (r.get("masks") or {}))
    ]
    if max_images is not None:
        records = records[: int(max_images)]
    if not records:
        raise MetricInputError(f"{manifest}: no frontal radiograph of split '{split or 'all'}' has a mask of the bundle's findings")
    prompt = {(f, lang): build_prompts([f], lang)[0][0] for f in inference.finding_keys for lang in languages}

    def similarity(kind: str) -> MapFunction:
        return lambda image, finding, language: inference.similarity_map(image, prompt[(finding, language)], kind=kind).map

    def gradcam(image, finding: str, language: str) -> np.ndarray:
        x, _ = inference.model_input(image)
        cam = torch.as_tensor(prompt_gradcam(inference.classifier, x, finding, language))
        return F.interpolate(cam, size=tuple(image.shape[1:]), mode="bilinear", align_corners=False)[0, 0].numpy()

    table: dict[str, MapFunction] = {
        "similarity_map": similarity("contribution"),
        "similarity_map_cosine": similarity("cosine"),
        "gradcam": gradcam,
        "centre": lambda image, finding, language: centre_map(image.shape[1:]),
    }
    chosen = {m: table[m] for m in methods}

    def samples():
        for r in records:
            image = inference.load_image(r["image"])
            masks = {f: _read_mask(p, image.shape[1:]) for f, p in r["masks"].items() if f in inference.finding_keys}
            yield {"id": r["id"], "image": image, "masks": masks}

    cases = evaluate_grounding(samples(), chosen, languages, threshold, tolerance)
    summary = summarise_grounding(cases)
    plots: list[str] = []
    if plot_dir is not None and plot_images > 0:
        plots = _plot_cases(Path(plot_dir), records[:plot_images], inference, chosen, languages, prompt)
    return {
        "summary": summary,
        "table": grounding_table(summary, list(methods)),
        "cases": [asdict(c) for c in cases],
        "plots": plots,
        "settings": {
            "bundle": os.fspath(bundle_dir), "manifest": os.fspath(manifest), "split": split or "all",
            "languages": languages, "methods": list(methods), "threshold": threshold, "tolerance": tolerance,
            "images": len(records),
        },
    }


def _plot_cases(out: Path, records, inference, methods: Mapping[str, MapFunction], languages, prompt) -> list[str]:
    """One PNG per image x finding x language: the radiograph and every method's map, with the lesion outline."""
    from monai_medunic.metrics.plots import plot_similarity_overlay

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, r in enumerate(records):
        image = inference.load_image(r["image"])
        for finding, path in r["masks"].items():
            if finding not in inference.finding_keys:
                continue
            mask = _read_mask(path, image.shape[1:])
            slug = "".join(c if c.isalnum() else "_" for c in finding.lower())
            for language in languages:
                file = out / f"grounding_{i}_{slug}_{language}.png"
                maps = {name: method(image, finding, language) for name, method in methods.items()}
                plot_similarity_overlay(file, image[0].numpy(), maps, mask=mask, title=f"{language}: '{prompt[(finding, language)]}'")
                files.append(file.name)
    return files


def cli_main(argv: Sequence[str]) -> int:
    """``medunic grounding --bundle DIR --manifest FILE [--split test] [--threshold 0.5] [--json FILE] [--plots DIR]``."""
    p = argparse.ArgumentParser(prog="medunic grounding", description="Pointing game and mask IoU of a trained bundle's "
                                "similarity maps and Grad-CAM against lesion masks, per finding and prompt language, "
                                "with a centre-of-image baseline.")
    p.add_argument("--bundle", required=True, help="trained bundle directory")
    p.add_argument("--manifest", required=True, help="manifest whose frontal radiographs carry lesion masks")
    p.add_argument("--split", default="test", help="train / val / test, or 'all' (default: test)")
    p.add_argument("--languages", nargs="+", default=None, help="prompt languages (default: the bundle's)")
    p.add_argument("--methods", nargs="+", default=list(GROUNDING_METHODS), choices=list(GROUNDING_METHODS))
    p.add_argument("--threshold", type=float, default=0.5, help="IoU threshold on the min-max scaled map (default 0.5)")
    p.add_argument("--tolerance", type=float, default=0.0, help="pointing-game tolerance in pixels (default 0)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write the summary and every case to this JSON file")
    p.add_argument("--plots", default=None, help="write overlays of the first --plot-images images here")
    p.add_argument("--plot-images", type=int, default=1)
    args = p.parse_args(list(argv))
    report = grounding_report(args.bundle, args.manifest, args.split, args.languages, args.methods, args.threshold,
                              args.tolerance, args.max_images, args.device, args.plots, args.plot_images)
    s = report["settings"]
    print(f"grounding of {s['bundle']} on {s['images']} image(s) of split '{s['split']}' (IoU threshold {s['threshold']}, "
          f"pointing tolerance {s['tolerance']} px)\n")
    print(report["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"\nwritten to {args.json}")
    return 0
