"""Bilingual zero-shot classification (Med-UniC Sec. 4.2 and App. D).

For every finding a positive prompt (``"{finding}"`` / ``"{hallazgo}"``) and a negative prompt
(``"No {finding}"`` / ``"No hay {hallazgo}"``) are encoded once per prompt language and cached. An
image is positive for a finding when its cosine similarity to the positive prompt exceeds that to the
negative prompt. The score used for AUC is ``sigmoid((s_pos - s_neg) / tau)``, the two-way softmax
over the prompt pair, so the cost per image is the image encoder's forward pass plus one matrix
product with the cached ``(2F, d)`` prompt matrix.

:func:`evaluate_zero_shot` produces the paper's table layout (Tab. 1: CXP500 (En) / (Sp), PDC (En) /
(Sp)): for every prompt language, the macro AUC and F1 over findings on every data-language
community and on all images, plus the decisions that the cross-lingual prompt agreement of
:mod:`monai_medunic.metrics.language_gap` compares.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import ignite.distributed as idist
import torch
from ignite.metrics import Metric

from monai_medunic.errors import ConfigurationError, MetricInputError
from monai_medunic.text.prompts import build_prompts

__all__ = [
    "ZeroShotClassifier",
    "ZeroShotPrediction",
    "ZeroShotAUC",
    "ZeroShotF1",
    "ZeroShotEvaluation",
    "multilabel_auc",
    "multilabel_f1",
    "zero_shot_scores",
    "zero_shot_table",
    "evaluate_zero_shot",
]

logger = logging.getLogger(__name__)

Tokenize = Callable[[Sequence[str]], Mapping[str, torch.Tensor]]


@dataclass
class ZeroShotPrediction:
    """``probs``: ``(B, F)`` scores in [0, 1]; ``positive``: ``(B, F)`` decisions; ``margin``: ``(B, F)``
    ``s_pos - s_neg``; ``calibrated``: ``(F,)`` whether the finding's probability and decision come from
    the bundle's calibration (:mod:`monai_medunic.metrics.calibration`) or are the paper's uncalibrated
    ``sigmoid(margin / tau)`` and ``s_pos > s_neg``."""

    probs: torch.Tensor
    positive: torch.Tensor
    margin: torch.Tensor | None = None
    calibrated: torch.Tensor | None = None

    @property
    def decision_rule(self) -> str:
        """How ``positive`` was decided, for outputs that record it."""
        if self.calibrated is None or not bool(self.calibrated.any()):
            return "s_pos > s_neg (uncalibrated)"
        if bool(self.calibrated.all()):
            return "margin >= per-finding threshold (Youden's J on validation); probability: Platt scaling"
        return "calibrated where fitted (margin >= threshold, Platt), s_pos > s_neg (uncalibrated) elsewhere"


class ZeroShotClassifier:
    """Zero-shot multi-label classifier over a fixed finding list, in one or more prompt languages.

    Args:
        model: a network with ``encode_image(images)`` and ``encode_text(input_ids, attention_mask)``
            returning L2-normalised joint-space embeddings (e.g. :class:`~monai_medunic.networks.MedUniC`).
        tokenize: an HF tokenizer (called with padding and truncation at ``max_length``), or any
            callable mapping a list of texts to ``input_ids`` and ``attention_mask`` tensors.
        findings: English finding keys (see :mod:`monai_medunic.text.prompts`).
        languages: prompt languages.
        temperature: ``tau`` of the score; defaults to 0.07, the CVL temperature.
        max_length: truncation length when ``tokenize`` is an HF tokenizer.
        calibration: a trained bundle's :class:`~monai_medunic.metrics.calibration.ZeroShotCalibration`
            (per-language thresholds and Platt scaling). Without one, decisions are the paper's
            ``s_pos > s_neg`` and the predictions say they are uncalibrated.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenize: Tokenize,
        findings: Sequence[str],
        languages: Sequence[str] = ("en", "es"),
        temperature: float = 0.07,
        max_length: int = 128,
        calibration=None,
    ) -> None:
        if not findings:
            raise ConfigurationError("ZeroShotClassifier needs at least one finding")
        self.model = model
        if hasattr(tokenize, "convert_ids_to_tokens"):  # an HF tokenizer
            hf = tokenize
            self.tokenize = lambda texts: hf(
                list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
            )
        else:
            self.tokenize = tokenize
        self.findings = list(findings)
        self.languages = [str(lang).lower() for lang in languages]
        self.temperature = float(temperature)
        self.calibration = calibration
        # validate every translation up front: a missing one fails here, naming finding and language
        self.prompts = {lang: build_prompts(self.findings, lang) for lang in self.languages}
        self._cache: dict[str, torch.Tensor] = {}

    def _unwrapped(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model

    @torch.no_grad()
    def refresh(self) -> None:
        """(Re-)encode the prompts; call after the text encoder changed (e.g. before each validation)."""
        model = self._unwrapped()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        try:
            for lang, pairs in self.prompts.items():
                texts = [t for pair in pairs for t in pair]  # pos0, neg0, pos1, neg1, ...
                tok = self.tokenize(texts)
                emb = model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float()
                self._cache[lang] = emb.view(len(pairs), 2, -1)
        finally:
            model.train(was_training)

    def prompt_embeddings(self, language: str) -> torch.Tensor:
        """Cached ``(F, 2, d)`` embeddings (positive, negative) of ``language``."""
        if language not in self.prompts:
            raise ConfigurationError(f"prompt language '{language}' is not configured (have {self.languages})")
        if language not in self._cache:
            self.refresh()
        return self._cache[language]

    def classify_embeddings(self, image_emb: torch.Tensor, language: str) -> ZeroShotPrediction:
        """Scores for L2-normalised image embeddings ``(B, d)``."""
        prompts = self.prompt_embeddings(language).to(image_emb.device)
        sims = torch.einsum("bd,fkd->bfk", image_emb.float(), prompts)
        margin = sims[..., 0] - sims[..., 1]
        if self.calibration is not None:
            probs, positive, calibrated = self.calibration.apply(margin, language, self.findings, self.temperature)
            return ZeroShotPrediction(probs=probs, positive=positive, margin=margin, calibrated=calibrated)
        uncalibrated = torch.zeros(len(self.findings), dtype=torch.bool, device=margin.device)
        return ZeroShotPrediction(probs=torch.sigmoid(margin / self.temperature), positive=margin > 0, margin=margin,
                                  calibrated=uncalibrated)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._unwrapped().encode_image(images).float()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, language: str) -> ZeroShotPrediction:
        return self.classify_embeddings(self.encode_images(images), language)


