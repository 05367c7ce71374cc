"""Uni-Mlip feature perturbation (Sec. 3.2): DropBlock's masking statistics, the perturbed pooling, text dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks import CXRImageEncoder
from monai_medunic.networks.perturbation import (
    DropBlock,
    ImageFeaturePerturbation,
    TextFeaturePerturbation,
    dropblock_gamma,
)


def _loop_expected_drop(gamma: float, h: int, w: int, b: int) -> float:
    """Expected dropped fraction by enumerating, for each unit, the valid block starts that cover it."""
    total = 0.0
    for y in range(h):
        for x in range(w):
            n = sum(1 for i in range(h - b + 1) for j in range(w - b + 1) if i <= y < i + b and j <= x < j + b)
            total += 1.0 - (1.0 - gamma) ** n
    return total / (h * w)


@pytest.mark.parametrize("shape,block,p", [((7, 7), 3, 0.5), ((14, 14), 3, 0.5), ((7, 7), 3, 0.1), ((5, 9), 3, 0.3)])
def test_drop_rate_matches_p_in_expectation(shape: tuple[int, int], block: int, p: float) -> None:
    db = DropBlock(p, block).train()
    n = 600_000 // (shape[0] * shape[1])
    mask = db.block_mask(torch.ones(n, 4, *shape))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    rate = 1.0 - float(mask.mean())
    assert rate == pytest.approx(p, abs=0.01)
    gamma = dropblock_gamma(p, shape, (block, block))
    assert _loop_expected_drop(gamma, shape[0], shape[1], block) == pytest.approx(p, abs=1e-9)


def test_paper_gamma_drops_less_than_p_when_blocks_overlap() -> None:
    # Ghiasi et al. Eq. 1 ignores overlaps: p = 0.5, 3x3 blocks, 7x7 map
    gamma = dropblock_gamma(0.5, (7, 7), (3, 3), "paper")
    assert gamma == pytest.approx(0.5 * 49 / (9 * 25))
    expected = _loop_expected_drop(gamma, 7, 7, 3)
    assert expected < 0.4
    mask = DropBlock(0.5, 3, gamma_mode="paper").train().block_mask(torch.ones(3000, 4, 7, 7))
    assert 1.0 - float(mask.mean()) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("spatial_dims,shape,block", [(1, (12,), 3), (3, (6, 6, 6), 3), (2, (9, 8), (3, 1))])
def test_drop_rate_other_dims_and_blocks(spatial_dims: int, shape: tuple, block) -> None:
    db = DropBlock(0.5, block, spatial_dims=spatial_dims).train()
    mask = db.block_mask(torch.ones(20_000 // max(1, len(shape) ** 2), 4, *shape))
    assert 1.0 - float(mask.mean()) == pytest.approx(0.5, abs=0.015)


def _union_of_full_blocks(dropped: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """Morphological opening with a bh x bw block restricted to blocks inside the map: the union of
    every in-map block that is fully dropped."""
    h, w = dropped.shape
    out = torch.zeros_like(dropped)
    for i in range(h - bh + 1):
        for j in range(w - bw + 1):
            if dropped[i : i + bh, j : j + bw].all():
                out[i : i + bh, j : j + bw] = True
    return out


@pytest.mark.parametrize("block", [3, (3, 1), (2, 4)])
def test_dropped_units_are_whole_blocks_inside_the_map(block) -> None:
    bh, bw = (block, block) if isinstance(block, int) else block
    masks = DropBlock(0.3, block).train().block_mask(torch.ones(64, 3, 10, 11))
    dropped = masks == 0
    assert dropped.any() and (~dropped).any()
    for sample in dropped.flatten(0, 1):
        assert torch.equal(_union_of_full_blocks(sample, bh, bw), sample)


def test_a_single_start_drops_exactly_one_block() -> None:
    db = DropBlock(0.02, 3).train()
    seen = 0
    for seed in range(200):
        torch.manual_seed(seed)
        dropped = db.block_mask(torch.ones(1, 1, 12, 12))[0, 0] == 0
        if 0 < int(dropped.sum()) <= 9:
            rows, cols = dropped.nonzero(as_tuple=True)
            assert int(dropped.sum()) == 9
            assert rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
            seen += 1
    assert seen >= 5


def test_rescaling_preserves_the_sum_and_scales_kept_units() -> None:
    db = DropBlock(0.5, 3).train()
    x = torch.rand(8, 16, 7, 7) + 0.5
    torch.manual_seed(3)
    out = db(x)
    torch.manual_seed(3)
    mask = db.block_mask(x)
    scale = mask.numel() / mask.sum()
    assert torch.allclose(out, x * mask * scale)
    assert torch.all(out[mask == 0] == 0)
    ones = torch.ones(8, 16, 7, 7)
    assert float(db(ones).sum()) == pytest.approx(ones.numel(), rel=1e-5)


def test_identity_in_eval_mode_and_at_p_zero() -> None:
    x = torch.randn(2, 3, 7, 7)
    assert torch.equal(DropBlock(0.5, 3).eval()(x), x)
    assert torch.equal(DropBlock(0.0, 3).train()(x), x)


def test_shared_channel_mask_and_block_larger_than_map() -> None:
    mask = DropBlock(0.5, 3, shared_channels=True).train().block_mask(torch.ones(4, 5, 7, 7))
    assert mask.shape == (4, 1, 7, 7)
    # a block as large as a 2x2 map (96 px ResNet-18 gives 3x3) drops whole channels with probability p
    m = DropBlock(0.5, 3).train().block_mask(torch.ones(20_000, 4, 2, 2))
    per_channel = m.flatten(2)
    assert torch.all(per_channel.amin(-1) == per_channel.amax(-1))
    assert 1.0 - float(m.mean()) == pytest.approx(0.5, abs=0.01)


def test_gradient_flows_through_kept_units_only() -> None:
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    torch.manual_seed(5)
    DropBlock(0.5, 3).train()(x).sum().backward()
    torch.manual_seed(5)
    mask = DropBlock(0.5, 3).block_mask(x)
    assert torch.all(x.grad[mask.expand_as(x) == 0] == 0)
    assert torch.all(x.grad[mask.expand_as(x) == 1] > 1.0)  # rescaled by count(M) / count_ones(M) > 1


def test_bad_arguments_raise_typed_errors() -> None:
    with pytest.raises(ConfigurationError, match="drop_prob"):
        DropBlock(1.0)
    with pytest.raises(ConfigurationError, match="block_size"):
        DropBlock(0.5, (3, 3, 3), spatial_dims=2)
    with pytest.raises(ConfigurationError, match="gamma_mode"):
        DropBlock(0.5, 3, gamma_mode="approx")
    with pytest.raises(ShapeMismatchError):
        DropBlock(0.5, 3)(torch.ones(2, 3, 7))
    with pytest.raises(ConfigurationError, match="p must be"):
        TextFeaturePerturbation(1.0)


def test_image_perturbation_pools_the_encoder_feature_map_without_a_second_forward() -> None:
    enc = CXRImageEncoder("resnet18", img_size=64)
    calls = []
    enc.backbone.layer4.register_forward_hook(lambda *a: calls.append(1))
    fp = ImageFeaturePerturbation()
    enc.eval()
    fp.eval()
    out = enc(torch.rand(4, 1, 96, 96))
    assert torch.allclose(fp(out["feature_map"]), out["pooled"], atol=1e-6)  # the encoder's own pooling
    enc.train()
    fp.train()
    out = enc(torch.rand(4, 1, 96, 96))
    perturbed = fp(out["feature_map"])
    assert perturbed.shape == out["pooled"].shape and not torch.allclose(perturbed, out["pooled"])
    perturbed.sum().backward()
    assert enc.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert len(calls) == 2  # one backbone forward per call of the encoder, none for the perturbation


def test_image_perturbation_of_a_3d_feature_map() -> None:
    fp = ImageFeaturePerturbation(spatial_dims=3).train()
    fmap = torch.rand(2, 8, 4, 4, 4)
    assert fp(fmap).shape == (2, 8)
    assert torch.allclose(fp.eval()(fmap), fmap.mean(dim=(2, 3, 4)))


def test_text_dropout_rate_scale_and_eval_identity() -> None:
    tp = TextFeaturePerturbation().train()
    assert tp.p == 0.75
    x = torch.ones(4000, 64)
    out = tp(x)
    assert float((out == 0).float().mean()) == pytest.approx(0.75, abs=0.01)
    assert torch.allclose(out[out != 0], torch.full_like(out[out != 0], 4.0))
    assert torch.equal(tp.eval()(x), x)
    tokens = torch.randn(2, 5, 8)
    assert torch.equal(F.dropout(tokens, 0.75, training=False), tp(tokens))
