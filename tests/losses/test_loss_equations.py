"""Each loss equals a direct, loop-based transcription of its printed equation (Med-UniC Eq. 2-7)."""

from __future__ import annotations

import math

import pytest
import torch

from monai_medunic.errors import BatchSizeError, ConfigurationError, NonFiniteLossError, ShapeMismatchError
from monai_medunic.losses import (
    CTRLoss,
    CVLLoss,
    MedUniCLoss,
    SSVLoss,
    TextFeatureAlignmentLoss,
    TextToTextAlignmentLoss,
)

TOL = dict(rtol=1e-5, atol=1e-5)


def _unit(x: torch.Tensor) -> list[list[float]]:
    rows = []
    for r in x.tolist():
        n = math.sqrt(sum(v * v for v in r))
        rows.append([v / n for v in r])
    return rows


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _nce_row(s: list[list[float]], i: int, tau: float) -> float:
    return -math.log(math.exp(s[i][i] / tau) / sum(math.exp(s[i][j] / tau) for j in range(len(s))))


def loop_cvl(v: torch.Tensor, l: torch.Tensor, tau: float) -> float:
    """Eq. 2-3: L = 1/(2K) sum_i (L^{v2l}_i + L^{l2v}_i)."""
    v, l = _unit(v), _unit(l)
    k = len(v)
    s_v2l = [[_dot(v[i], l[j]) for j in range(k)] for i in range(k)]
    s_l2v = [[_dot(l[i], v[j]) for j in range(k)] for i in range(k)]
    return sum(_nce_row(s_v2l, i, tau) + _nce_row(s_l2v, i, tau) for i in range(k)) / (2 * k)


def loop_ssv(v: torch.Tensor, v2: torch.Tensor, tau: float) -> float:
    """Eq. 4: -1/K sum_i log softmax_j(s^{v2v'}_ij / tau)[i]."""
    v, v2 = _unit(v), _unit(v2)
    k = len(v)
    s = [[_dot(v[i], v2[j]) for j in range(k)] for i in range(k)]
    return sum(_nce_row(s, i, tau) for i in range(k)) / k


def _standardise_columns(z: list[list[float]]) -> list[list[float]]:
    """(Z - mu) / (sqrt(n) * (sigma + 1e-6)) along the first index, sigma unbiased (see ctr.py)."""
    n, d = len(z), len(z[0])
    out = [[0.0] * d for _ in range(n)]
    for j in range(d):
        col = [z[i][j] for i in range(n)]
        mu = sum(col) / n
        sigma = math.sqrt(sum((c - mu) ** 2 for c in col) / (n - 1))
        for i in range(n):
            out[i][j] = (z[i][j] - mu) / (math.sqrt(n) * (sigma + 1e-6))
    return out


def _barlow(za: list[list[float]], zb: list[list[float]], lambd: float) -> float:
    """sum_j (1 - C_jj)^2 + lambda sum_{j != k} C_jk^2, with C_jk = sum_i za[i][j] zb[i][k]."""
    n, d = len(za), len(za[0])
    total = 0.0
    for j in range(d):
        for k in range(d):
            c = sum(za[i][j] * zb[i][k] for i in range(n))
            total += (1 - c) ** 2 if j == k else lambd * c * c
    return total


def loop_tf(za: torch.Tensor, zb: torch.Tensor, lambd: float) -> float:
    """Eq. 5 (off-diagonal squared): standardise each feature along the batch; D' x D' matrix; / D'."""
    a, b = _standardise_columns(za.tolist()), _standardise_columns(zb.tolist())
    return _barlow(a, b, lambd) / za.shape[1]


def loop_tt(za: torch.Tensor, zb: torch.Tensor, lambd: float) -> float:
    """Eq. 6 (off-diagonal squared): standardise each sample along the features; K x K matrix; / K."""
    a, b = _standardise_columns(za.t().tolist()), _standardise_columns(zb.t().tolist())
    return _barlow(a, b, lambd) / za.shape[0]


