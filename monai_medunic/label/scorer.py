"""What the MONAI Label tasks need from a trained bundle, loaded in one place.

:func:`load_findings_scorer` is the only function of :mod:`monai_medunic.label` that touches
:mod:`monai_medunic.pretrained`. It loads the bundle with
:func:`~monai_medunic.pretrained.load_pretrained_bundle`, builds the zero-shot classifier with
:func:`~monai_medunic.pretrained.zero_shot_classifier` (Med-UniC Sec. 4.2: an image is positive for a
finding when its cosine similarity to the positive prompt exceeds that to the negative prompt; the
score is ``sigmoid((s_pos - s_neg) / tau)``) and the preprocessing of
:func:`~monai_medunic.pretrained.inference_preprocessing` (``LoadDicomImage``: Modality LUT, VOI LUT,
MONOCHROME1; then the resize to the trained size), i.e. exactly what training validated on and what
the Deploy app ``cxr_findings`` runs. When the one-call inference API of ``pretrained`` lands, this
function is the one to switch to it; the tasks only see :class:`FindingsScorer`.

The prompt embeddings of every prompt language are encoded once, here, and cached by the classifier;
a request then costs one image-encoder forward pass and one product with the cached prompt matrix.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

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
        classify: ``(images (B, 1, S, S), language) -> (probs (B, F), positive (B, F))``.
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
    classify: Callable[[torch.Tensor, str], tuple[torch.Tensor, torch.Tensor]]
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def load_findings_scorer(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu") -> FindingsScorer:
    """Load a trained ``cxr_medunic_pretrain`` bundle for the Label tasks (see the module docstring).

    Raises:
        ModelLoadError: the folder is not a trained bundle (the message names the path and the file).
    """
    from monai_medunic.pretrained import inference_preprocessing, load_pretrained_bundle, zero_shot_classifier

    t0 = time.perf_counter()
    device = torch.device(device)
    bundle = load_pretrained_bundle(bundle_dir, device=device)
    classifier = zero_shot_classifier(bundle.bundle_dir, bundle.model, bundle.prompt_languages)
    classifier.refresh()  # every language's prompt embeddings, once
    preprocess = inference_preprocessing(bundle.bundle_dir, keys="image", frame=0)

    @torch.no_grad()
    def classify(images: torch.Tensor, language: str) -> tuple[torch.Tensor, torch.Tensor]:
        pred = classifier(images.to(device=device, dtype=torch.float32), language)
        return pred.probs.cpu(), pred.positive.cpu()

    scorer = FindingsScorer(
        bundle_dir=Path(bundle.bundle_dir),
        name=bundle.name,
        version=bundle.version,
        findings=list(bundle.findings),
        languages=list(classifier.languages),
        image_size=int(bundle.image_size),
        device=device,
        preprocess=preprocess,
        classify=classify,
        load_seconds=time.perf_counter() - t0,
    )
    logger.info(
        "bundle %s %s on %s: %d findings, prompt languages %s (%.2f s)",
        scorer.name,
        scorer.version,
        device,
        len(scorer.findings),
        scorer.languages,
        scorer.load_seconds,
    )
    return scorer
