"""Calibrated zero-shot decisions: per-finding thresholds and Platt scaling, per prompt language.

Med-UniC (Sec. 4.2) calls an image positive for a finding when it is closer to the positive prompt than
to the negative one, ``s_pos > s_neg``. That rule puts every finding's operating point at a margin of
zero, wherever the model's margins happen to lie; on the demo data the Deploy app called 5 of 6 findings
positive on a study with 2. A clinician-facing decision needs an operating point chosen on data, and a
probability that means one.

For every prompt language and finding, on the validation split, with the margin ``m = s_pos - s_neg``:

* **decision threshold** ``t``: Youden's J, the ROC point that maximises ``TPR - FPR`` (the rule that
  weighs a missed finding and a false alarm alike, independent of prevalence; best-F1 would follow the
  validation prevalence, which differs between our language communities). The threshold is placed
  half-way between the margin that achieves J and the next lower margin seen, so that a validation
  image never sits on it. Decision: ``m >= t``.
* **probability**: Platt scaling, ``p = sigmoid(a * m + b)``, fitted by maximum likelihood (logistic
  regression on the one feature ``m``, with a weak L2 penalty so that a separable validation set still
  gives finite ``a``). With ``a = 1 / tau`` and ``b = 0`` it is the uncalibrated score
  ``sigmoid(m / tau)``, so Platt scaling is temperature scaling plus an offset.

A finding whose validation labels hold one class only cannot be fitted. It keeps the paper's rule and
score, and is marked ``"status": "not_fitted"`` in the file and ``calibrated=False`` in every
prediction: nothing falls back silently.

The fit is stored in the trained bundle as ``models/calibration.json`` (:func:`save_calibration`), either
at the end of pre-training (:class:`~monai_medunic.engines.handlers.FitCalibrationHandler`) or
later with ``medunic calibrate``. Inference, evaluation, the Deploy app, MONAI Label and the inference
API read it through :func:`load_calibration` (via
:func:`~monai_medunic.pretrained.load_pretrained_bundle`). A bundle without the file is reported as
uncalibrated wherever its decisions are written.

:func:`expected_calibration_error` measures the result: ECE over all (image, finding) pairs with 10
equal-width probability bins (Guo et al., 2017).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from monai_medunic.errors import ConfigurationError, MetricInputError, ModelLoadError

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_FORMAT",
    "FindingCalibration",
    "ZeroShotCalibration",
    "youden_threshold",
    "fit_platt",
    "fit_calibration",
    "fit_classifier_calibration",
    "expected_calibration_error",
    "save_calibration",
    "load_calibration",
]

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "models/calibration.json"
CALIBRATION_FORMAT = "monai-medunic-zero-shot-calibration/1"
DECISION_RULE = "youden"
PAPER_RULE = "s_pos > s_neg (uncalibrated)"


def _margins_labels(margins, labels) -> tuple[np.ndarray, np.ndarray]:
    m = margins.detach().cpu().numpy() if isinstance(margins, torch.Tensor) else np.asarray(margins, dtype=float)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, dtype=float)
    if m.shape != y.shape:
        raise MetricInputError(f"margins {m.shape} and labels {y.shape} must have the same shape")
    if not np.isfinite(m).all():
        raise MetricInputError("margins contain NaN or infinite values")
    if np.isnan(y).any() or not np.isin(y, (0, 1)).all():
        raise MetricInputError("labels must be 0 or 1 (drop unlabelled images before calibrating)")
    return m.astype(float), y.astype(int)


def youden_threshold(margins, labels) -> float:
    """The margin threshold of Youden's J (``argmax TPR - FPR``) for one finding: half-way between the
    margin at the best ROC point and the next lower margin, so ``margin >= t`` reproduces that point."""
    from sklearn.metrics import roc_curve

    m, y = _margins_labels(margins, labels)
    if m.ndim != 1 or len(np.unique(y)) != 2:
        raise MetricInputError("youden_threshold needs one finding's margins with both classes present")
    fpr, tpr, thr = roc_curve(y, m)
    best = int(np.argmax(tpr - fpr))
    at = float(thr[best])
    if not math.isfinite(at):  # the (0, 0) point: threshold above every margin
        return float(m.max() + 1e-6)
    below = m[m < at]
    return float((at + below.max()) / 2) if below.size else at - 1e-6


def fit_platt(margins, labels, l2: float = 1e-3) -> tuple[float, float]:
    """``(a, b)`` of ``p = sigmoid(a * m + b)``, maximising the likelihood of one finding's labels with a
    penalty ``l2 * a**2`` (in units of the standardised margin), so separable data give a finite slope."""
    from sklearn.linear_model import LogisticRegression

    m, y = _margins_labels(margins, labels)
    if m.ndim != 1 or len(np.unique(y)) != 2:
        raise MetricInputError("fit_platt needs one finding's margins with both classes present")
    scale = float(m.std()) or 1.0
    clf = LogisticRegression(C=1.0 / (2 * l2 * len(m)), solver="lbfgs", max_iter=1000)
    clf.fit((m / scale)[:, None], y)
    return float(clf.coef_[0, 0] / scale), float(clf.intercept_[0])


@dataclass
class FindingCalibration:
    """One finding's fit in one prompt language (``status`` ``"fitted"`` or ``"not_fitted"``)."""

    threshold: float = 0.0
    platt_a: float = 1.0 / 0.07
    platt_b: float = 0.0
    status: str = "not_fitted"
    n: int = 0
    positives: int = 0

    @property
    def fitted(self) -> bool:
        return self.status == "fitted"


