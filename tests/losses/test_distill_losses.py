"""DINO (CLS) and iBOT (masked patch) self-distillation losses against loop transcriptions of their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.losses import DINOLoss, MaskedPatchDistillationLoss

K = 7
TAU_S, TAU_T, M = 0.1, 0.04, 0.9


def _h_loop(s_row: list[float], t_row: list[float], center: list[float]) -> float:
    """H(P_t, P_s) = -sum_k P_t(k) log P_s(k), P_t = softmax((t - c)/tau_t), P_s = softmax(s/tau_s), in plain Python."""
    zt = [math.exp((t - c) / TAU_T) for t, c in zip(t_row, center)]
    pt = [z / sum(zt) for z in zt]
    zs = [math.exp(s / TAU_S) for s in s_row]
    log_ps = [math.log(z / sum(zs)) for z in zs]
    return -sum(p * lp for p, lp in zip(pt, log_ps))


def _data(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, K, generator=g) * 2 - 1, torch.rand(rows, K, generator=g) * 2 - 1


def test_dino_loss_matches_loop_transcription_and_centre_update() -> None:
    s, t = _data(5)
    loss_fn = DINOLoss(K, TAU_S, TAU_T, M)
    centre0 = torch.linspace(-0.2, 0.2, K)
    loss_fn.center.copy_(centre0[None])
    value = loss_fn(s, t)
    expected = sum(_h_loop(s[i].tolist(), t[i].tolist(), centre0.tolist()) for i in range(5)) / 5
    assert value.item() == pytest.approx(expected, rel=1e-5)
    # DINO Eq. 4, element by element: c <- m c + (1 - m) mean_b t_b (after the loss used the old centre)
    for k in range(K):
        mean_k = sum(float(t[i, k]) for i in range(5)) / 5
        assert loss_fn.center[0, k].item() == pytest.approx(M * centre0[k].item() + (1 - M) * mean_k, abs=1e-6)
    # eval mode: the centre stays
    loss_fn.eval()
    before = loss_fn.center.clone()
    loss_fn(s, t)
    assert torch.equal(loss_fn.center, before)


def test_centering_and_sharpening_act_on_the_teacher_only() -> None:
    s, t = _data(4, seed=1)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = DINOLoss(K)(s, t)
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None  # the teacher is a target (stop-gradient)
    # a constant shift of the teacher logits does not change the loss (softmax), but the centre absorbs it
    a, b = DINOLoss(K).eval(), DINOLoss(K).eval()
    assert a(s, t).item() == pytest.approx(b(s, t + 3.0).item(), rel=1e-5)
    # the low teacher temperature sharpens: its distribution is peakier than the student's at equal logits
    p_t = torch.softmax(t / TAU_T, -1)
    p_s = torch.softmax(t / TAU_S, -1)
    assert (p_t.max(-1).values > p_s.max(-1).values).all()


def test_masked_patch_loss_matches_loop_transcription() -> None:
    s, t = _data(6, seed=2)
    index = torch.tensor([0, 0, 0, 2, 2, 3])  # image 1 has no masked token
    loss_fn = MaskedPatchDistillationLoss(K, TAU_S, TAU_T, M)
    centre0 = torch.full((K,), 0.05)
    loss_fn.center.copy_(centre0[None])
    value = loss_fn(s, t, index)
    per_image = {}
    for row, img in enumerate(index.tolist()):
        per_image.setdefault(img, []).append(_h_loop(s[row].tolist(), t[row].tolist(), centre0.tolist()))
    expected = sum(sum(v) / len(v) for v in per_image.values()) / len(per_image)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert torch.allclose(loss_fn.center[0], M * centre0 + (1 - M) * t.mean(0), atol=1e-6)


def test_no_masked_tokens_gives_zero_and_keeps_the_graph() -> None:
    s = torch.zeros(0, K, requires_grad=True)
    value = MaskedPatchDistillationLoss(K)(s, torch.zeros(0, K), torch.zeros(0, dtype=torch.long))
    assert value.item() == 0.0 and value.requires_grad


def test_losses_compute_in_fp32_under_autocast() -> None:
    s, t = _data(4, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = DINOLoss(K).eval()(s.bfloat16(), t.bfloat16())
        w = MaskedPatchDistillationLoss(K).eval()(s.bfloat16(), t.bfloat16(), torch.tensor([0, 0, 1, 1]))
    assert v.dtype == torch.float32 and w.dtype == torch.float32
    assert v.item() == pytest.approx(DINOLoss(K).eval()(s.bfloat16().float(), t.bfloat16().float()).item(), rel=1e-6)


def test_bad_inputs() -> None:
    s, t = _data(3)
    with pytest.raises(ShapeMismatchError, match=r"\(rows, 8\)"):
        DINOLoss(8)(s, t)
    with pytest.raises(ShapeMismatchError):
        DINOLoss(K)(s, t[:2])
    with pytest.raises(ShapeMismatchError, match="one batch row per masked token"):
        MaskedPatchDistillationLoss(K)(s, t, torch.tensor([0, 1]))
    with pytest.raises(ConfigurationError):
        DINOLoss(K, teacher_temp=0.0)
    with pytest.raises(ConfigurationError):
        DINOLoss(K, center_momentum=1.5)


def test_centre_is_checkpointed_as_a_buffer(tmp_path) -> None:
    loss_fn = DINOLoss(K)
    loss_fn(*_data(4))
    torch.save(loss_fn.state_dict(), tmp_path / "loss.pt")
    other = DINOLoss(K)
    other.load_state_dict(torch.load(tmp_path / "loss.pt", weights_only=True))
    assert torch.equal(other.center, loss_fn.center) and other.center.abs().sum() > 0
