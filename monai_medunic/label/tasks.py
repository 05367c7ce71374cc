"""MONAI Label infer tasks over a trained Med-UniC bundle.

Every task of the app derives from :class:`MedUniCInferTask`, a MONAI Label
:class:`~monailabel.tasks.infer.basic_infer.BasicInferTask` that

* reads the image the datastore hands it (the folder of a DICOM series fetched from the PACS, or an
  uploaded DICOM file) with :class:`~monai_medunic.label.images.SelectRadiographd` and the bundle's
  own preprocessing (``LoadDicomImage``, then the resize to the trained size): the original
  instance, with its VOI LUT and MONOCHROME1 polarity, never a NIfTI conversion of it;
* validates its request parameters (:meth:`MedUniCInferTask.parse_params`) before anything runs,
  raising :class:`InvalidParameterError` (answered 422) with the parameter's name and what it takes;
* runs the network itself (``run_inferer``) instead of MONAI Label's network cache, which deep-copies
  the network and unpickles checkpoints with ``torch.load``.

:class:`ZeroShotFindingsTask` is the first task: Med-UniC's zero-shot classification (Sec. 4.2) with
English or Spanish prompts. More tasks (grounding, segmentation, slice selection) add a subclass here
and a task config in the app's ``lib/configs``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import device_list, device_map

from monai_medunic.text.prompts import translate_finding

from .images import SOURCE_KEY, SelectRadiographd
from .scorer import FindingsScorer

__all__ = ["InvalidParameterError", "MedUniCInferTask", "ZeroShotFindingsTask", "DISCLAIMER"]

logger = logging.getLogger(__name__)

DISCLAIMER = "Research use only; not a diagnosis."


class InvalidParameterError(MONAILabelException):
    """A request parameter has a value the task cannot use (answered 422)."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(MONAILabelError.INVALID_INPUT, f"parameter '{name}': {expected}, got {str(value)[:80]!r}")


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """A string among ``allowed``; a list (MONAI Label's way to offer choices in a config) means its first item."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, str) or value.strip().lower() not in allowed:
        raise InvalidParameterError(name, value, f"must be one of {list(allowed)}")
    return value.strip().lower()


class MedUniCInferTask(BasicInferTask):
    """Base of the app's tasks (see the module docstring).

    Args:
        scorer: the loaded bundle.
        type: MONAI Label's infer type.
        labels: the task's label names.
        description: shown by ``/info``.
        config: the task's user options (``/info``); lists offer choices, the first item is the default.
    """

    def __init__(
        self,
        scorer: FindingsScorer,
        type: InferType | str,
        labels: Sequence[str],
        description: str,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.scorer = scorer
        super().__init__(
            path=None,
            network=None,
            type=type,
            labels=list(labels),
            dimension=2,
            description=description,
            config=dict(config or {}),
        )
        # the network lives on the scorer's device; MONAI Label's "device" option lists just that one
        self._config["device"] = [d for d, v in device_map().items() if torch.device(v).type == scorer.device.type] or [
            str(scorer.device)
        ]

    def is_valid(self) -> bool:
        return True

    def parse_params(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Checked parameters of ``request`` (the task's defaults filled in). Raises :class:`InvalidParameterError`."""
        device = request.get("device", self._config["device"])
        if isinstance(device, (list, tuple)):
            device = device[0] if device else None
        allowed = set(device_list()) | set(device_map().values()) | {str(self.scorer.device)}
        if not isinstance(device, str) or device not in allowed:
            raise InvalidParameterError("device", device, f"must be one of {sorted(allowed)}")
        return {"device": device}

    def __call__(self, request, callbacks=None):
        params = self.parse_params(request)
        request = dict(request, **params)
        return super().__call__(request, callbacks)

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return [SelectRadiographd(keys=self.input_key), self.scorer.preprocess]

    def post_transforms(self, data=None) -> Sequence[Callable]:
        return []

    def _source(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return dict(data.get(SOURCE_KEY) or {})

    def _algorithm(self) -> dict[str, str]:
        return {"name": self.scorer.name, "version": self.scorer.version}


class ZeroShotFindingsTask(MedUniCInferTask):
    """Zero-shot chest X-ray findings (Med-UniC Sec. 4.2) in a configurable prompt language.

    Request parameter ``language`` (default: the app's ``--conf language``, else ``en``): one of the
    bundle's prompt languages. The answer (``/infer/<task>?output=json``) holds, per finding in the
    bundle's order, the probability ``sigmoid((s_pos - s_neg) / tau)`` and the decision
    ``s_pos > s_neg``, the finding's name in the language, the instance that was scored (UIDs only)
    and the algorithm; ``prediction`` repeats the scores in MONAI Label's classification layout.
    """

    def __init__(self, scorer: FindingsScorer, language: str = "en") -> None:
        language = _choice("language", language, scorer.languages)
        ordered = [language] + [lang for lang in scorer.languages if lang != language]
        super().__init__(
            scorer,
            type=InferType.CLASSIFICATION,
            labels=scorer.findings,
            description=(
                f"Zero-shot chest X-ray findings ({scorer.name} {scorer.version}, Med-UniC Sec. 4.2), "
                f"prompts in {', '.join(ordered)}. {DISCLAIMER}"
            ),
            config={"language": ordered},
        )

    def parse_params(self, request: Mapping[str, Any]) -> dict[str, Any]:
        params = super().parse_params(request)
        params["language"] = _choice("language", request.get("language", self._config["language"]), self.scorer.languages)
        return params

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        image = data[self.input_key]
        image = image if torch.is_tensor(image) else torch.as_tensor(image)
        probs, positive = self.scorer.classify(image[None] if convert_to_batch else image, data["language"])
        data[self.output_label_key] = probs[0]
        data["positive"] = positive[0]
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[None, dict[str, Any]]:
        language = data["language"]
        probs = [float(p) for p in data[self.output_label_key].tolist()]
        positive = [bool(v) for v in data["positive"].tolist()]
        findings = [
            {"finding": key, "name": translate_finding(key, language), "probability": p, "positive": pos}
            for key, p, pos in zip(self.scorer.findings, probs, positive)
        ]
        result = {
            "language": language,
            "algorithm": self._algorithm(),
            "source": self._source(data),
            "findings": findings,
            "prediction": [{"idx": i, "label": key, "score": p} for i, (key, p) in enumerate(zip(self.scorer.findings, probs))],
            "disclaimer": DISCLAIMER,
        }
        return None, result
