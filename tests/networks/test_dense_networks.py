"""Pre-trained encoders inside dense networks: by-name loading with its checks, the segmentation decoders,
RetinaNet over a frozen encoder (real MONAI detection stack, no mocks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_medunic.errors import ConfigurationError, EncoderWeightsError, ModelLoadError
from monai_medunic.networks import ImageEncoder
from monai_medunic.networks.dense import (
    EncoderSegmentationNetwork,
    LinearSegmentationDecoder,
    ProgressiveUpsamplingDecoder,
    PyramidUNetDecoder,
    load_encoder_weights,
    predict_masks,
    read_encoder_state,
    retinanet_detector,
)


def _trained_like(name: str, size: int = 64) -> ImageEncoder:
    """An encoder whose weights and BN statistics differ from a fresh one's (as after pre-training)."""
    enc = ImageEncoder(name, img_size=size)
    with torch.no_grad():
        for t in enc.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.05)
    return enc


def test_weights_land_by_name_and_every_tensor_is_checked(tmp_path) -> None:
    source = _trained_like("resnet18")
    target = ImageEncoder("resnet18", img_size=96)  # a ResNet takes another input size
    assert not torch.equal(target.state_dict()["backbone.conv1.weight"], source.state_dict()["backbone.conv1.weight"])
    n = load_encoder_weights(target, source)
    assert n == len(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    # the same from a whole trained bundle's model.pt, selected by prefix, read with weights_only
    torch.save({f"model.image_encoder.{k}": v for k, v in source.state_dict().items()} | {"model.text.w": torch.ones(1)},
               tmp_path / "model.pt")
    other = ImageEncoder("resnet18", img_size=64)
    assert load_encoder_weights(other, tmp_path / "model.pt", prefix="model.image_encoder.") == n
    assert torch.equal(other.state_dict()["backbone.layer4.1.bn2.running_var"], source.state_dict()["backbone.layer4.1.bn2.running_var"])


@pytest.mark.parametrize(
    "target, source, missing, unexpected, mismatched",
    [
        ("resnet50", "resnet18", True, False, True),  # bottlenecks: conv3 / bn3 missing, other shapes
        ("vit_tiny", "resnet18", True, True, False),  # another family: nothing in common
        ("resnet18", "vit_tiny", True, True, False),
    ],
)
def test_another_architecture_is_a_typed_error_listing_the_names(target, source, missing, unexpected, mismatched) -> None:
    dst = ImageEncoder(target, img_size=64)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(EncoderWeightsError) as err:
        load_encoder_weights(dst, ImageEncoder(source, img_size=64), source_name="bundle X")
    e = err.value
    assert bool(e.missing) == missing and bool(e.unexpected) == unexpected and bool(e.mismatched) == mismatched
    assert "bundle X" in str(e) and f"'{target}'" in str(e)
    if missing:
        assert "missing" in str(e) and e.missing[0].split(".")[0] == "backbone"
    if unexpected:
        assert "unexpected" in str(e)
    assert isinstance(e, ModelLoadError)
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())  # nothing half-loaded


def test_vit_of_another_size_is_a_shape_mismatch() -> None:
    with pytest.raises(EncoderWeightsError) as err:
        load_encoder_weights(ImageEncoder("vit_tiny", img_size=96), ImageEncoder("vit_tiny", img_size=64))
    assert "backbone.patch_embedding.position_embeddings" in err.value.mismatched
    assert err.value.mismatched["backbone.patch_embedding.position_embeddings"] == ((1, 16, 192), (1, 36, 192))


def test_empty_or_unreadable_checkpoints(tmp_path) -> None:
    with pytest.raises(EncoderWeightsError, match="no encoder weights under prefix 'model.image_encoder.'"):
        load_encoder_weights(ImageEncoder("resnet18", img_size=64), {"other.w": torch.ones(1)}, prefix="model.image_encoder.")
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="broken.pt"):
        read_encoder_state(bad)


@pytest.mark.parametrize("name, decoder, cls", [("resnet18", "auto", PyramidUNetDecoder), ("resnet18", "linear", LinearSegmentationDecoder),
                                               ("vit_tiny", "auto", ProgressiveUpsamplingDecoder), ("vit_tiny", "linear", LinearSegmentationDecoder)])
