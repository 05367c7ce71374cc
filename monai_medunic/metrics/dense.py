"""Dense downstream tasks of a pre-trained encoder: data, metrics and the label-efficiency runs.

Med-UniC Sec. 4.2 ("Medical Image Semantic Segmentation", "Medical Image Object Detection") and
UniMedI Sec. 4.2.2 / 4.4.3 train a decoder or a detection head on a frozen pre-trained encoder with
1 %, 10 % and 100 % of the training labels, and report the Dice score (segmentation) and the mean
average precision (detection). Everything the ``cxr_segmentation`` and ``cxr_detection`` bundles'
JSON configs instantiate besides the networks (:mod:`monai_medunic.networks.dense`) and the truth
transforms (:mod:`monai_medunic.transforms.dense`) lives here:

* :func:`pretrained_image_encoder`: the encoder of a dense network, built by name, with a trained
  pre-training bundle's image encoder weights loaded by name and checked
  (:func:`~monai_medunic.networks.dense.load_encoder_weights`), or left at random initialisation.
* :func:`dense_datalist`: the records of one split with their truth (masks or boxes), subsampled to a
  label fraction. A record without the truth field, or whose labels name a finding positive that has
  no mask / box, cannot serve as truth: it is skipped with a logged, counted reason (or raises with
  ``on_error="raise"``). Records with an empty label set are refused by the manifest loader
  (``missing_labels``): an empty mask set would be read as "no lesion" when nobody said so.
* :class:`DetectionMAP`: MONAI's COCO metric (``monai.apps.detection.metrics``) as an Ignite metric:
  AP at one IoU (mAP@0.5 by default, over the findings) or mAP over an IoU range (Med-UniC App. D:
  0.4 to 0.75).
* :class:`DenseResultWriter`: the evaluator's metrics into ``result.json``.
* :func:`run_label_efficiency`: a dense bundle's train and evaluate configs for every (variant,
  fraction), and the table of the results.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import Metric

from monai_medunic.errors import ConfigurationError, ManifestError, MetricInputError

__all__ = [
    "DENSE_TASKS",
    "ENCODER_INITS",
    "pretrained_image_encoder",
    "dense_datalist",
    "DetectionMAP",
    "detection_pred_label",
    "DenseResultWriter",
    "SegmentationMaskWriter",
    "run_label_efficiency",
    "efficiency_table",
]

logger = logging.getLogger(__name__)

DENSE_TASKS: tuple[str, ...] = ("segmentation", "detection")

#: How :func:`pretrained_image_encoder` initialises the encoder.
ENCODER_INITS: tuple[str, ...] = ("pretrained", "random")


def pretrained_image_encoder(
    bundle_dir: str | os.PathLike | None,
    name: str,
    img_size: int | Sequence[int],
    in_channels: int = 1,
    init: str = "pretrained",
) -> torch.nn.Module:
    """The image encoder of a dense network: :class:`~monai_medunic.networks.ImageEncoder` ``name`` built
    for ``img_size``, with the image encoder of the trained pre-training bundle ``bundle_dir``
    (``load_pretrained_bundle(bundle_dir).model.image_encoder``) loaded into it by name (``init="pretrained"``),
    or at random initialisation (``init="random"``: the baseline; the bundle is not read).

    A ResNet takes any input size; a ViT's positional embedding fixes it, so a ViT must be built at the
    pre-training size.

    Raises:
        EncoderWeightsError: the bundle's encoder is another architecture than ``name`` (or a ViT of
            another size, or another channel count): the message lists missing and unexpected names.
        ModelLoadError: ``bundle_dir`` is not a trained bundle.
        ConfigurationError: an unknown ``init``.
    """
    from monai_medunic.networks import ImageEncoder
    from monai_medunic.networks.dense import load_encoder_weights

    if init not in ENCODER_INITS:
        raise ConfigurationError(f"init must be one of {ENCODER_INITS}, got {init!r}")
    encoder = ImageEncoder(name, in_channels=int(in_channels), img_size=img_size)
    if init == "pretrained":
        from monai_medunic.pretrained import load_pretrained_bundle

        if bundle_dir is None:
            raise ConfigurationError("init='pretrained' needs the trained pre-training bundle (bundle_dir)")
        source = load_pretrained_bundle(bundle_dir).model.image_encoder
        load_encoder_weights(encoder, source, source_name=f"{bundle_dir} (image encoder '{getattr(source, 'name', '?')}')")
    return encoder


def dense_datalist(
    manifest: str | os.PathLike,
    findings: Sequence[str],
    split: str = "train",
    task: str = "segmentation",
    fraction: float = 1.0,
    seed: int = 0,
    on_error: str = "skip",
    frontal_only: bool = True,
) -> list[dict[str, Any]]:
    """MONAI data dicts with the truth of one split for a dense task.

    Segmentation items: ``{"image": path, "masks": {finding: mask path}, "id": study}`` (findings of
    ``findings`` only; a finding without a mask is absent). Detection items: ``{"image": path, "boxes":
    [[x0, y0, x1, y1], ...], "box_labels": [index in findings, ...], "id": study}`` (boxes of other
    findings are not targets). The manifest's truth checks run (:func:`~monai_medunic.data.manifest.load_manifest`
    with ``check_truth``): a mask whose size differs from its image, a box outside the image, a SEG that
    does not reference the record's image, and an empty label set are skipped and counted (or raise).

    The training split is subsampled to ``fraction`` (seeded, at least one record), as the linear probe.

    Raises:
        ConfigurationError: an empty ``findings`` (an empty label set), an unknown task.
        ManifestError: no usable record; with ``on_error="raise"``, the first bad record (file, line, field).
    """
    from monai_medunic.data.manifest import load_manifest
    from monai_medunic.metrics.probe import subsample_fraction

    if task not in DENSE_TASKS:
        raise ConfigurationError(f"task must be one of {DENSE_TASKS}, got {task!r}")
    findings = [str(f) for f in findings]
    if not findings:
        raise ConfigurationError("findings is empty: a dense task needs at least one finding (an empty label set)")
    result = load_manifest(manifest, on_error=on_error, frontal_only=frontal_only, split=split, dimensions=2,
                           check_truth=True, require_labels=True, min_report_tokens=0, read_sr=False)
    truth_field = "masks" if task == "segmentation" else "boxes"
    skipped: Counter[str] = Counter()
    data: list[dict[str, Any]] = []
    for rec in result.records:
        truth = rec.masks if task == "segmentation" else rec.boxes
        reason, message = None, ""
        if truth is None:
            reason, message = f"no_{truth_field}", f"the record has no '{truth_field}' (no truth for {task})"
        else:
            lacking = [f for f in findings if (rec.labels or {}).get(f) == 1 and f not in truth]
            if lacking:
                reason, message = "truth_missing_for_positive_label", f"labels say {lacking} present but '{truth_field}' has none"
        if reason:
            if on_error == "raise":
                raise ManifestError(message, path=manifest, field=truth_field, line=rec.line)
            logger.warning("manifest %s: line %d, field '%s': skipped (%s): %s", manifest, rec.line, truth_field, reason, message)
            skipped[reason] += 1
            continue
        item: dict[str, Any] = {"image": rec.image_paths[0], "id": rec.study_uid or rec.image_paths[0]}
        if task == "segmentation":
            item["masks"] = {f: p for f, p in truth.items() if f in findings}
        else:
            order = {f: i for i, f in enumerate(findings)}
            pairs = [(list(b), order[f]) for f, boxes in truth.items() if f in order for b in boxes]
            item["boxes"] = [b for b, _ in pairs]
            item["box_labels"] = [c for _, c in pairs]
        data.append(item)
    if not data:
        raise ManifestError(f"no record with {task} truth in split '{split}' ({result.summary}; skipped here: {dict(skipped)})",
                            path=manifest)
    if skipped:
        logger.warning("manifest %s: %d record(s) of split '%s' skipped for %s: %s", manifest, sum(skipped.values()), split, task, dict(skipped))
    if fraction < 1.0:
        data = subsample_fraction(data, fraction, seed)
    logger.info("%s: %s %s split: %d records (fraction %.3g)", manifest, task, split, len(data), fraction)
    return data


def detection_pred_label(output: Any) -> tuple[list, list]:
    """Evaluator output -> ``(detections, targets)``: lists of dicts (``decollate=False``)."""
    if isinstance(output, Mapping):
        return list(output["pred"]), list(output["label"])
    return [o["pred"] for o in output], [o["label"] for o in output]


class DetectionMAP(Metric):
    """Mean average precision of a detector over an epoch, with MONAI's ``COCOMetric`` and ``matching_batch``.

    ``iou`` a number: AP at that IoU threshold averaged over the classes that have ground truth (mAP@0.5
    by default; a class without ground truth is left out of the mean, as in pycocotools, whereas
    ``COCOMetric``'s own mean counts it as -1). ``iou`` a ``(start, stop, step)`` triple: mAP averaged over that IoU range too (Med-UniC
    App. D, RSNA / Object-CXR: 0.4 to 0.75). A dataset without any ground-truth box gives NaN.

    Args:
        classes: the class names, in label order.
        iou: an IoU threshold, or a ``(start, stop, step)`` range.
        max_detections: detections per image considered.
        output_transform: engine output -> ``(detections, targets)`` (:func:`detection_pred_label`);
            detections ``{"boxes", "labels", "labels_scores"}``, targets ``{"boxes", "labels"}`` per image.
    """

    def __init__(self, classes: Sequence[str], iou: float | Sequence[float] = 0.5, max_detections: int = 100,
                 output_transform=detection_pred_label, score_key: str = "labels_scores") -> None:
        from monai.apps.detection.metrics.coco import COCOMetric

        self.classes = [str(c) for c in classes]
        if not self.classes:
            raise ConfigurationError("DetectionMAP needs at least one class")
        if isinstance(iou, (int, float)):
            self.coco = COCOMetric(self.classes, iou_list=[float(iou)], iou_range=(float(iou), float(iou), 0.05),
                                   max_detection=[int(max_detections)], per_class=True, verbose=False)
            self.key = f"AP_IoU_{float(iou):.2f}_MaxDet_{int(max_detections)}"
        else:
            start, stop, step = (float(v) for v in iou)
            self.coco = COCOMetric(self.classes, iou_list=[start], iou_range=(start, stop, step), max_detection=[int(max_detections)],
                                   per_class=True, verbose=False)
            self.key = f"mAP_IoU_{start:.2f}_{stop:.2f}_{step:.2f}_MaxDet_{int(max_detections)}"
        self.score_key = score_key
        self.last: dict[str, float] = {}
        super().__init__(output_transform=output_transform)

    def reset(self) -> None:
        self._preds: list[dict[str, np.ndarray]] = []
        self._targets: list[dict[str, np.ndarray]] = []

    @staticmethod
    def _np(t: Any, dtype) -> np.ndarray:
        return torch.as_tensor(t).detach().cpu().numpy().astype(dtype)

    def update(self, output: tuple[Sequence[Mapping], Sequence[Mapping]]) -> None:
        preds, targets = output
        if len(preds) != len(targets):
            raise MetricInputError(f"{len(preds)} detections for {len(targets)} targets")
        for p, t in zip(preds, targets):
            self._preds.append({"boxes": self._np(p["boxes"], np.float32).reshape(-1, 4 if p["boxes"].shape[-1] == 4 else 6),
                                "labels": self._np(p["labels"], np.int64).reshape(-1), "scores": self._np(p[self.score_key], np.float32).reshape(-1)})
            self._targets.append({"boxes": self._np(t["boxes"], np.float32).reshape(-1, self._preds[-1]["boxes"].shape[1]),
                                  "labels": self._np(t["labels"], np.int64).reshape(-1)})

    def compute(self) -> float:
        from monai.apps.detection.metrics.matching import matching_batch
        from monai.data.box_utils import box_iou

        if not any(len(t["labels"]) for t in self._targets):
            self.last = {}
            return math.nan
        matched = matching_batch(
            iou_fn=box_iou, iou_thresholds=self.coco.iou_thresholds,
            pred_boxes=[p["boxes"] for p in self._preds], pred_classes=[p["labels"] for p in self._preds],
            pred_scores=[p["scores"] for p in self._preds],
            gt_boxes=[t["boxes"] for t in self._targets], gt_classes=[t["labels"] for t in self._targets],
        )
        results = self.coco(matched)[0]
        self.last = {k: float(v) for k, v in results.items()}
        # the mean over the classes with ground truth: COCOMetric marks a class without any with -1 and
        # averages that -1 into its own mean (pycocotools leaves such a class out, as here)
        per_class = [self.last[f"{c}_{self.key}"] for c in self.classes]
        defined = [v for v in per_class if v >= 0]
        value = float(np.mean(defined)) if defined else math.nan
        self.last[self.key] = value
        return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.reshape(-1).tolist()] if value.ndim else _jsonable(value.item())
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class DenseResultWriter:
    """Writes the evaluator's metrics to a JSON file when evaluation completes.

    ``{"task", "fraction", "metric", "value", "metrics", "n_test", **extra}``; NaN (undefined, e.g. no
    ground truth in the test split) becomes ``null``.

    Args:
        output_file: the JSON file.
        task: ``"segmentation"`` or ``"detection"``.
        fraction: the training label fraction of this run.
        metric_name: the evaluator metric reported as ``value``.
        extra: more JSON-able values to record (the variant, the encoder, ...).
        details: metric objects whose ``last`` dict (e.g. :class:`DetectionMAP`'s per-class APs) is recorded too.
    """

    def __init__(self, output_file: str | os.PathLike, task: str, fraction: float, metric_name: str,
                 extra: Mapping[str, Any] | None = None, details: Sequence[Any] = ()) -> None:
        if task not in DENSE_TASKS:
            raise ConfigurationError(f"task must be one of {DENSE_TASKS}, got {task!r}")
        self.output_file = Path(output_file)
        self.task, self.fraction, self.metric_name = task, float(fraction), metric_name
        self.extra = dict(extra or {})
        self.details = list(details)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        metrics = _jsonable(dict(engine.state.metrics))
        record = {
            "task": self.task,
            "fraction": self.fraction,
            "metric": self.metric_name,
            "value": metrics.get(self.metric_name),
            "metrics": metrics,
            "n_test": len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else None,
            **_jsonable(self.extra),
        }
        details = {k: v for d in self.details for k, v in _jsonable(getattr(d, "last", {}) or {}).items()}
        if details:
            record["details"] = details
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output_file.with_name(f".{self.output_file.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, self.output_file)
        logger.info("%s (fraction %.3g): %s = %s", self.task, self.fraction, self.metric_name, record["value"])


def run_label_efficiency(
    bundle_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    variants: Mapping[str, Mapping[str, Any]],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """Train and evaluate a dense bundle (``cxr_segmentation`` or ``cxr_detection``) once per variant and fraction.

    Each run is MONAI's bundle workflow on the bundle's ``train.json`` then ``evaluate.json`` with
    ``overrides``, the variant's overrides (e.g. ``{"encoder_init": "random"}``), ``fraction`` and
    ``output_dir = <output_dir>/<variant>/fraction_<f>``. The results are collected into
    ``<output_dir>/label_efficiency.json`` and ``label_efficiency.md`` and returned as
    ``{"metric", "fractions", "table": {variant: {fraction: value}}, "runs": [...]}``.
    """
    from monai.bundle import ConfigWorkflow

    root, out = Path(bundle_dir), Path(output_dir)
    if not variants:
        raise ConfigurationError("run_label_efficiency needs at least one variant")
    runs = []
    for name, variant in variants.items():
        for f in fractions:
            run_dir = out / name / f"fraction_{f:g}"
            settings = {"bundle_root": str(root), **(overrides or {}), **dict(variant), "fraction": float(f), "output_dir": str(run_dir)}
            for config in ("train.json", "evaluate.json"):
                wf = ConfigWorkflow(config_file=str(root / "configs" / config), meta_file=str(root / "configs" / "metadata.json"),
                                    logging_file=str(root / "configs" / "logging.conf"),
                                    workflow_type="train" if config == "train.json" else "infer", **settings)
                wf.initialize()
                wf.run()
                wf.finalize()
            result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
            runs.append({"variant": name, **result})
    summary = {"metric": runs[0]["metric"], "fractions": [float(f) for f in fractions],
               "table": {name: {f"{r['fraction']:g}": r["value"] for r in runs if r["variant"] == name} for name in variants},
               "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_efficiency.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (out / "label_efficiency.md").write_text(efficiency_table(summary) + "\n", encoding="utf-8")
    return summary


def efficiency_table(summary: Mapping[str, Any]) -> str:
    """The Markdown table of :func:`run_label_efficiency`'s summary: a row per variant, a column per fraction."""
    fractions = [f"{float(f):g}" for f in summary["fractions"]]
    lines = [f"| variant | " + " | ".join(f"{float(f) * 100:g} % labels" for f in fractions) + " |",
             "| --- |" + " --- |" * len(fractions)]
    for name, row in summary["table"].items():
        cells = ["n/a" if row.get(f) is None else f"{row[f]:.3f}" for f in fractions]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return f"{summary['metric']}\n\n" + "\n".join(lines)


class SegmentationMaskWriter:
    """Writes each image's predicted masks when a segmentation inference run completes: one NIfTI file
    ``<output_dir>/<id>_seg.nii.gz`` per image (``(H, W, F)`` uint8 at the network's input size, one
    channel per finding) and ``predictions.json`` (per image and finding: the predicted pixel count).

    The evaluator runs with ``decollate=False``; its output ``pred`` holds the logits ``(B, F, H, W)`` and
    ``id`` the records' identifiers (the ``id`` of :func:`dense_datalist` / ``manifest_datalist``).
    Masks are ``sigmoid(logits) >= threshold``, as :func:`~monai_medunic.networks.dense.predict_masks`.

    Args:
        output_dir: the folder (created).
        findings: the finding of each channel.
        threshold: the probability threshold.
    """

    def __init__(self, output_dir: str | os.PathLike, findings: Sequence[str], threshold: float = 0.5) -> None:
        self.output_dir = Path(output_dir)
        self.findings = [str(f) for f in findings]
        self.threshold = float(threshold)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, self._write_summary)

    def _write_batch(self, engine) -> None:
        import nibabel as nib

        out = engine.state.output
        masks = (torch.sigmoid(torch.as_tensor(out["pred"]).float()) >= self.threshold).cpu().numpy().astype(np.uint8)
        ids = engine.state.batch.get("id") if isinstance(engine.state.batch, Mapping) else None
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for i, mask in enumerate(masks):
            ident = str(ids[i]) if ids is not None else f"image_{len(self.rows)}"
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in ident)[-120:] + "_seg.nii.gz"
            nib.save(nib.Nifti1Image(np.ascontiguousarray(np.moveaxis(mask, 0, -1)), np.eye(4)), str(self.output_dir / name))
            self.rows.append({"id": ident, "file": name, "pixels": {f: int(m.sum()) for f, m in zip(self.findings, mask)}})

    def _write_summary(self, engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "predictions.json").write_text(json.dumps(self.rows, indent=2), encoding="utf-8")
        logger.info("wrote %d segmentation masks to %s", len(self.rows), self.output_dir)
