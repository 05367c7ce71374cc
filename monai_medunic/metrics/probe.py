"""Linear probe: a frozen pre-trained image encoder with a linear head (Med-UniC Sec. 4.2, "Medical Image
Linear Classification"; the protocol of ConVIRT, GLoRIA and MGCA).

Only a randomly initialised linear layer on the encoder's pooled features ``F_v(v)`` is trained; the
backbone is frozen (its BatchNorm statistics too). The probe is trained on 1 %, 10 % and 100 % of the
labelled training split and reports the macro AUC for multi-label tasks (CheXpert, RSNA) and the
accuracy for multi-class tasks (COVIDx). ``freeze_encoder=False`` gives end-to-end fine-tuning.

Everything the ``cxr_linear_probe`` bundle's JSON configs instantiate lives here:
:func:`load_image_encoder`, :class:`LinearProbeNetwork`, :func:`probe_datalist`, :func:`probe_loss`,
:func:`probe_metric`, :class:`ProbeResultWriter`, and :func:`run_linear_probe`, which runs the bundle
once per fraction and collects the results.

Labels come from the manifest's ``labels`` ``{finding: 0/1}``. For ``task="multiclass"`` the classes
are the given ``findings`` and every record must have exactly one of them positive.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy, EpochMetric, Metric
from torch import nn

from monai_medunic.errors import ConfigurationError, MetricInputError

__all__ = [
    "TASKS",
    "load_image_encoder",
    "pretrained_image_size",
    "LinearProbeNetwork",
    "probe_datalist",
    "subsample_fraction",
    "probe_loss",
    "probe_metric",
    "pred_label",
    "ProbeResultWriter",
    "run_linear_probe",
]

logger = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("multilabel", "multiclass")


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ConfigurationError(f"task must be one of {TASKS}, got {task!r}")
    return task


def load_image_encoder(bundle_dir: str | os.PathLike) -> nn.Module:
    """The image encoder ``F_v`` of a trained Med-UniC bundle (weights loaded, on CPU)."""
    from monai_medunic.pretrained import load_pretrained_bundle

    return load_pretrained_bundle(bundle_dir).model.image_encoder


def pretrained_image_size(bundle_dir: str | os.PathLike) -> int:
    """The input size the bundle's image encoder was trained at (the ``pretrained`` section of its ``inference.json``)."""
    from monai_medunic.pretrained import read_inference_settings

    return int(read_inference_settings(bundle_dir)["spatial_size"][0])


class LinearProbeNetwork(nn.Module):
    """``images -> logits``: a linear layer on the pooled features of a (frozen) image encoder.

    Args:
        encoder: a module returning ``{"pooled": (B, D)}`` and exposing ``out_dim`` (e.g.
            :class:`~monai_medunic.networks.CXRImageEncoder`).
        num_outputs: number of findings (multi-label) or classes (multi-class).
        freeze_encoder: freeze the encoder (linear probe). It then stays in eval mode, so its
            BatchNorm statistics do not move either, and runs without autograd.
    """

    def __init__(self, encoder: nn.Module, num_outputs: int, freeze_encoder: bool = True) -> None:
        super().__init__()
        dim = getattr(encoder, "out_dim", None)
        if dim is None:
            raise ConfigurationError("the probe's encoder must expose its feature width as `out_dim`")
        if int(num_outputs) < 1:
            raise ConfigurationError(f"num_outputs must be >= 1, got {num_outputs}")
        self.encoder = encoder
        self.freeze_encoder = bool(freeze_encoder)
        self.head = nn.Linear(int(dim), int(num_outputs))
        if self.freeze_encoder:
            for p in self.encoder.parameters():
                p.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> "LinearProbeNetwork":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze_encoder:
            with torch.no_grad():
                feats = self.encoder(images)["pooled"]
        else:
            feats = self.encoder(images)["pooled"]
        return self.head(feats)