@pytest.mark.parametrize("k,d", [(2, 3), (6, 8), (16, 5)])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_cvl_matches_equation(k: int, d: int, tau: float) -> None:
    v, l = torch.randn(k, d, dtype=torch.float64), torch.randn(k, d, dtype=torch.float64)
    got = CVLLoss(temperature=tau)(v, l)
    assert math.isclose(float(got), loop_cvl(v, l, tau), rel_tol=1e-5, abs_tol=1e-5)


@pytest.mark.parametrize("k,d", [(2, 3), (7, 8)])
def test_ssv_matches_one_directional_equation(k: int, d: int) -> None:
    v, v2 = torch.randn(k, d), torch.randn(k, d)
    loss = SSVLoss(temperature=0.07)
    assert math.isclose(float(loss(v, v2)), loop_ssv(v, v2, 0.07), rel_tol=1e-5, abs_tol=1e-5)
    # one-directional: swapping the views changes the value (Eq. 4 is not symmetric)
    assert not math.isclose(float(loss(v, v2)), float(loss(v2, v)), rel_tol=1e-4)


def test_ssv_symmetric_option_averages_both_directions() -> None:
    v, v2 = torch.randn(5, 4), torch.randn(5, 4)
    got = float(SSVLoss(symmetric=True)(v, v2))
    expected = 0.5 * (loop_ssv(v, v2, 0.07) + loop_ssv(v2, v, 0.07))
    assert math.isclose(got, expected, rel_tol=1e-5)
    assert math.isclose(float(SSVLoss(symmetric=True)(v2, v)), got, rel_tol=1e-5)


@pytest.mark.parametrize("k,d", [(2, 3), (5, 7), (12, 4)])
@pytest.mark.parametrize("lambd", [5.1e-3, 0.5])
def test_tf_tt_ctr_match_equations(k: int, d: int, lambd: float) -> None:
    za, zb = torch.randn(k, d, dtype=torch.float64), torch.randn(k, d, dtype=torch.float64)
    tf, tt = loop_tf(za, zb, lambd), loop_tt(za, zb, lambd)
    assert math.isclose(float(TextFeatureAlignmentLoss(lambd)(za, zb)), tf, rel_tol=1e-5, abs_tol=1e-5)
    assert math.isclose(float(TextToTextAlignmentLoss(lambd)(za, zb)), tt, rel_tol=1e-5, abs_tol=1e-5)
    assert math.isclose(float(CTRLoss(lambd)(za, zb)), tf + tt, rel_tol=1e-5, abs_tol=1e-5)


def test_ctr_off_diagonal_is_squared() -> None:
    """The printed Eq. 5 has no square: negative correlations would lower it without bound. Ours can't go below 0."""
    z = torch.randn(8, 4)
    # views anti-correlated off the diagonal: with an unsquared term the loss could become negative
    zb = z.clone()
    zb[:, 1] = -z[:, 0]
    loss = TextFeatureAlignmentLoss(lambd=10.0)(z, zb)
    assert float(loss) > 0
    c01 = float(torch.corrcoef(torch.stack([z[:, 0], zb[:, 1]]))[0, 1])
    assert c01 < -0.99  # the term the printed equation would reward


def test_ctr_is_minimised_by_identical_decorrelated_views() -> None:
    k, d = 64, 8
    z = torch.linalg.qr(torch.randn(k, d))[0] * 10  # decorrelated columns
    aligned = float(CTRLoss(lambd=5.1e-3)(z, z))
    shuffled = float(CTRLoss(lambd=5.1e-3)(z, z[torch.randperm(k)]))
    assert aligned < 0.1 < shuffled