@dataclass
class ZeroShotCalibration:
    """Per prompt language and finding decision thresholds and Platt parameters of a trained bundle.

    ``languages[lang][finding]`` is a :class:`FindingCalibration`; ``fitted_on`` says on which data
    (split, number of images) the fit was made.
    """

    languages: dict[str, dict[str, FindingCalibration]]
    rule: str = DECISION_RULE
    method: str = "platt"
    fitted_on: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def finding(self, language: str, finding: str) -> FindingCalibration | None:
        return self.languages.get(language, {}).get(finding)

    def apply(self, margins: torch.Tensor, language: str, findings: Sequence[str], temperature: float):
        """``(probs, positive, calibrated)`` for ``(B, F)`` margins: calibrated probabilities and decisions
        where the finding was fitted in ``language``; the paper's rule (flagged ``calibrated=False``) elsewhere."""
        if language not in self.languages:
            logger.warning("calibration %s has no prompt language '%s' (has %s): its decisions are uncalibrated",
                           self.source or "", language, sorted(self.languages))
        cols = [self.finding(language, f) for f in findings]
        fitted = torch.tensor([c is not None and c.fitted for c in cols], dtype=torch.bool, device=margins.device)
        a = torch.tensor([c.platt_a if c is not None and c.fitted else 1.0 / temperature for c in cols],
                         dtype=margins.dtype, device=margins.device)
        b = torch.tensor([c.platt_b if c is not None and c.fitted else 0.0 for c in cols], dtype=margins.dtype, device=margins.device)
        t = torch.tensor([c.threshold if c is not None and c.fitted else 0.0 for c in cols], dtype=margins.dtype, device=margins.device)
        probs = torch.sigmoid(margins * a + b)
        positive = torch.where(fitted, margins >= t, margins > 0)
        return probs, positive, fitted

    def to_json(self) -> dict:
        return {
            "format": CALIBRATION_FORMAT,
            "score": "margin = cos(image, positive prompt) - cos(image, negative prompt)",
            "rule": self.rule,
            "decision": "margin >= threshold",
            "method": self.method,
            "probability": "sigmoid(platt_a * margin + platt_b)",
            "fitted_on": self.fitted_on,
            "languages": {lang: {f: vars(c) for f, c in cols.items()} for lang, cols in self.languages.items()},
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], source: str = "") -> "ZeroShotCalibration":
        if not isinstance(obj, Mapping) or obj.get("format") != CALIBRATION_FORMAT:
            raise ModelLoadError(f"{source}: field 'format' must be '{CALIBRATION_FORMAT}' (not a calibration file of this package)")
        langs = obj.get("languages")
        if not isinstance(langs, Mapping) or not langs:
            raise ModelLoadError(f"{source}: field 'languages' must map prompt languages to findings")
        out: dict[str, dict[str, FindingCalibration]] = {}
        for lang, cols in langs.items():
            out[str(lang)] = {}
            for finding, c in (cols or {}).items():
                try:
                    fc = FindingCalibration(**{k: c[k] for k in ("threshold", "platt_a", "platt_b", "status", "n", "positives")})
                    ok = all(math.isfinite(float(v)) for v in (fc.threshold, fc.platt_a, fc.platt_b))
                except (KeyError, TypeError, ValueError) as err:
                    raise ModelLoadError(f"{source}: field 'languages.{lang}.{finding}' is malformed ({err})") from None
                if not ok or fc.status not in ("fitted", "not_fitted"):
                    raise ModelLoadError(f"{source}: field 'languages.{lang}.{finding}' has a non-finite value or an unknown status")
                out[str(lang)][str(finding)] = fc
        return cls(out, rule=str(obj.get("rule", DECISION_RULE)), method=str(obj.get("method", "platt")),
                   fitted_on=dict(obj.get("fitted_on", {})), source=source)