def _as_2d(name: str, x: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise MetricInputError(f"{name} must be (samples, findings), got shape {arr.shape}")
    return arr


def multilabel_auc(labels, scores, findings: Sequence[str] | None = None) -> dict:
    """ROC AUC per finding and their macro mean.

    A finding whose labels hold a single class has no defined AUC: it is reported as ``None``
    (not 0.5) and left out of the macro mean, which is ``None`` when no finding is defined.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _as_2d("labels", labels), _as_2d("scores", scores)
    if y.shape != s.shape:
        raise MetricInputError(f"labels {y.shape} and scores {s.shape} must have the same shape")
    if np.isnan(y).any():
        raise MetricInputError("labels contain missing values (NaN): drop unlabelled samples before computing AUC")
    names = list(findings) if findings is not None else [str(i) for i in range(y.shape[1])]
    per: dict[str, float | None] = {}
    for j, name in enumerate(names):
        col = y[:, j]
        per[name] = float(roc_auc_score(col, s[:, j])) if len(np.unique(col)) == 2 else None
    defined = [v for v in per.values() if v is not None]
    undefined = [k for k, v in per.items() if v is None]
    if undefined:
        logger.warning("AUC undefined (single class in labels) for: %s", ", ".join(undefined))
    return {"macro": float(np.mean(defined)) if defined else None, "per_finding": per, "undefined": undefined}


def multilabel_f1(labels, decisions, findings: Sequence[str] | None = None) -> dict:
    """F1 per finding (positive class) and the macro mean over findings."""
    from sklearn.metrics import f1_score

    y, d = _as_2d("labels", labels), _as_2d("decisions", decisions)
    if y.shape != d.shape:
        raise MetricInputError(f"labels {y.shape} and decisions {d.shape} must have the same shape")
    names = list(findings) if findings is not None else [str(i) for i in range(y.shape[1])]
    per = {n: float(f1_score(y[:, j].astype(int), d[:, j].astype(int), zero_division=0.0)) for j, n in enumerate(names)}
    return {"macro": float(np.mean(list(per.values()))), "per_finding": per}


class ZeroShotAUC(Metric):
    """Ignite metric: zero-shot macro AUC in one prompt language (or, with ``language=None``, the mean
    over the classifier's prompt languages), for MONAI evaluators.

    The evaluator's ``output_transform`` must give ``(image_emb, labels)`` with L2-normalised
    ``(B, d)`` embeddings and ``(B, F)`` binary labels. The prompts are re-encoded at every
    :meth:`reset`, i.e. at the start of each validation run, since the text encoder is training.
    An undefined AUC (single-class labels) is reported as NaN with a warning.
    """

    def __init__(
        self, classifier: ZeroShotClassifier, language: str | None = "en", output_transform=lambda x: x, device="cpu"
    ):
        self.classifier = classifier
        self.language = language
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._emb: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        if hasattr(self, "classifier"):
            self.classifier._cache.clear()

    def update(self, output) -> None:
        emb, labels = output
        self._emb.append(emb.detach().float().cpu())
        self._labels.append(torch.as_tensor(labels).detach().float().cpu())

    def _value(self, labels: torch.Tensor, prediction: ZeroShotPrediction) -> float | None:
        return multilabel_auc(labels, prediction.probs, self.classifier.findings)["macro"]

    def compute(self) -> float:
        if not self._emb:
            raise MetricInputError(f"{type(self).__name__}: no samples were evaluated")
        emb = torch.cat(self._emb)
        labels = torch.cat(self._labels)
        if idist.get_world_size() > 1:  # every rank scored its shard of the validation set
            emb, labels = idist.all_gather(emb), idist.all_gather(labels)
        languages = self.classifier.languages if self.language is None else [self.language]
        values = []
        for lang in languages:
            value = self._value(labels, self.classifier.classify_embeddings(emb, lang))
            values.append(math.nan if value is None else value)
        return float(np.mean(values))


class ZeroShotF1(ZeroShotAUC):
    """Ignite metric: zero-shot macro F1 of the decisions ``s_pos > s_neg``; same inputs as :class:`ZeroShotAUC`."""

    def _value(self, labels: torch.Tensor, prediction: ZeroShotPrediction) -> float | None:
        return multilabel_f1(labels, prediction.positive, self.classifier.findings)["macro"]


@dataclass
class ZeroShotEvaluation:
    """Result of :func:`evaluate_zero_shot`.

    ``table[prompt_lang][data_lang or "all"]`` holds ``macro_auc`` (``None`` when undefined),
    ``macro_f1``, ``per_finding_auc``, ``per_finding_f1``, ``undefined_auc`` and ``n``;
    ``probs`` / ``decisions`` hold the ``(N, F)`` scores and decisions per prompt language.
    """

    table: dict
    probs: dict
    decisions: dict


def zero_shot_scores(labels, probs, decisions, findings: Sequence[str]) -> dict:
    """One cell of the zero-shot table: macro / per-finding AUC and F1 of ``(N, F)`` arrays."""
    auc = multilabel_auc(labels, probs, findings)
    f1 = multilabel_f1(labels, decisions, findings)
    return {
        "macro_auc": auc["macro"],
        "macro_f1": f1["macro"],
        "per_finding_auc": auc["per_finding"],
        "per_finding_f1": f1["per_finding"],
        "undefined_auc": auc["undefined"],
        "n": int(_as_2d("labels", labels).shape[0]),
    }


def zero_shot_table(
    probs: Mapping[str, torch.Tensor | np.ndarray],
    decisions: Mapping[str, torch.Tensor | np.ndarray],
    labels,
    data_languages: Sequence[str],
    findings: Sequence[str],
) -> dict:
    """The prompt-language x data-language table from precomputed scores and decisions.

    Args:
        probs, decisions: ``{prompt_lang: (N, F)}``.
        labels: ``(N, F)`` binary labels.
        data_languages: the report language (data community) of each of the ``N`` images.
        findings: the ``F`` finding names.
    """
    y = _as_2d("labels", labels)
    langs = [str(x) for x in data_languages]
    if len(langs) != y.shape[0]:
        raise MetricInputError(f"data_languages has {len(langs)} entries for {y.shape[0]} labelled images")
    table: dict[str, dict] = {}
    for plang in probs:
        p, d = _as_2d("scores", probs[plang]), _as_2d("decisions", decisions[plang])
        row: dict[str, dict] = {}
        for dlang in sorted(set(langs)):
            idx = [i for i, x in enumerate(langs) if x == dlang]
            row[dlang] = zero_shot_scores(y[idx], p[idx], d[idx], findings)
        row["all"] = zero_shot_scores(y, p, d, findings)
        table[plang] = row
    return table


def evaluate_zero_shot(
    classifier: ZeroShotClassifier,
    image_emb: torch.Tensor,
    labels,
    data_languages: Sequence[str],
    prompt_languages: Sequence[str] | None = None,
) -> ZeroShotEvaluation:
    """Zero-shot AUC / F1 per prompt language x data-language community (Med-UniC Tab. 1 layout).

    Args:
        classifier: the zero-shot classifier (its cached prompt embeddings are used).
        image_emb: ``(N, d)`` L2-normalised image embeddings (encode every image once).
        labels: ``(N, F)`` binary labels in the classifier's finding order.
        data_languages: report language of each image's study.
        prompt_languages: defaults to the classifier's languages.
    """
    y = _as_2d("labels", labels)
    if y.shape[1] != len(classifier.findings):
        raise MetricInputError(f"labels have {y.shape[1]} columns for {len(classifier.findings)} findings {classifier.findings}")
    probs, decisions = {}, {}
    for lang in prompt_languages or classifier.languages:
        pred = classifier.classify_embeddings(image_emb, lang)
        probs[lang], decisions[lang] = pred.probs.cpu(), pred.positive.cpu()
    table = zero_shot_table(probs, decisions, y, data_languages, classifier.findings)
    return ZeroShotEvaluation(table=table, probs=probs, decisions=decisions)
