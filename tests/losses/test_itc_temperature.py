"""Uni-Mlip ITC (Eq. 1) is CVLLoss(learnable_temperature=True): the CLIP logit-scale clamp holds, the
scale is trained and it is checkpointed with the loss module."""

from __future__ import annotations

import math

import pytest
import torch

from monai_medunic.losses import CVLLoss


def _pair(n: int = 8, d: int = 16, noise: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    v = torch.randn(n, d, generator=g)
    return v, v + noise * torch.randn(n, d, generator=g)


def _eq1(v: torch.Tensor, t: torch.Tensor, scale: float) -> float:
    vn, tn = v / v.norm(dim=1, keepdim=True), t / t.norm(dim=1, keepdim=True)
    s = (vn @ tn.t()).double() * scale
    n = s.shape[0]
    i2t = -sum(float(s[i, i] - torch.logsumexp(s[i], 0)) for i in range(n)) / (2 * n)
    t2i = -sum(float(s[i, i] - torch.logsumexp(s[:, i], 0)) for i in range(n)) / (2 * n)
    return i2t + t2i


def test_effective_logit_scale_never_exceeds_100() -> None:
    itc = CVLLoss(learnable_temperature=True)
    v, t = _pair()
    assert float(itc.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-6)
    assert _eq1(v, t, 100.0) > 0.1  # hard enough pairs that the loss depends on the scale
    with torch.no_grad():
        itc.log_logit_scale.fill_(math.log(1000.0))  # pushed far past the clamp
    assert float(itc.logit_scale.detach()) == pytest.approx(100.0)
    assert itc.temperature == pytest.approx(0.01)
    assert float(itc(v, t).detach()) == pytest.approx(_eq1(v, t, 100.0), rel=1e-5)
    with torch.no_grad():
        itc.log_logit_scale.fill_(math.log(50.0))  # below the clamp the scale is used as is
    assert float(itc(v, t).detach()) == pytest.approx(_eq1(v, t, 50.0), rel=1e-5)


def test_clamp_holds_while_training_drives_the_scale_up() -> None:
    # every positive is its row and column maximum: a sharper softmax lowers the loss at any scale
    itc = CVLLoss(learnable_temperature=True)
    v, t = _pair(noise=1.2)
    cos = torch.nn.functional.normalize(v, dim=1) @ torch.nn.functional.normalize(t, dim=1).t()
    assert torch.equal(cos.argmax(0), torch.arange(8)) and torch.equal(cos.argmax(1), torch.arange(8))
    opt = torch.optim.SGD(itc.parameters(), lr=5.0)
    seen = [float(itc.logit_scale.detach())]
    for _ in range(5):
        opt.zero_grad()
        itc(v, t).backward()
        opt.step()
        seen.append(float(itc.logit_scale.detach()))
    assert all(b > a for a, b in zip(seen, seen[1:])), seen  # the temperature is trained
    assert seen[-1] < 100.0
    # just below the clamp, one large step carries the parameter past log(100): the scale stays 100
    with torch.no_grad():
        itc.log_logit_scale.fill_(math.log(99.0))
    opt = torch.optim.SGD(itc.parameters(), lr=10.0)
    opt.zero_grad()
    itc(v, t).backward()
    opt.step()
    assert float(itc.log_logit_scale.detach()) > math.log(100.0)
    assert float(itc.logit_scale.detach()) == pytest.approx(100.0)
    assert float(itc(v, t).detach()) == pytest.approx(_eq1(v, t, 100.0), rel=1e-5, abs=1e-7)


def test_learnable_scale_is_a_parameter_and_round_trips_through_state_dict(tmp_path) -> None:
    itc = CVLLoss(learnable_temperature=True)
    assert [n for n, _ in itc.named_parameters()] == ["log_logit_scale"]
    with torch.no_grad():
        itc.log_logit_scale.fill_(math.log(42.0))
    torch.save(itc.state_dict(), tmp_path / "itc.pt")
    fresh = CVLLoss(learnable_temperature=True)
    fresh.load_state_dict(torch.load(tmp_path / "itc.pt", weights_only=True))
    assert float(fresh.logit_scale.detach()) == pytest.approx(42.0, rel=1e-6)
    # a fixed temperature is not a parameter and not saved
    assert list(CVLLoss().parameters()) == [] and "log_logit_scale" not in CVLLoss().state_dict()
