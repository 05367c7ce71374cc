"""Evaluation and inference iterations for MONAI's ``SupervisedEvaluator`` (the training iteration
is :class:`monai_medunic.engines.step.TrainStep`).

:class:`ZeroShotEvalStep` produces the L2-normalised image embeddings and labels that the zero-shot
metrics consume; :class:`ZeroShotInferStep` gives zero-shot finding probabilities and decisions. Both
use the network's ``encode_image``, the one protocol every method's network offers.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from monai_medunic.engines.precision import autocast, resolve_precision
from monai_medunic.engines.step import unwrap
from monai_medunic.errors import ConfigurationError

__all__ = ["ZeroShotEvalStep", "ZeroShotInferStep"]

logger = logging.getLogger(__name__)


class ZeroShotEvalStep:
    """Evaluation iteration: L2-normalised image embeddings (``pred``) and finding labels (``label``)."""

    def __init__(self, precision: str = "auto") -> None:
        self.precision = precision

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        device = torch.device(engine.state.device)
        network = unwrap(engine.network)
        network.eval()
        images = torch.as_tensor(batch["image"]).to(device).float()
        if "labels" not in batch:
            raise ConfigurationError("zero-shot validation needs 'labels' in every validation record")
        with torch.no_grad(), autocast(resolve_precision(self.precision, device), device.type):
            emb = network.encode_image(images)
        return {"pred": emb.float(), "label": torch.as_tensor(batch["labels"]).float()}


class ZeroShotInferStep:
    """Inference iteration: zero-shot finding probabilities and decisions in one prompt language.

    Output: ``probs`` and ``positive`` ``(B, F)``, and ``id`` (the records' identifiers, if present).
    """

    def __init__(self, classifier, language: str = "en") -> None:
        self.classifier = classifier
        self.language = language

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        images = torch.as_tensor(batch["image"]).to(device).float()
        pred = self.classifier(images, self.language)
        return {"probs": pred.probs.cpu(), "positive": pred.positive.cpu(), "id": list(batch.get("id", [""] * len(images)))}
