"""Detection batches for MONAI's engines: the training step's dict and the evaluator's ``(images, targets)``.

A detection batch (:class:`~monai_medunic.transforms.dense.DetectionCollate`) holds stacked ``image``
tensors and ``targets``, a list of ``{"boxes", "labels"}`` per image. ``RetinaNetDetector`` takes
``(images, targets)`` in training (and returns its losses, which the training step's objective weights)
and ``images`` in evaluation (and returns the detections). The functions here move both to the device:

* :func:`prepare_detection_batch`: ``prepare_batch`` of a ``SupervisedTrainer`` whose iteration is
  :class:`~monai_medunic.engines.step.TrainStep` (a dict batch; ``network_inputs``
  ``{"input_images": "image", "targets": "targets"}``).
* :func:`detection_eval_batch`: ``prepare_batch`` of a ``SupervisedEvaluator`` (its default iteration
  reads ``(inputs, targets)``; the inferer calls the detector on the images only).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from monai_medunic.engines.step import prepare_dict_batch
from monai_medunic.errors import ConfigurationError

__all__ = ["prepare_detection_batch", "detection_eval_batch", "targets_to_device"]


def targets_to_device(targets: Any, device: torch.device | str | None, non_blocking: bool = False) -> list[dict[str, torch.Tensor]]:
    """``[{"boxes": ..., "labels": ...}, ...]`` with every tensor on ``device``."""
    if not isinstance(targets, (list, tuple)):
        raise ConfigurationError(f"detection targets must be a list of dicts (DetectionCollate), got {type(targets).__name__}")
    return [{k: torch.as_tensor(v).as_subclass(torch.Tensor).to(device=device, non_blocking=non_blocking) for k, v in t.items()}
            for t in targets]


def prepare_detection_batch(batchdata: Mapping[str, Any], device: torch.device | str | None = None, non_blocking: bool = False,
                            targets_key: str = "targets", **kwargs: Any) -> dict[str, Any]:
    """The training step's dict batch (:func:`~monai_medunic.engines.step.prepare_dict_batch`) with the
    per-image targets moved to ``device`` too."""
    batch = prepare_dict_batch(batchdata, device, non_blocking, **kwargs)
    if targets_key not in batch:
        raise ConfigurationError(f"the detection batch has no '{targets_key}' (collate it with DetectionCollate); it has {sorted(batch)}")
    batch[targets_key] = targets_to_device(batch[targets_key], device, non_blocking)
    return batch


def detection_eval_batch(batchdata: Mapping[str, Any], device: torch.device | str | None = None, non_blocking: bool = False,
                         image_key: str = "image", targets_key: str = "targets", **kwargs: Any) -> tuple[torch.Tensor, list]:
    """``(images, targets)`` on ``device`` for ``SupervisedEvaluator(prepare_batch=...)``."""
    batch = prepare_detection_batch(batchdata, device, non_blocking, targets_key, **kwargs)
    return batch[image_key], batch[targets_key]