def subsample_fraction(items: Sequence[Any], fraction: float, seed: int = 0, strata: Sequence[Any] | None = None) -> list:
    """A seeded random ``fraction`` of ``items`` (at least one item; at least one per stratum when
    ``strata`` is given and the budget allows it). ``fraction=1`` returns every item in order."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ConfigurationError(f"fraction must be in (0, 1], got {fraction}")
    n = len(items)
    if n == 0:
        raise MetricInputError("cannot subsample an empty training set")
    if fraction >= 1.0:
        return list(items)
    k = max(1, int(round(fraction * n)))
    rng = np.random.default_rng(seed)
    if strata is None:
        idx = sorted(rng.choice(n, size=k, replace=False).tolist())
    else:
        groups: dict[Any, list[int]] = {}
        for i, s in enumerate(strata):
            groups.setdefault(s, []).append(i)
        chosen = [int(rng.choice(g)) for _, g in sorted(groups.items(), key=lambda kv: str(kv[0]))][:k]
        rest = [i for i in range(n) if i not in set(chosen)]
        extra = rng.choice(len(rest), size=k - len(chosen), replace=False).tolist() if k > len(chosen) else []
        idx = sorted(chosen + [rest[i] for i in extra])
    return [items[i] for i in idx]


def probe_datalist(
    manifest: str | os.PathLike,
    findings: Sequence[str],
    split: str = "train",
    task: str = "multilabel",
    fraction: float = 1.0,
    seed: int = 0,
    frontal_only: bool = True,
) -> list[dict[str, Any]]:
    """MONAI data dicts ``{"image": path, "label": ..., "id": ...}`` for the probe.

    ``label`` is a float32 vector in ``findings`` order (multi-label) or the int64 class index
    (multi-class). Multi-image records use their first image. The training split is subsampled to
    ``fraction`` (stratified by class for multi-class).

    Raises:
        MetricInputError: a record lacks a label the task needs, or (multi-class) has not exactly one
            positive class; the message names the manifest, the field and the study.
    """
    from monai_medunic.data.manifest import load_manifest

    _check_task(task)
    findings = list(findings)
    if not findings:
        raise ConfigurationError("the linear probe needs at least one finding / class")
    result = load_manifest(manifest, on_error="skip", frontal_only=frontal_only, split=split)
    if not result.records:
        raise MetricInputError(f"{manifest}: no usable record in split '{split}' ({result.summary})")
    data = []
    for rec in result.records:
        rid = rec.study_uid or rec.image_paths[0]
        labels = rec.labels or {}
        missing = [f for f in findings if f not in labels]
        if missing:
            raise MetricInputError(
                f"{manifest}: line {rec.line}: field 'labels': record '{rid}' has no label for {missing}; "
                "the linear probe needs every label"
            )
        vec = np.asarray([labels[f] for f in findings], dtype=np.float32)
        if task == "multiclass":
            if int(vec.sum()) != 1:
                raise MetricInputError(
                    f"{manifest}: line {rec.line}: field 'labels': record '{rid}' has {int(vec.sum())} positive classes "
                    f"among {findings}; a multi-class probe needs exactly one"
                )
            label: Any = np.int64(int(vec.argmax()))
        else:
            label = vec
        data.append({"image": rec.image_paths[0], "label": label, "id": rid})
    if fraction < 1.0:
        strata = [int(d["label"]) for d in data] if task == "multiclass" else None
        data = subsample_fraction(data, fraction, seed, strata)
    logger.info("%s: linear-probe %s split: %d records (fraction %.3g)", manifest, split, len(data), fraction)
    return data


def probe_loss(task: str = "multilabel") -> nn.Module:
    """``BCEWithLogitsLoss`` (multi-label) or ``CrossEntropyLoss`` (multi-class)."""
    return nn.BCEWithLogitsLoss() if _check_task(task) == "multilabel" else nn.CrossEntropyLoss()


def pred_label(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluator output (a dict with ``pred`` and ``label``, or a list of such dicts) -> ``(pred, label)``."""
    if isinstance(output, dict):
        return output["pred"], output["label"]
    return torch.stack([o["pred"] for o in output]), torch.stack([torch.as_tensor(o["label"]) for o in output])


