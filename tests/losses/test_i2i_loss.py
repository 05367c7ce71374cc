"""Uni-Mlip L_I2I (Eq. 2) against a loop transcription, and how it relates to monai.losses.ContrastiveLoss."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import ContrastiveLoss

from monai_medunic.errors import ShapeMismatchError
from monai_medunic.losses.simclr import I2ILoss


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v) / math.sqrt(float(u @ u) * float(v @ v))


def _eq2_loop(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """Eq. 2 transcribed term by term."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        pos = math.exp(_cos(a[i], b[i]) / tau)
        total -= math.log(pos / sum(math.exp(_cos(a[i], b[j]) / tau) for j in range(n))) / (2 * n)
        total -= math.log(pos / sum(math.exp(_cos(a[j], b[i]) / tau) for j in range(n))) / (2 * n)
    return total


def _nt_xent_loop(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    """SimCLR's NT-Xent (Chen et al. 2020, Alg. 1): 2B anchors, each against the 2B - 1 other rows."""
    z = torch.cat([a, b])
    n2 = z.shape[0]
    total = 0.0
    for k in range(n2):
        pos = (k + n2 // 2) % n2
        denom = sum(math.exp(_cos(z[k], z[m]) / tau) for m in range(n2) if m != k)
        total -= math.log(math.exp(_cos(z[k], z[pos]) / tau) / denom)
    return total / n2


def _views(b: int = 6, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, d, generator=g, dtype=torch.float64)
    return a, a + 0.7 * torch.randn(b, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.07])
def test_i2i_equals_loop_transcription_of_eq2(tau: float) -> None:
    a, b = _views()
    loss = I2ILoss(temperature=tau)(a, b)
    assert float(loss) == pytest.approx(_eq2_loop(a, b, tau), rel=1e-5)  # logit scale is float32


def test_i2i_gradient_matches_autograd_of_the_transcription() -> None:
    a, b = _views(4, 3)
    tau = 0.2

    def torch_loop(x, y):
        xs, ys = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
        n = x.shape[0]
        out = x.new_zeros(())
        for i in range(n):
            out = out - torch.log(torch.exp(xs[i] @ ys[i] / tau) / sum(torch.exp(xs[i] @ ys[j] / tau) for j in range(n))) / (2 * n)
            out = out - torch.log(torch.exp(xs[i] @ ys[i] / tau) / sum(torch.exp(xs[j] @ ys[i] / tau) for j in range(n))) / (2 * n)
        return out

    x1, y1 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    I2ILoss(temperature=tau)(x1, y1).backward()
    x2, y2 = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    torch_loop(x2, y2).backward()
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(y1.grad, y2.grad, rtol=1e-4, atol=1e-7)


def test_i2i_is_symmetric_in_the_views() -> None:
    a, b = _views()
    loss = I2ILoss()
    assert torch.allclose(loss(a, b), loss(b, a), atol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_intra_view_mode_is_simclr_nt_xent_and_equals_monai_contrastive_loss(tau: float) -> None:
    a, b = _views()
    ours = I2ILoss(temperature=tau, intra_view_negatives=True)(a, b)
    assert float(ours) == pytest.approx(_nt_xent_loop(a, b, tau), rel=1e-5)
    monai = ContrastiveLoss(temperature=tau)(a.float(), b.float())
    assert float(ours) == pytest.approx(float(monai), rel=1e-5)


def test_monai_contrastive_loss_is_not_eq2() -> None:
    a, b = _views()
    eq2 = _eq2_loop(a, b, 0.1)
    monai = float(ContrastiveLoss(temperature=0.1)(a.float(), b.float()))
    assert abs(monai - eq2) > 1e-2  # intra-view negatives change the value
    assert float(I2ILoss(temperature=0.1)(a, b)) == pytest.approx(eq2, rel=1e-5)


def test_stable_where_monai_contrastive_loss_overflows() -> None:
    a, b = _views()
    a, b = a.float(), b.float()
    # a logit scale of 100 (CLIP's clamp): exp(100) overflows fp32 in ContrastiveLoss
    assert not torch.isfinite(ContrastiveLoss(temperature=0.01)(a, a))
    ours = I2ILoss(temperature=0.01, intra_view_negatives=True)(a, a)
    assert torch.isfinite(ours)
    assert torch.isfinite(I2ILoss(temperature=0.01)(a, b))


def test_fp32_under_autocast_and_learnable_temperature() -> None:
    a, b = _views()
    loss_fn = I2ILoss(learnable_temperature=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss_fn(a.float().requires_grad_(True), b.float())
    assert value.dtype == torch.float32
    value.backward()
    assert loss_fn.log_logit_scale.grad is not None and loss_fn.log_logit_scale.grad.abs() > 0
    assert "log_logit_scale" in loss_fn.state_dict()
    assert abs(loss_fn.temperature - 0.1) < 1e-6


def test_bad_shapes_raise_typed_error_naming_the_loss() -> None:
    with pytest.raises(ShapeMismatchError, match="I2ILoss"):
        I2ILoss()(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ShapeMismatchError, match="I2ILoss"):
        I2ILoss(intra_view_negatives=True)(torch.randn(4, 3, 2), torch.randn(4, 3, 2))