def test_segmentation_network_shapes_and_frozen_encoder(name, decoder, cls) -> None:
    enc = ImageEncoder(name, img_size=64)
    net = EncoderSegmentationNetwork(enc, 3, decoder=decoder, freeze_encoder=True).train()
    assert isinstance(net.decoder, cls)
    assert not net.encoder.training and net.decoder.training  # BN statistics of the frozen encoder do not move
    x = torch.rand(2, 1, 64, 64)
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    out = net(x)
    assert out.shape == (2, 3, 64, 64)
    out.square().mean().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.decoder.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.encoder.state_dict().items())


def test_fine_tuning_trains_the_encoder_too() -> None:
    net = EncoderSegmentationNetwork(ImageEncoder("resnet18", img_size=64), 2, freeze_encoder=False).train()
    net(torch.rand(2, 1, 64, 64)).mean().backward()
    assert net.encoder.training and all(p.grad is not None for p in net.encoder.parameters() if p.requires_grad)


def test_bad_segmentation_settings() -> None:
    with pytest.raises(ConfigurationError, match="U-Net decoder needs the ResNet pyramid"):
        EncoderSegmentationNetwork(ImageEncoder("vit_tiny", img_size=64), 2, decoder="unet")
    with pytest.raises(ConfigurationError, match="empty label set"):
        EncoderSegmentationNetwork(ImageEncoder("resnet18", img_size=64), 0)
    with pytest.raises(ConfigurationError, match="decoder must be one of"):
        EncoderSegmentationNetwork(ImageEncoder("resnet18", img_size=64), 2, decoder="fpn")


def test_predict_masks_is_sigmoid_resize_threshold() -> None:
    net = EncoderSegmentationNetwork(ImageEncoder("resnet18", img_size=64), 2).eval()
    x = torch.rand(1, 1, 64, 64)
    masks = predict_masks(net, x, threshold=0.5, output_size=(100, 80))
    with torch.no_grad():
        expected = F.interpolate(torch.sigmoid(net(x)), size=(100, 80), mode="bilinear", align_corners=False) >= 0.5
    assert masks.dtype == torch.bool and masks.shape == (1, 2, 100, 80) and torch.equal(masks, expected)
    assert torch.equal(predict_masks(net, x, 0.5), torch.sigmoid(net(x).detach()) >= 0.5)


def _targets():
    return [{"boxes": torch.tensor([[10.0, 12.0, 30.0, 40.0], [40.0, 40.0, 46.0, 47.0]]), "labels": torch.tensor([1, 0])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


@pytest.mark.parametrize("name", ["resnet18", "vit_tiny"])
def test_retinanet_over_a_frozen_encoder_trains_its_heads_only(name) -> None:
    enc = ImageEncoder(name, img_size=64)
    det = retinanet_detector(enc, num_classes=2, base_anchor_shapes=[[6, 6], [8, 6], [6, 8]], returned_layers=(1, 2))
    net = det.network
    levels = 3 if name == "resnet18" else 4  # FPN: 2 stages + the pooled level; ViTDet: 4 scales
    assert net.levels == levels and len(det.anchor_generator.cell_anchors) == levels
    body = net.feature_extractor.body
    assert body is enc  # the loaded encoder itself, not a copy
    before = {k: v.clone() for k, v in body.state_dict().items()}
    det.train()
    assert not body.training and net.classification_head.training
    losses = det(torch.rand(2, 1, 64, 64), _targets())
    assert set(losses) == {"classification", "box_regression"} and all(torch.isfinite(v) for v in losses.values())
    (losses["classification"] + losses["box_regression"]).backward()
    assert all(p.grad is None for p in body.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.classification_head.parameters())
    assert all(torch.equal(before[k], v) for k, v in body.state_dict().items())
    det.eval()
    with torch.no_grad():
        out = det(torch.rand(2, 1, 64, 64))
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "labels_scores"} and out[0]["boxes"].shape[-1] == 4


def test_retinanet_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="empty label set"):
        retinanet_detector(ImageEncoder("resnet18", img_size=64), 0, [[8, 8]])
    with pytest.raises(ConfigurationError, match="returned_layers"):
        retinanet_detector(ImageEncoder("resnet18", img_size=64), 2, [[8, 8]], returned_layers=(0, 5))
    with pytest.raises(ConfigurationError, match="at least one anchor"):
        retinanet_detector(ImageEncoder("resnet18", img_size=64), 2, [])
