"""Fit the zero-shot calibration of a trained bundle at the end of pre-training.

:class:`FitCalibrationHandler` runs when the trainer completes, after
:class:`~monai_medunic.engines.handlers.ExportPretrainedHandler` (list it after the export handler: Ignite
calls the handlers of one event in the order they were attached). It encodes the validation split once
with the final weights, fits per prompt language and finding a decision threshold and Platt scaling
(:func:`monai_medunic.metrics.calibration.fit_calibration`), and writes ``models/calibration.json`` into
the bundle, where :func:`monai_medunic.pretrained.load_pretrained_bundle` finds it. Attach it on rank 0
only, like the export: it reads the whole validation dataset, not a rank's shard.
"""

from __future__ import annotations

import logging
import os

import torch
from ignite.engine import Engine, Events

from monai_medunic.errors import ConfigurationError

__all__ = ["FitCalibrationHandler"]

logger = logging.getLogger(__name__)


class FitCalibrationHandler:
    """At the end of training, fit the bundle's zero-shot calibration on the validation data.

    Args:
        bundle_root: the trained bundle (``models/`` receives ``calibration.json``).
        validator: the bundle's validation evaluator (its data loader's dataset is encoded; records
            need ``image`` and ``labels``).
        classifier: the validation :class:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier` (its
            findings, prompt languages, tokenizer and ``tau``); prompts are re-encoded with the final weights.
        batch_size: encoding batch size.
    """

    def __init__(self, bundle_root: str | os.PathLike, validator: Engine, classifier, batch_size: int = 32) -> None:
        self.bundle_root = bundle_root
        self.validator = validator
        self.classifier = classifier
        self.batch_size = int(batch_size)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        from torch.utils.data import DataLoader

        from monai_medunic.metrics.calibration import fit_classifier_calibration, save_calibration

        dataset = self.validator.data_loader.dataset
        if len(dataset) == 0:
            raise ConfigurationError("the validation split is empty: no data to fit the zero-shot calibration on")
        device = torch.device(engine.state.device) if getattr(engine.state, "device", None) else torch.device("cpu")
        model = self.classifier._unwrapped()
        was_training = model.training
        model.eval()
        self.classifier.refresh()
        embs, labels = [], []
        try:
            for batch in DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=0):
                if "labels" not in batch:
                    raise ConfigurationError("zero-shot calibration needs 'labels' in every validation record")
                embs.append(self.classifier.encode_images(torch.as_tensor(batch["image"]).to(device).float()).cpu())
                labels.append(torch.as_tensor(batch["labels"]).float().cpu())
        finally:
            model.train(was_training)
        emb, y = torch.cat(embs), torch.cat(labels)
        cal = fit_classifier_calibration(self.classifier, emb, y.numpy(),
                                         fitted_on={"split": "val", "at": "end of training", "epoch": int(engine.state.epoch)})
        path = save_calibration(self.bundle_root, cal)
        fitted = {lang: sum(c.fitted for c in cols.values()) for lang, cols in cal.languages.items()}
        logger.info("zero-shot calibration on %d validation images (fitted findings per language: %s) written to %s",
                    len(y), fitted, path)
