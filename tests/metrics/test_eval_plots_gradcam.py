"""Plots (t-SNE, ROC, loss curves) and prompt-conditioned Grad-CAM with MONAI's GradCAM on the tiny bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_medunic.errors import ConfigurationError, MetricInputError
from monai_medunic.metrics.gradcam import PromptSimilarityModel, default_target_layer, prompt_gradcam, save_gradcam_overlays
from monai_medunic.metrics.plots import finding_names_for_plot, plot_loss_curves, plot_roc_curves, plot_tsne
from monai_medunic.metrics.zero_shot import ZeroShotClassifier
from monai_medunic.pretrained import load_pretrained_bundle


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_loss_curves_single_and_overlaid_runs(tmp_path) -> None:
    hist = [{"iteration": i, "loss": 3.0 - 0.1 * i, "cvl": 2.0, "ctr": 0.5, "epoch": 1} for i in range(1, 20)]
    assert _is_png(plot_loss_curves(hist, tmp_path / "a.png"))
    assert _is_png(plot_loss_curves({"with CTR": hist, "without CTR": [{"iteration": 1, "loss": 2.0}]}, tmp_path / "b.png"))
    recorder = {"iterations": hist, "validation": [{"epoch": 1, "zero_shot_auc": 0.6}, {"epoch": 2, "zero_shot_auc": 0.7}]}
    assert _is_png(plot_loss_curves(recorder, tmp_path / "rec.png"))
    assert _is_png(plot_loss_curves({"with CTR": recorder, "without CTR": recorder}, tmp_path / "rec2.png"))
    with pytest.raises(MetricInputError, match="empty"):
        plot_loss_curves([], tmp_path / "c.png")
    with pytest.raises(MetricInputError, match="numeric"):
        plot_loss_curves([{"iteration": 1, "note": "x"}], tmp_path / "c.png")


def test_tsne_and_roc(tmp_path) -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 8))
    labels = np.array([[1, 0], [0, 0], [1, 1]] * 4)
    keys = finding_names_for_plot(labels, ["A", "B"])
    assert keys[:3] == ["A", "No finding", "Several findings"]
    assert _is_png(plot_tsne(tmp_path / "t.png", emb, ["en", "es"] * 6, emb + 1, ["en", "es"] * 6, keys, keys))
    single = labels.copy()
    single[:, 1] = 0  # B has one class: the panel says "undefined" instead of drawing a curve
    assert _is_png(plot_roc_curves(tmp_path / "r.png", single, {"en": rng.random((12, 2)), "es": rng.random((12, 2))}, ["A", "B"]))
    with pytest.raises(MetricInputError, match="at least 4"):
        plot_tsne(tmp_path / "x.png", emb[:3], ["en"] * 3)


@pytest.fixture(scope="module")
def classifier(tiny_bundle):
    b = load_pretrained_bundle(tiny_bundle)
    return ZeroShotClassifier(b.model, b.tokenizer, b.findings, ("en", "es"), max_length=b.max_length)


def test_gradcam_map_shape_finite_and_finding_specific(classifier) -> None:
    torch.manual_seed(1)
    images = torch.rand(2, 1, 64, 64)
    a = prompt_gradcam(classifier, images, "Cardiomegaly", "en")
    b = prompt_gradcam(classifier, images, "Pneumothorax", "en")
    assert a.shape == (2, 1, 64, 64) and np.isfinite(a).all() and a.min() >= 0.0 and a.max() == pytest.approx(1.0)
    assert np.abs(a - b).max() > 1e-3
    es = prompt_gradcam(classifier, images, "Cardiomegaly", "es")
    assert es.shape == a.shape and np.isfinite(es).all()
    # the model is left as it was: eval mode, no stale gradients, and no hook left on the target layer
    model = classifier._unwrapped()
    assert not model.training and all(p.grad is None for p in model.parameters())
    layer4 = model.image_encoder.backbone.layer4
    assert not layer4._forward_hooks and not layer4._backward_hooks
    assert np.array_equal(prompt_gradcam(classifier, images, "Cardiomegaly", "en"), a)  # repeatable


def test_gradcam_wrapper_is_the_zero_shot_margin(classifier) -> None:
    images = torch.rand(3, 1, 64, 64)
    prompts = classifier.prompt_embeddings("es")
    j = classifier.findings.index("Edema")
    wrapper = PromptSimilarityModel(classifier.model, prompts[j, 0] - prompts[j, 1])
    with torch.no_grad():
        logit = wrapper(images)
    pred = classifier(images, "es")
    assert logit.shape == (3, 1)
    assert torch.equal(logit[:, 0] > 0, pred.positive[:, j])


def test_gradcam_overlays_and_vit_refusal(classifier, tiny_bert_config, tmp_path) -> None:
    files = save_gradcam_overlays(classifier, torch.rand(1, 1, 64, 64), "Pleural Effusion", tmp_path)
    assert files == ["gradcam_pleural_effusion_0.png"] and _is_png(tmp_path / files[0])
    from monai_medunic.networks import MedUniC

    vit = MedUniC("vit_tiny", text_config=tiny_bert_config, img_size=32, embed_dim=16, ctr_dim=16)
    with pytest.raises(ConfigurationError, match="target_layer"):
        default_target_layer(vit)
    with pytest.raises(MetricInputError, match="not among"):
        prompt_gradcam(classifier, torch.rand(1, 1, 64, 64), "Fracture", "en")
