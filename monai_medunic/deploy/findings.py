"""Zero-shot findings operator: Med-UniC's bilingual zero-shot classification (Sec. 4.2) inside a Deploy app.

The operator holds a :class:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier` over the trained
bundle, with the bundle's calibration (:mod:`monai_medunic.metrics.calibration`: per-finding thresholds and
Platt-scaled probabilities of the prompt language); an uncalibrated bundle keeps the paper's ``s_pos > s_neg``
and every result says so (``decision_rule``, ``calibrated_findings``). The positive / negative prompt embeddings of the configured language are encoded once, when
the operator starts; each study then costs one image-encoder forward pass and one product with the
cached ``(2F, d)`` prompt matrix.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_medunic.errors import ConfigurationError
from monai_medunic.metrics.zero_shot import ZeroShotClassifier
from monai_medunic.pretrained import PretrainedBundle

from .results import PreparedImage, StudyFindings

__all__ = ["ZeroShotFindingsOperator", "classify_prepared"]

logger = logging.getLogger(__name__)


def classify_prepared(
    classifier: ZeroShotClassifier,
    images: Sequence[PreparedImage],
    language: str,
    algorithm_name: str,
    algorithm_version: str,
    batch_size: int = 8,
) -> list[StudyFindings]:
    """Zero-shot findings for prepared images, batched (``batch_size`` studies per forward pass)."""
    results: list[StudyFindings] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        batch = torch.stack([torch.as_tensor(p.image, dtype=torch.float32) for p in chunk])
        pred = classifier(batch, language)
        calibrated = [bool(v) for v in pred.calibrated.tolist()] if pred.calibrated is not None else [False] * len(classifier.findings)
        decision = {"decision_rule": pred.decision_rule,
                    "calibrated_findings": [f for f, c in zip(classifier.findings, calibrated) if c],
                    "probability": "calibrated (Platt scaling on validation data)" if all(calibrated) else
                    "UNCALIBRATED score sigmoid((s_pos - s_neg) / tau) where not calibrated: not a probability"}
        for i, prepared in enumerate(chunk):
            results.append(
                StudyFindings(
                    source=prepared,
                    findings=list(classifier.findings),
                    probs=[float(v) for v in pred.probs[i].tolist()],
                    positive=[bool(v) for v in pred.positive[i].tolist()],
                    language=language,
                    algorithm_name=algorithm_name,
                    algorithm_version=algorithm_version,
                    extra=dict(decision),
                )
            )
    return results


class ZeroShotFindingsOperator(Operator):
    """Per-finding probabilities and positive / negative decisions for each prepared study.

    Named input:
        images: ``list[PreparedImage]`` from :class:`~monai_medunic.deploy.preprocessing.CXRPreprocessOperator`.

    Named output:
        findings: ``list[StudyFindings]``.

    Args:
        fragment: the application.
        bundle: the trained bundle (:func:`monai_medunic.pretrained.load_pretrained_bundle`).
        language: prompt and report language; one of the bundle's ``prompt_languages``.
        batch_size: studies per forward pass.
    """

    def __init__(
        self, fragment: Fragment, *args, bundle: PretrainedBundle, language: str = "en", batch_size: int = 8, **kwargs
    ) -> None:
        language = str(language).lower()
        if language not in bundle.prompt_languages:
            raise ConfigurationError(
                f"language '{language}' is not one of the bundle's prompt languages {bundle.prompt_languages}"
            )
        self.bundle = bundle
        self.language = language
        self.batch_size = int(batch_size)
        # the bundle's calibration (thresholds and Platt scaling per language), or the paper's rule, said so
        self.classifier = ZeroShotClassifier(bundle.model, bundle.tokenize, bundle.findings, languages=[language],
                                             calibration=getattr(bundle, "calibration", None))
        self.input_name = "images"
        self.output_name = "findings"
        self.prompt_seconds = 0.0
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def start(self) -> None:
        t0 = time.perf_counter()
        self.classifier.refresh()  # encode the prompts once
        self.prompt_seconds = time.perf_counter() - t0
        logger.info(
            "prompt embeddings ready: %d findings, language %s (%.2f s)",
            len(self.bundle.findings),
            self.language,
            self.prompt_seconds,
        )

    def compute(self, op_input, op_output, context) -> None:
        images = op_input.receive(self.input_name)
        t0 = time.perf_counter()
        results = classify_prepared(
            self.classifier, images, self.language, self.bundle.name, self.bundle.version, self.batch_size
        )
        logger.info("zero-shot findings for %d study(ies) in %.3f s", len(results), time.perf_counter() - t0)
        op_output.emit(results, self.output_name)