def test_medunic_loss_weights_and_terms() -> None:
    k, d = 6, 8
    outputs = {n: torch.randn(k, d) for n in ("image_emb", "text_emb", "image_aug_emb", "ctr_a", "ctr_b")}
    full = MedUniCLoss()(outputs)
    assert set(full) == {"loss", "cvl", "ssv", "ctr"}
    assert torch.allclose(full["loss"], full["cvl"] + full["ssv"] + full["ctr"])
    weighted = MedUniCLoss(cvl_weight=2.0, ssv_weight=0.5, ctr_weight=0.0)(outputs)
    assert set(weighted) == {"loss", "cvl", "ssv"}
    assert torch.allclose(weighted["loss"], 2.0 * full["cvl"] + 0.5 * full["ssv"])


def test_medunic_loss_missing_input_names_term() -> None:
    outputs = {n: torch.randn(4, 8) for n in ("image_emb", "text_emb", "ctr_a", "ctr_b")}
    with pytest.raises(ConfigurationError, match="'ssv'.*image_aug_emb"):
        MedUniCLoss()(outputs)


def test_nan_loss_names_the_term() -> None:
    outputs = {n: torch.randn(4, 8) for n in ("image_emb", "text_emb", "image_aug_emb", "ctr_a", "ctr_b")}
    outputs["image_aug_emb"][0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="'ssv'") as info:
        MedUniCLoss()(outputs)
    assert info.value.term == "ssv"


@pytest.mark.parametrize("loss", [TextFeatureAlignmentLoss(), CTRLoss()])
def test_batch_statistics_loss_rejects_batch_of_one(loss: torch.nn.Module) -> None:
    with pytest.raises(BatchSizeError, match="at least 2"):
        loss(torch.randn(1, 8), torch.randn(1, 8))


@pytest.mark.parametrize("loss", [CVLLoss(), SSVLoss(), TextFeatureAlignmentLoss(), TextToTextAlignmentLoss(), CTRLoss()])
def test_mismatched_shapes_name_both(loss: torch.nn.Module) -> None:
    with pytest.raises(ShapeMismatchError, match=r"\(4, 8\).*\(4, 6\)"):
        loss(torch.randn(4, 8), torch.randn(4, 6))


def test_invalid_hyperparameters() -> None:
    with pytest.raises(ConfigurationError):
        CVLLoss(temperature=0.0)
    with pytest.raises(ConfigurationError):
        CTRLoss(lambd=-1.0)
    with pytest.raises(ConfigurationError):
        MedUniCLoss(cvl_weight=0, ssv_weight=0, ctr_weight=0)


def test_learnable_temperature_is_a_parameter_and_trains() -> None:
    loss = CVLLoss(temperature=0.07, learnable_temperature=True)
    params = list(loss.parameters())
    assert len(params) == 1
    assert math.isclose(loss.temperature, 0.07, rel_tol=1e-5)
    v = torch.randn(8, 4)
    loss(v, v + 0.01 * torch.randn(8, 4)).backward()
    assert params[0].grad is not None and float(params[0].grad.abs()) > 0
    assert list(CVLLoss().parameters()) == []


def test_losses_under_bf16_autocast_are_finite_and_close_to_fp32() -> None:
    k, d = 16, 32
    lin = torch.nn.Linear(d, d)
    names = ("image_emb", "text_emb", "image_aug_emb", "ctr_a", "ctr_b")
    inputs = {n: torch.randn(k, d) for n in names}
    ref = MedUniCLoss()({n: lin(x) for n, x in inputs.items()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs16 = {n: lin(x) for n, x in inputs.items()}
        assert outputs16["image_emb"].dtype == torch.bfloat16
        got = MedUniCLoss()(outputs16)
    got["loss"].backward()
    assert all(torch.isfinite(v.detach()) for v in got.values())
    assert got["loss"].dtype == torch.float32
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    for term in ("cvl", "ssv", "ctr"):  # the same inputs: equal up to bf16 rounding of the embeddings
        assert abs(float(got[term].detach()) - float(ref[term].detach())) < 0.05 * max(1.0, float(ref[term].detach()))
