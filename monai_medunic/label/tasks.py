"""MONAI Label infer tasks over a trained vision-language bundle.

Every task of the app derives from :class:`MedUniCInferTask`, a MONAI Label
:class:`~monailabel.tasks.infer.basic_infer.BasicInferTask` that

* reads the image the datastore hands it (the folder of a DICOM series fetched from the PACS, or an
  uploaded DICOM file) with :class:`~monai_medunic.label.images.SelectRadiographd` and
  :class:`~monai_medunic.transforms.radiograph.LoadRadiographd` (``LoadDicomImage``: the original
  instance, with its VOI LUT and MONOCHROME1 polarity, never a NIfTI conversion of it); the one-call
  inference API (:class:`~monai_medunic.pretrained.PretrainedInference`) then resizes it to the
  trained size, as training did;
* validates its request parameters (:meth:`MedUniCInferTask.parse_params`) before anything runs,
  raising :class:`InvalidParameterError` (answered 422) with the parameter's name and what it takes;
* runs the network itself (``run_inferer``) instead of MONAI Label's network cache, which deep-copies
  the network and unpickles checkpoints with ``torch.load``.

Tasks:

* :class:`ZeroShotFindingsTask`: Med-UniC's zero-shot classification (Sec. 4.2) with English or
  Spanish prompts (:meth:`~monai_medunic.pretrained.PretrainedInference.findings`);
* :class:`GroundingTask`: the similarity map of a free-text prompt
  (:meth:`~monai_medunic.pretrained.PretrainedInference.similarity_map`), returned as a label image;
* :class:`SliceSelectionTask`: the top-k slices of a CT series for a report or prompt, with a UniMedI
  bundle (:meth:`~monai_medunic.pretrained.PretrainedInference.select_slices`);
* :class:`SegmentationTask`: finding masks from a trained ``cxr_segmentation`` bundle
  (``--conf segmentation_bundle_path``), returned as a label image.

A new task is one subclass
here (its parameters in :meth:`~MedUniCInferTask.parse_params`, its work in ``run_inferer``, its answer
in ``writer``) and one task config in the app's ``lib/configs``.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.utils.others.generic import device_list, device_map

from monai_medunic.transforms.radiograph import LoadRadiographd

from .images import SOURCE_KEY, SelectRadiographd
from .scorer import FindingsScorer

__all__ = ["InvalidParameterError", "MedUniCInferTask", "ZeroShotFindingsTask", "GroundingTask", "SliceSelectionTask", "SegmentationTask", "DISCLAIMER"]

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
        return [SelectRadiographd(keys=self.input_key), LoadRadiographd(keys=self.input_key, frame=0)]

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
        data["findings"] = self.scorer.inference.findings(data[self.input_key], data["language"])
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[None, dict[str, Any]]:
        findings = data["findings"]
        result = {
            "language": data["language"],
            "algorithm": self._algorithm(),
            "source": self._source(data),
            "findings": findings,
            "prediction": [{"idx": i, "label": f["finding"], "score": f["probability"]} for i, f in enumerate(findings)],
            "disclaimer": DISCLAIMER,
        }
        return None, result


#: the longest free-text prompt the grounding task takes (characters)
MAX_PROMPT_CHARS = 512
GROUNDING_LABELS = ("heatmap", "mask")


class GroundingTask(MedUniCInferTask):
    """Phrase grounding: where in the radiograph the bundle finds a free-text prompt, as a label image.

    Request parameters:

    * ``text`` (required): the prompt, any language the text encoder was trained on (at most
      :data:`MAX_PROMPT_CHARS` characters);
    * ``kind``: ``contribution`` (default: each patch's share of the image-text cosine, the map's mean
      over the patch grid is the global score) or ``cosine`` (each patch's own cosine); see
      :class:`~monai_medunic.pretrained.SimilarityMap`;
    * ``label``: ``heatmap`` (default: the map scaled from its min..max to 0..255, uint8) or ``mask``
      (1 where the scaled map is ``>= threshold``, the region the grounding metric's IoU scores);
    * ``threshold``: in (0, 1], default 0.5.

    The label is a 2D NIfTI of the radiograph's rows and columns with its pixel spacing (the layout of
    the demo's truth masks: array ``(rows, columns)``, spacing on the affine's diagonal); the JSON
    answer holds the global ``score``, the map's ``min`` / ``max`` / grid ``mean``, the ``peak``
    ``[row, column]``, the grid size and the instance scored (UIDs only).
    """

    def __init__(self, scorer: FindingsScorer) -> None:
        super().__init__(
            scorer,
            type=InferType.SEGMENTATION,
            labels=["grounding"],
            description=(
                f"Phrase grounding: similarity map of a free-text prompt on a chest X-ray ({scorer.name} {scorer.version}); "
                f"params text (required), kind contribution|cosine, label heatmap|mask, threshold. {DISCLAIMER}"
            ),
            config={"text": "", "kind": ["contribution", "cosine"], "label": list(GROUNDING_LABELS), "threshold": 0.5},
        )

    def parse_params(self, request: Mapping[str, Any]) -> dict[str, Any]:
        params = super().parse_params(request)
        text = request.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_PROMPT_CHARS:
            raise InvalidParameterError("text", text, f"is required: a non-empty prompt of at most {MAX_PROMPT_CHARS} characters")
        params["text"] = text.strip()
        params["kind"] = _choice("kind", request.get("kind", self._config["kind"]), ("contribution", "cosine"))
        params["label"] = _choice("label", request.get("label", self._config["label"]), GROUNDING_LABELS)
        threshold = request.get("threshold", self._config["threshold"])
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) <= 1.0 or not math.isfinite(threshold):
            raise InvalidParameterError("threshold", threshold, "must be a number in (0, 1]")
        params["threshold"] = float(threshold)
        return params

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        image = data[self.input_key]
        data["similarity"] = self.scorer.inference.similarity_map(image, data["text"], kind=data["kind"])
        data["pixel_spacing"] = image.meta.get("pixel_spacing") if hasattr(image, "meta") else None
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        from monai_medunic.data.demo.truth import write_mask_nifti_2d

        smap = data["similarity"]
        values = np.asarray(smap.map, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        label = (scaled >= data["threshold"]).astype(np.uint8) if data["label"] == "mask" else np.round(scaled * 255).astype(np.uint8)
        spacing = data.get("pixel_spacing") or (1.0, 1.0)
        fd, path = tempfile.mkstemp(prefix="grounding_", suffix=".nii.gz")
        os.close(fd)
        write_mask_nifti_2d(path, label, (float(spacing[0]), float(spacing[1])))
        peak = np.unravel_index(int(np.argmax(values)), values.shape)
        result = {
            "text": smap.text,
            "kind": smap.kind,
            "label": data["label"],
            "threshold": data["threshold"],
            "score": smap.score,
            "map": {
                "min": lo,
                "max": hi,
                "grid_mean": float(np.mean(smap.grid)),
                "offset": smap.offset,
                "peak": [int(peak[0]), int(peak[1])],
                "grid": list(np.shape(smap.grid)),
                "shape": list(values.shape),
            },
            "algorithm": self._algorithm(),
            "source": self._source(data),
            "disclaimer": DISCLAIMER,
        }
        return path, result


#: the most slices a slice-selection request may ask for
MAX_SELECTED_SLICES = 64


class SliceSelectionTask(MedUniCInferTask):
    """CT slice selection with a trained UniMedI bundle (UniMedI Sec. 3.2): the ``k`` slices of a CT
    series most relevant to a report or prompt, or, without text, by the image encoder's CLS attention
    (Eq. 1-2); :meth:`~monai_medunic.pretrained.PretrainedInference.select_slices`.

    The series folder the datastore downloaded (original instances, no NIfTI conversion) is read by the
    bundle's volume pipeline (HU, the trained window, refusing missing / duplicated slices, mixed
    orientations or inconsistent spacing: 422 naming the reason).

    Request parameters:

    * ``text``: a report or prompt (at most :data:`MAX_PROMPT_CHARS` characters); empty or absent: attention;
    * ``k``: slices to select, an integer in ``[1, MAX_SELECTED_SLICES]`` (default: the bundle's trained
      ``num_slices``; more than the network's slabs is a 422).

    The JSON answer holds ``selected`` (best first: the slice index along the series' sorted slice axis,
    0 = the lowest position along the slice normal, and its score), ``scores`` (every slice), the
    ``method``, the number of slices, the study / series UIDs and the algorithm.
    """

    def __init__(self, scorer: FindingsScorer) -> None:
        super().__init__(
            scorer,
            type=InferType.CLASSIFICATION,
            labels=["selected_slice"],
            description=(
                f"CT slice selection (UniMedI Sec. 3.2) by a report or prompt, or by attention ({scorer.name} {scorer.version}); "
                f"params text (optional), k. {DISCLAIMER}"
            ),
            config={"text": "", "k": int(getattr(scorer.inference.model, "num_slices", 1))},
        )
        self.dimension = 3

    def pre_transforms(self, data=None) -> Sequence[Callable]:
        return []  # the series folder goes to the bundle's own volume pipeline as it is

    def parse_params(self, request: Mapping[str, Any]) -> dict[str, Any]:
        params = super().parse_params(request)
        text = request.get("text", "")
        if text is None:
            text = ""
        if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
            raise InvalidParameterError("text", text, f"must be a prompt of at most {MAX_PROMPT_CHARS} characters (empty: attention)")
        params["text"] = text.strip() or None
        k = request.get("k", self._config["k"])
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SELECTED_SLICES:
            raise InvalidParameterError("k", k, f"must be an integer in [1, {MAX_SELECTED_SLICES}]")
        params["k"] = k
        return params

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        from monai_medunic.errors import ConfigurationError

        try:  # unreadable series (DataError / VolumeReadError) are answered 422 by monai_medunic.label.http
            data["selection"] = self.scorer.inference.select_slices(data[self.input_key], data["text"], k=data["k"])
        except ConfigurationError as err:  # k beyond the network's slabs: the client's parameter
            raise InvalidParameterError("k", data["k"], str(err)) from None
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[None, dict[str, Any]]:
        from monai_medunic.transforms.dicom_io import read_dicom

        sel = data["selection"]
        source: dict[str, Any] = {}
        path = data.get(self.input_key)
        if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
            first = next((os.path.join(r, f) for r, _, fs in sorted(os.walk(path)) for f in sorted(fs)), None)
            if first is not None:
                header = read_dicom(first, header_only=True)
                source = {"study_instance_uid": str(header.get("StudyInstanceUID", "")),
                          "series_instance_uid": str(header.get("SeriesInstanceUID", "")),
                          "modality": str(header.get("Modality", ""))}
        scores = [float(s) for s in sel.scores.tolist()]
        result = {
            "text": data["text"],
            "k": data["k"],
            "method": sel.method,
            "num_slices": len(scores),
            "selected": [{"slice": int(i), "score": scores[int(i)]} for i in sel.indices],
            "scores": scores,
            "algorithm": self._algorithm(),
            "source": source,
            "disclaimer": DISCLAIMER,
        }
        return None, result


class SegmentationTask(MedUniCInferTask):
    """Finding masks of a chest radiograph from a trained ``cxr_segmentation`` bundle
    (:func:`~monai_medunic.pretrained.load_segmentation_bundle`), the inference path of the Deploy app
    ``cxr_segmentation``: the original instance through ``LoadDicomImage``, resized to the bundle's
    ``image_size`` by the model input transform of training, then
    :func:`~monai_medunic.networks.dense.predict_masks` (sigmoid, bilinear resize of the probabilities
    to the radiograph's rows and columns, the bundle's threshold).

    The label is a 2D NIfTI of the radiograph's rows and columns (pixel spacing on the affine) holding
    ``i + 1`` where finding ``i`` (the bundle's order, ``labels`` of ``/info``) is present; where masks
    overlap the later finding is written. The JSON answer gives each finding's own pixel count (overlaps
    included) and the instance segmented (UIDs only).
    """

    def __init__(self, scorer: FindingsScorer, segmentation: Any) -> None:
        self.segmentation = segmentation
        super().__init__(
            scorer,
            type=InferType.SEGMENTATION,
            labels=list(segmentation.findings),
            description=(
                f"Finding masks of a chest X-ray ({segmentation.name} {segmentation.version}): label i+1 = finding i. {DISCLAIMER}"
            ),
            config={},
        )

    def _algorithm(self) -> dict[str, str]:
        return {"name": self.segmentation.name, "version": self.segmentation.version}

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        from monai_medunic.networks.dense import predict_masks
        from monai_medunic.transforms.pipelines import model_input_transform

        image = data[self.input_key]
        seg = self.segmentation
        x = torch.as_tensor(model_input_transform(seg.image_size)(image))[None].float()
        x = x.to(next(seg.network.parameters()).device)
        data["masks"] = predict_masks(seg.network, x, seg.threshold, tuple(image.shape[1:]))[0].cpu().numpy()
        data["pixel_spacing"] = image.meta.get("pixel_spacing") if hasattr(image, "meta") else None
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        from monai_medunic.data.demo.truth import write_mask_nifti_2d

        masks = data["masks"]
        label = np.zeros(masks.shape[1:], dtype=np.uint8)
        for i, m in enumerate(masks):
            label[m] = i + 1
        spacing = data.get("pixel_spacing") or (1.0, 1.0)
        fd, path = tempfile.mkstemp(prefix="segmentation_", suffix=".nii.gz")
        os.close(fd)
        write_mask_nifti_2d(path, label, (float(spacing[0]), float(spacing[1])))
        result = {
            "findings": [{"finding": f, "label": i + 1, "pixels": int(m.sum())} for i, (f, m) in enumerate(zip(self.segmentation.findings, masks))],
            "shape": list(label.shape),
            "threshold": float(self.segmentation.threshold),
            "algorithm": self._algorithm(),
            "source": self._source(data),
            "disclaimer": DISCLAIMER,
        }
        return path, result
