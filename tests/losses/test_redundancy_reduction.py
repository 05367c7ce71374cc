"""CTR's redundancy reduction equals MONAI's BarlowTwinsLoss (value and gradients) without its D' x D' boolean index."""

from __future__ import annotations

import pytest
import torch
from monai.losses import BarlowTwinsLoss

from monai_medunic.losses.ctr import CTRLoss, TextFeatureAlignmentLoss, TextToTextAlignmentLoss, redundancy_reduction


@pytest.mark.parametrize("n, f, lambd", [(2, 3, 5.1e-3), (16, 64, 5.1e-3), (64, 512, 0.5), (8, 8, 0.0)])
def test_value_and_gradients_equal_monai_barlow_twins(n, f, lambd) -> None:
    g = torch.Generator().manual_seed(n * 1000 + f)
    a0 = torch.randn(n, f, generator=g, dtype=torch.float64)
    b0 = (a0 + 0.3 * torch.randn(n, f, generator=g, dtype=torch.float64))
    a1, b1 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    a2, b2 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    ours = redundancy_reduction(a1, b1, lambd)
    ref = BarlowTwinsLoss(lambd=lambd)(a2, b2)
    ours.backward()
    ref.backward()
    # MONAI multiplies by lambd as a float32 tensor: 5.1e-3 is rounded there, hence rtol 1e-6 rather than 1e-12
    assert torch.allclose(ours, ref, rtol=1e-6, atol=1e-12)
    assert torch.allclose(a1.grad, a2.grad, rtol=1e-6, atol=1e-10) and torch.allclose(b1.grad, b2.grad, rtol=1e-6, atol=1e-10)


def test_ctr_terms_in_float32_match_monai_at_large_dimension() -> None:
    """At D' = 2048 with nearly aligned views (diagonal ~1, small off-diagonal) float32 keeps the sum-minus-diagonal exact enough."""
    g = torch.Generator().manual_seed(0)
    za = torch.randn(32, 2048, generator=g)
    zb = za + 0.01 * torch.randn(32, 2048, generator=g)
    tf = TextFeatureAlignmentLoss(gather_distributed=False)(za, zb)
    tt = TextToTextAlignmentLoss(gather_distributed=False)(za, zb)
    ref_tf = BarlowTwinsLoss(lambd=5.1e-3)(za.double(), zb.double()) / 2048
    ref_tt = BarlowTwinsLoss(lambd=5.1e-3)(za.t().double(), zb.t().double()) / 32
    assert tf.item() == pytest.approx(ref_tf.item(), rel=1e-4)
    assert tt.item() == pytest.approx(ref_tt.item(), rel=1e-4)
    assert CTRLoss(gather_distributed=False)(za, zb).item() == pytest.approx((ref_tf + ref_tt).item(), rel=1e-4)
