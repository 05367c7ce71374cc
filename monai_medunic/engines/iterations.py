"""Evaluation and inference iterations for MONAI's ``SupervisedEvaluator`` (the training iteration
is :class:`monai_medunic.engines.step.TrainStep`).

:class:`ZeroShotEvalStep` produces the L2-normalised image embeddings and labels that the zero-shot
metrics consume; :class:`ZeroShotInferStep` gives zero-shot finding probabilities and decisions. Both
use the network's ``encode_image``, the one protocol every method's network offers.
:class:`NamedInputsEvalStep` evaluates a network with named inputs (a VQA model) the way
:class:`~monai_medunic.engines.step.TrainStep` calls it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from monai_medunic.engines.precision import autocast, resolve_precision
from monai_medunic.engines.step import NetworkInputs, prepare_dict_batch, unwrap
from monai_medunic.errors import ConfigurationError

__all__ = ["ZeroShotEvalStep", "ZeroShotInferStep", "NamedInputsEvalStep"]

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

    Output: ``probs`` and ``positive`` ``(B, F)``, ``id``, ``image_path`` and ``sop_instance_uid`` (from the
    records, where present), ``calibrated`` ``(F,)`` (which findings the bundle's calibration decided),
    ``decision_rule``, and ``other_languages``: the ``(B, F)`` decisions in each of the classifier's other
    prompt languages (the image is encoded once).
    """

    def __init__(self, classifier, language: str = "en") -> None:
        self.classifier = classifier
        self.language = language

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        images = torch.as_tensor(batch["image"]).to(device).float()
        emb = self.classifier.encode_images(images)
        pred = self.classifier.classify_embeddings(emb, self.language)
        calibrated = pred.calibrated.cpu() if pred.calibrated is not None else torch.zeros(pred.probs.shape[1], dtype=torch.bool)
        n = len(images)
        # the decisions of the classifier's other prompt languages, so that outputs can say where they disagree
        others = {lang: self.classifier.classify_embeddings(emb, lang).positive.cpu()
                  for lang in self.classifier.languages if lang != self.language}
        return {"probs": pred.probs.cpu(), "positive": pred.positive.cpu(), "id": list(batch.get("id", [""] * n)),
                "image_path": list(batch.get("image_path", [""] * n)), "sop_instance_uid": list(batch.get("sop_instance_uid", [""] * n)),
                "calibrated": calibrated, "decision_rule": pred.decision_rule, "other_languages": others}


class NamedInputsEvalStep:
    """Evaluation iteration for a network with named inputs: in eval mode, without gradients, the network
    is called through :class:`~monai_medunic.engines.step.NetworkInputs` (as the training step calls it);
    the output is the network's output dict plus the batch entries named in ``batch_keys`` (labels,
    answer types, languages: whatever the metrics read).

    Args:
        network_inputs: a :class:`NetworkInputs`, or its ``inputs`` mapping (forward argument -> batch key).
        batch_keys: batch entries copied into the output.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16``.
    """

    def __init__(self, network_inputs: NetworkInputs | Mapping[str, str], batch_keys: Sequence[str] = (),
                 precision: str = "auto") -> None:
        self.network_inputs = network_inputs if isinstance(network_inputs, NetworkInputs) else NetworkInputs(network_inputs)
        self.batch_keys = list(batch_keys)
        self.precision = precision

    def __call__(self, engine, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        batch = prepare_dict_batch(batchdata, device)
        missing = [k for k in self.batch_keys if k not in batch]
        if missing:
            raise ConfigurationError(f"the evaluation reads batch keys {missing}, which the batch lacks (it has {sorted(batch)})")
        network = engine.network
        network.eval()
        with torch.no_grad(), autocast(resolve_precision(self.precision, device), device.type):
            out = self.network_inputs(network, batch)
        return {**{k: batch[k] for k in self.batch_keys}, **{k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point()
                                                            else v for k, v in out.items()}}

