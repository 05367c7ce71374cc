"""Grad-CAM of a prompt-conditioned similarity (Med-UniC Fig. 5), with MONAI's :class:`~monai.visualize.GradCAM`.

For a finding and a prompt language, the zero-shot decision is driven by the margin
``s = v . (t_pos - t_neg)`` between the image embedding ``v`` (L2-normalised) and the cached positive
and negative prompt embeddings. :class:`PromptSimilarityModel` exposes that margin as a one-class
"logit" ``(B, 1)``, so MONAI's Grad-CAM explains it on the image encoder's last convolutional stage
(``image_encoder.backbone.layer4`` for the ResNets). Running it with the English and the Spanish
prompt pair of the same finding shows whether the two languages look at the same place.

ViT encoders have no convolutional stage here; :func:`default_target_layer` refuses them with a
clear error.

**Why a map can be empty (uniform).** The ResNet encoders mean-pool ``layer4``, so the margin's gradient
is the same at every cell: Grad-CAM's channel weights are ``alpha = g / (h w)`` with ``g`` the gradient
of the margin at the pooled feature ``x``, and its map before the ReLU is ``g . f_p / (h w)``, each
cell's first-order contribution to the margin. Those contributions sum to ``g . x``; through the L2
normalisation of the embedding a projector without biases would give ``g . x = 0`` (the normalised
embedding does not change when ``x`` is scaled), so the sum is set by the projector's biases (its
BatchNorm shifts), not by the image. When it is negative and the cells differ by less than it, every
cell is ``<= 0``, MONAI's ReLU removes all of them, and :func:`_unit_range` returns zeros -- whatever
the zero-shot decision. Measured on the demo bundle (``medunic grounding`` counts these maps as
``flat``): flat maps were exactly those whose pre-ReLU map is ``<= 0`` everywhere, and most of them
came with a positive decision. The signed map of
:meth:`~monai_medunic.pretrained.PretrainedInference.similarity_map` is never clipped.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, MetricInputError
from monai_medunic.metrics.zero_shot import ZeroShotClassifier

__all__ = ["PromptSimilarityModel", "default_target_layer", "prompt_gradcam", "save_gradcam_overlays"]


class PromptSimilarityModel(nn.Module):
    """``images -> (B, 1)``: ``encode_image(images) . direction`` with a fixed text direction.

    Args:
        model: a vision-language model with ``encode_image`` (e.g. :class:`~monai_medunic.networks.MedUniC`).
        direction: ``(d,)`` text direction, e.g. ``t_pos - t_neg`` of a finding's prompt pair.
    """

    def __init__(self, model: nn.Module, direction: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        if direction.ndim != 1:
            raise MetricInputError(f"the prompt direction must be a (d,) vector, got shape {tuple(direction.shape)}")
        self.register_buffer("direction", direction.detach().float().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.model.encode_image(images) @ self.direction).unsqueeze(1)


def default_target_layer(model: nn.Module) -> str:
    """The Grad-CAM layer of ``model`` as seen from :class:`PromptSimilarityModel` (``"model." + ...``)."""
    enc = getattr(model, "image_encoder", None)
    if getattr(enc, "family", None) != "resnet":
        raise ConfigurationError(
            "prompt Grad-CAM needs a convolutional image encoder (resnet18/resnet50); "
            f"this model's encoder is {getattr(enc, 'name', type(enc).__name__)!r}: pass target_layer explicitly"
        )
    return "model.image_encoder.backbone.layer4"


def _unit_range(x: np.ndarray) -> np.ndarray:
    """Scale each map to [0, 1] (max = most relevant); a constant map becomes zeros."""
    out = np.zeros_like(x, dtype=np.float32)
    for i, m in enumerate(x):
        lo, hi = float(m.min()), float(m.max())
        out[i] = (m - lo) / (hi - lo) if hi > lo else 0.0
    return out


def prompt_gradcam(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    finding: str,
    language: str,
    target_layer: str | None = None,
) -> np.ndarray:
    """Grad-CAM maps ``(B, 1, H, W)`` in [0, 1] of the zero-shot margin of ``finding`` in ``language``.

    Args:
        classifier: a zero-shot classifier (its model and cached prompt embeddings are used).
        images: ``(B, C, H, W)`` model inputs.
        finding: one of ``classifier.findings``.
        language: one of the classifier's prompt languages.
        target_layer: module name inside :class:`PromptSimilarityModel`; default :func:`default_target_layer`.
    """
    from monai.visualize import GradCAM

    if finding not in classifier.findings:
        raise MetricInputError(f"finding '{finding}' is not among the classifier's findings {classifier.findings}")
    model = classifier._unwrapped()
    prompts = classifier.prompt_embeddings(language)  # (F, 2, d)
    j = classifier.findings.index(finding)
    wrapper = PromptSimilarityModel(model, prompts[j, 0] - prompts[j, 1]).to(images.device)
    layer = target_layer or default_target_layer(model)
    try:
        hooked = wrapper.get_submodule(layer)
    except AttributeError:
        raise ConfigurationError(f"Grad-CAM target layer '{layer}' is not a module of {type(model).__name__}") from None
    # MONAI's ModelWithHooks keeps no handle to the hooks it registers on the (shared) target layer: without
    # this, every call would leave one forward and one full backward hook on the bundle's network for good
    hooks_before = (set(hooked._forward_hooks), set(hooked._backward_hooks))
    cam = GradCAM(nn_module=wrapper, target_layers=layer, postprocessing=lambda x: x)
    was_training = model.training
    grad_state = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():  # the backward hook needs a graph through the target layer
            p.requires_grad_(True)
        raw = cam(images.float(), class_idx=0)
    finally:
        for key in set(hooked._forward_hooks) - hooks_before[0]:
            del hooked._forward_hooks[key]
        for key in set(hooked._backward_hooks) - hooks_before[1]:
            del hooked._backward_hooks[key]
        for p, g in zip(model.parameters(), grad_state):
            p.requires_grad_(g)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    raw = raw.detach().cpu().numpy()
    if not np.isfinite(raw).all():
        raise MetricInputError(f"Grad-CAM of '{finding}' ({language}) is not finite")
    return _unit_range(raw)


def save_gradcam_overlays(
    classifier: ZeroShotClassifier,
    images: torch.Tensor,
    finding: str,
    out_dir: str | os.PathLike,
    languages: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    prefix: str = "gradcam",
) -> list[str]:
    """One PNG per image: the radiograph and the Grad-CAM overlay of ``finding`` in every prompt language.

    Returns:
        the written file names (relative to ``out_dir``).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from monai_medunic.text.prompts import build_prompts

    langs = list(languages or classifier.languages)
    maps = {lang: prompt_gradcam(classifier, images, finding, lang) for lang in langs}
    os.makedirs(out_dir, exist_ok=True)
    files = []
    slug = "".join(c if c.isalnum() else "_" for c in finding.lower())
    for i in range(images.shape[0]):
        img = images[i, 0].detach().cpu().numpy()
        fig, axes = plt.subplots(1, 1 + len(langs), figsize=(3.2 * (1 + len(langs)), 3.4))
        axes[0].imshow(img, cmap="gray")
        axes[0].set_title(names[i] if names else f"image {i}", fontsize=8)
        for ax, lang in zip(axes[1:], langs):
            ax.imshow(img, cmap="gray")
            ax.imshow(maps[lang][i, 0], cmap="jet", alpha=0.4, vmin=0.0, vmax=1.0)
            ax.set_title(f"{lang}: '{build_prompts([finding], lang)[0][0]}'", fontsize=8)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        name = f"{prefix}_{slug}_{i}.png"
        fig.savefig(os.path.join(out_dir, name), dpi=100)
        plt.close(fig)
        files.append(name)
    return files