def _macro_auc(y_pred: torch.Tensor, y: torch.Tensor) -> float:
    from monai_medunic.metrics.zero_shot import multilabel_auc

    macro = multilabel_auc(y.float(), y_pred.float())["macro"]
    return math.nan if macro is None else macro


def probe_metric(task: str = "multilabel", output_transform=pred_label) -> Metric:
    """Macro AUC over findings (multi-label; an undefined AUC is left out, all undefined -> NaN) or
    accuracy (multi-class), as an Ignite metric."""
    if _check_task(task) == "multilabel":
        return EpochMetric(_macro_auc, output_transform=output_transform, check_compute_fn=False)
    return Accuracy(output_transform=output_transform)


class ProbeResultWriter:
    """Writes the evaluator's metrics, the task and the fraction to a JSON file when evaluation completes.

    Args:
        output_file: the JSON file.
        fraction: the training fraction of this run.
        task: ``"multilabel"`` or ``"multiclass"``.
        metric_name: the evaluator metric recorded as ``"value"``.
        extra: more JSON-able values to record.
    """

    def __init__(
        self,
        output_file: str | os.PathLike,
        fraction: float,
        task: str,
        metric_name: str = "test_metric",
        extra: dict | None = None,
    ) -> None:
        self.output_file = Path(output_file)
        self.metric_name = metric_name
        self.fraction = float(fraction)
        self.task = _check_task(task)
        self.extra = dict(extra or {})

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine) -> None:
        metrics = {}
        for k, v in engine.state.metrics.items():
            v = float(v)
            metrics[k] = None if math.isnan(v) else v
        record = {
            "task": self.task,
            "fraction": self.fraction,
            "metric": "macro_auc" if self.task == "multilabel" else "accuracy",
            "value": metrics.get(self.metric_name),
            "metrics": metrics,
            "n_test": len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else None,
            **self.extra,
        }
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self.output_file.write_text(json.dumps(record, indent=2), encoding="utf-8")
        logger.info("linear probe (fraction %.3g): %s", self.fraction, metrics)


def run_linear_probe(
    probe_bundle_dir: str | os.PathLike,
    pretrained_bundle: str | os.PathLike,
    manifest: str | os.PathLike,
    output_dir: str | os.PathLike,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    overrides: dict[str, Any] | None = None,
) -> dict:
    """Run the ``cxr_linear_probe`` bundle's ``train.json`` and ``evaluate.json`` once per fraction.

    Each fraction writes its model and ``result.json`` under ``output_dir/fraction_<f>``; the
    collected results are written to ``output_dir/linear_probe.json`` and returned as
    ``{"task": .., "metric": "macro_auc" | "accuracy", "fractions": {"0.01": value or None, ...}, "runs": [...]}``
    (``None``: undefined, e.g. a test split where every finding has a single class).
    """
    from monai.bundle import ConfigWorkflow

    root = Path(probe_bundle_dir)
    out = Path(output_dir)
    runs = []
    for f in fractions:
        run_dir = out / f"fraction_{f:g}"
        common = {
            "bundle_root": str(root),
            "pretrained_bundle": str(pretrained_bundle),
            "manifest": str(manifest),
            "output_dir": str(run_dir),
            "fraction": float(f),
            **(overrides or {}),
        }
        for config in ("train.json", "evaluate.json"):
            wf = ConfigWorkflow(
                config_file=str(root / "configs" / config),
                meta_file=str(root / "configs" / "metadata.json"),
                logging_file=str(root / "configs" / "logging.conf"),
                workflow_type="train" if config == "train.json" else "infer",
                **common,
            )
            wf.initialize()
            wf.run()
            wf.finalize()
        runs.append(json.loads((run_dir / "result.json").read_text(encoding="utf-8")))
    task = runs[0]["task"] if runs else None
    metric = runs[0]["metric"] if runs else None
    summary = {
        "task": task,
        "metric": metric,
        "fractions": {f"{r['fraction']:g}": r["value"] for r in runs},
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "linear_probe.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