def fit_calibration(
    margins: Mapping[str, Any],
    labels,
    findings: Sequence[str],
    temperature: float = 0.07,
    fitted_on: Mapping[str, Any] | None = None,
) -> ZeroShotCalibration:
    """Fit thresholds (Youden's J) and Platt scaling per prompt language and finding.

    Args:
        margins: ``{prompt_language: (N, F) margins s_pos - s_neg}`` on the validation images.
        labels: ``(N, F)`` binary labels.
        findings: the ``F`` finding names.
        temperature: the uncalibrated score's ``tau``, kept for findings that cannot be fitted.
        fitted_on: a description of the data (split, counts), stored with the fit.
    """
    if not margins:
        raise ConfigurationError("fit_calibration needs margins for at least one prompt language")
    out: dict[str, dict[str, FindingCalibration]] = {}
    y_all = None
    for lang, mar in margins.items():
        m, y = _margins_labels(mar, labels)
        if m.ndim != 2 or m.shape[1] != len(findings):
            raise MetricInputError(f"margins of '{lang}' must be (images, {len(findings)} findings), got {m.shape}")
        y_all = y
        cols: dict[str, FindingCalibration] = {}
        for j, f in enumerate(findings):
            pos = int(y[:, j].sum())
            if 0 < pos < len(y):
                a, b = fit_platt(m[:, j], y[:, j])
                cols[f] = FindingCalibration(youden_threshold(m[:, j], y[:, j]), a, b, "fitted", len(y), pos)
            else:
                logger.warning("calibration: '%s' has %d positives in %d validation images: kept uncalibrated (%s)",
                               f, pos, len(y), lang)
                cols[f] = FindingCalibration(0.0, 1.0 / temperature, 0.0, "not_fitted", len(y), pos)
        out[str(lang)] = cols
    info = {"images": int(y_all.shape[0]) if y_all is not None else 0, **dict(fitted_on or {})}
    return ZeroShotCalibration(out, fitted_on=info)


def fit_classifier_calibration(classifier, image_emb: torch.Tensor, labels, fitted_on: Mapping[str, Any] | None = None
                               ) -> ZeroShotCalibration:
    """:func:`fit_calibration` on the margins a
    :class:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier` gives for L2-normalised image embeddings
    ``(N, d)``, in each of its prompt languages (its findings, and its ``tau`` for findings left uncalibrated)."""
    margins = {lang: classifier.classify_embeddings(image_emb, lang).margin.cpu().numpy() for lang in classifier.languages}
    return fit_calibration(margins, labels, classifier.findings, temperature=classifier.temperature, fitted_on=fitted_on)


def expected_calibration_error(labels, probs, bins: int = 10) -> float:
    """ECE over all (image, finding) pairs: ``sum_b |B_b|/N * |mean(y in B_b) - mean(p in B_b)|`` over
    ``bins`` equal-width probability bins (Guo et al., 2017, Eq. 3)."""
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=float).ravel()
    p = np.asarray(probs.cpu() if isinstance(probs, torch.Tensor) else probs, dtype=float).ravel()
    if y.shape != p.shape or y.size == 0:
        raise MetricInputError(f"labels ({y.size}) and probabilities ({p.size}) must be non-empty and of one size")
    if ((p < 0) | (p > 1)).any() or np.isnan(p).any():
        raise MetricInputError("probabilities must lie in [0, 1]")
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return float(ece)


def save_calibration(bundle_root: str | os.PathLike, calibration: ZeroShotCalibration) -> Path:
    """Write ``models/calibration.json`` of a trained bundle atomically (the earlier file, if any, stays
    intact on an error)."""
    from monai_medunic.text.io_utils import atomic_file

    path = Path(bundle_root) / CALIBRATION_FILE
    with atomic_file(path, "calibration") as tmp:
        Path(tmp).write_text(json.dumps(calibration.to_json(), indent=2), encoding="utf-8")
    return path


def load_calibration(bundle_root: str | os.PathLike) -> ZeroShotCalibration | None:
    """The bundle's calibration, or ``None`` (with a warning: its decisions are the uncalibrated
    ``s_pos > s_neg``) when it has none. A malformed file is a :class:`ModelLoadError`."""
    path = Path(bundle_root) / CALIBRATION_FILE
    if not path.is_file():
        logger.warning("bundle %s has no %s: zero-shot decisions are UNCALIBRATED (s_pos > s_neg); "
                       "fit one with `medunic calibrate --bundle %s --manifest FILE`", bundle_root, CALIBRATION_FILE, bundle_root)
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: not a readable calibration file ({type(err).__name__}: {err})") from None
    return ZeroShotCalibration.from_json(obj, source=str(path))
