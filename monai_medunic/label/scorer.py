"""What the MONAI Label tasks need from a trained bundle, loaded in one place.

:func:`load_findings_scorer` is the only function of :mod:`monai_medunic.label` that touches
:mod:`monai_medunic.pretrained`. It loads the bundle once with the one-call inference API,
:func:`~monai_medunic.pretrained.load_inference`, and hands the tasks a :class:`FindingsScorer`
around it:

* zero-shot findings are :meth:`~monai_medunic.pretrained.PretrainedInference.findings` (Med-UniC
  Sec. 4.2: positive when the image is closer to the positive prompt than to the negative one, score
  ``sigmoid((s_pos - s_neg) / tau)``; the bundle's decision rule, taken in one place);
* grounding maps are :meth:`~monai_medunic.pretrained.PretrainedInference.similarity_map`;
* every image is read as the API reads it (``LoadDicomImage``: Modality LUT, VOI LUT, MONOCHROME1;
  then the resize to the trained size, :func:`~monai_medunic.pretrained.inference_preprocessing`),
  i.e. exactly what training validated on and what the Deploy app ``cxr_findings`` runs.

The prompt embeddings of every prompt language are encoded once, at load, and cached by the API
(free-text prompts of the grounding task too); a findings request then costs one image-encoder
forward pass and one product with the cached prompt matrix.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from monai_medunic.pretrained import PretrainedInference

__all__ = ["FindingsScorer", "load_findings_scorer"]

logger = logging.getLogger(__name__)


@dataclass
class FindingsScorer:
    """A trained bundle as the Label tasks use it.

    Attributes:
        bundle_dir: the trained bundle folder.
        name, version: the bundle's ``metadata.json`` name and version (the algorithm in results).
        findings: English finding keys, in the bundle's order.
        languages: the prompt languages whose embeddings are cached.
        image_size: the trained input size.
        device: where the network runs.
        preprocess: dictionary transform: ``{"image": DICOM file or dataset}`` -> ``(1, S, S)`` float32.
        inference: the one-call inference API over the bundle (``findings``, ``similarity_map``, ...).
        load_seconds: bundle loading + prompt encoding time.
    """

    bundle_dir: Path
    name: str
    version: str
    findings: list[str]
    languages: list[str]
    image_size: int
    device: torch.device
    preprocess: Callable[[dict], dict]
    inference: PretrainedInference
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_findings_scorer(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu") -> FindingsScorer:
    """Load a trained ``cxr_medunic_pretrain`` bundle for the Label tasks (see the module docstring).

    Raises:
        ModelLoadError: the folder is not a trained bundle (the message names the path and the file).
    """
    from monai_medunic.pretrained import inference_preprocessing, load_inference

    t0 = time.perf_counter()
    inference = load_inference(bundle_dir, device=device)
    bundle = inference.bundle
    scorer = FindingsScorer(
        bundle_dir=Path(bundle.bundle_dir),
        name=bundle.name,
        version=bundle.version,
        findings=list(inference.finding_keys),
        languages=list(inference.languages),
        image_size=int(bundle.image_size),
        device=inference.device,
        preprocess=inference_preprocessing(bundle.bundle_dir, keys="image", frame=0),
        inference=inference,
        load_seconds=time.perf_counter() - t0,
    )
    logger.info(
        "bundle %s %s on %s: %d findings, prompt languages %s (%.2f s)",
        scorer.name,
        scorer.version,
        scorer.device,
        len(scorer.findings),
        scorer.languages,
        scorer.load_seconds,
    )
    return scorer
