"""Self-distillation losses of UniMedI (Sec. 3.4): DINO's loss on the CLS token, iBOT's on the masked patch tokens.

UniMedI (``shared/papers/unimedi.txt``, Sec. 3.4): "The head and loss of DINO [5] is used for
implementing self-distillation here. This loss is applied to both the global tokens ... and all local
patch tokens", with a masked student and a full-input EMA teacher ([38, 42]: Attentive Mask CLIP, iBOT).

* DINO (Caron et al., ICCV 2021), Eq. 1-2 and Sec. 3.1 "Avoiding collapse":
  ``P_s = softmax(g_s / tau_s)``, ``P_t = softmax((g_t - c) / tau_t)`` (centering by ``c`` and
  sharpening by a low ``tau_t``), loss ``H(P_t, P_s) = -sum_k P_t^(k) log P_s^(k)``, and the centre an
  EMA of the teacher's batch mean, Eq. 4: ``c <- m c + (1 - m) (1/B) sum_i g_t(x_i)``.
* iBOT (Zhou et al., ICLR 2022), ``L_MIM = -sum_i m_i P_t^patch(u_i)^T log P_s^patch(u^_i)``: the same
  cross-entropy at the masked patch positions ``m_i = 1``, averaged per image (then over images), with
  its own centre.

There is one view here (the paper masks the student's input instead of taking several crops), so the
CLS loss compares the student's masked view with the teacher's full view of the same image.

Both losses compute in fp32 with autocast off. The centre is updated (in train mode only) after the
loss is computed, from the *global* batch under ``torch.distributed``: the per-rank sums and counts
are all-reduced, so every rank keeps the same centre. The centre is a buffer: put the loss module in
a checkpoint's ``save_dict`` to resume it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.losses._checks import no_autocast
from monai_medunic.losses.distributed import is_distributed

__all__ = ["DINOLoss", "MaskedPatchDistillationLoss", "distillation_cross_entropy"]


def distillation_cross_entropy(
    student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, student_temp: float, teacher_temp: float
) -> torch.Tensor:
    """Per-row ``H(P_t, P_s) = -sum_k softmax((t - c)/tau_t)_k log softmax(s/tau_s)_k`` (DINO Eq. 1-2), ``(N,)``."""
    p_teacher = F.softmax((teacher.detach() - center) / teacher_temp, dim=-1)
    return -(p_teacher * F.log_softmax(student / student_temp, dim=-1)).sum(dim=-1)


class _CenteredDistillation(nn.Module):
    def __init__(self, out_dim: int, student_temp: float, teacher_temp: float, center_momentum: float, gather_distributed: bool) -> None:
        super().__init__()
        if out_dim < 1:
            raise ConfigurationError(f"out_dim must be >= 1, got {out_dim}")
        if student_temp <= 0 or teacher_temp <= 0:
            raise ConfigurationError(f"temperatures must be > 0, got student {student_temp}, teacher {teacher_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ConfigurationError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.out_dim = int(out_dim)
        self.student_temp, self.teacher_temp = float(student_temp), float(teacher_temp)
        self.center_momentum = float(center_momentum)
        self.gather_distributed = gather_distributed
        self.register_buffer("center", torch.zeros(1, self.out_dim))

    def _check(self, name: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
        if student.ndim != 2 or student.shape != teacher.shape or student.shape[1] != self.out_dim:
            raise ShapeMismatchError(f"{name} inputs", tuple(student.shape), tuple(teacher.shape),
                                     f"both must be (rows, {self.out_dim}) head logits")

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher rows)``, the mean over every rank's rows (DINO Eq. 4)."""
        stats = torch.cat([teacher.detach().double().sum(dim=0), teacher.new_tensor([teacher.shape[0]], dtype=torch.float64)])
        if self.gather_distributed and is_distributed():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        count = float(stats[-1])
        if count > 0:
            mean = (stats[:-1] / count).to(self.center.dtype).view_as(self.center)
            self.center.mul_(self.center_momentum).add_(mean, alpha=1.0 - self.center_momentum)


class DINOLoss(_CenteredDistillation):
    """DINO's self-distillation loss on the CLS token (Caron et al. 2021, Eq. 1-2 and 4; UniMedI Sec. 3.4).

    ``L = (1/B) sum_b H(P_t(b), P_s(b))`` with a centred, sharpened teacher; then, in train mode, the
    centre moves toward the global batch mean of the teacher logits.

    Args:
        out_dim: ``K``, the head's prototypes.
        student_temp: ``tau_s`` (0.1). teacher_temp: ``tau_t`` (0.04, DINO's value after its warm-up).
        center_momentum: ``m`` (0.9).
        gather_distributed: all-reduce the centre statistics under torch.distributed.

    Shape: ``student``, ``teacher``: ``(B, K)`` head logits. Returns a scalar.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 center_momentum: float = 0.9, gather_distributed: bool = True) -> None:
        super().__init__(out_dim, student_temp, teacher_temp, center_momentum, gather_distributed)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        self._check("DINOLoss", student, teacher)
        with no_autocast(student.device.type):
            s, t = student.float(), teacher.float()
            if s.shape[0] == 0:
                loss = s.sum() * 0.0
            else:
                loss = distillation_cross_entropy(s, t, self.center, self.student_temp, self.teacher_temp).mean()
            if self.training:
                self.update_center(t)
            return loss


class MaskedPatchDistillationLoss(_CenteredDistillation):
    """iBOT's masked-patch self-distillation loss (Zhou et al. 2022, ``L_MIM``; UniMedI Sec. 3.4).

    Takes the head logits of the ``M`` masked patch tokens of a batch (student: masked input, teacher:
    full input) and the batch row each token belongs to. Each image's loss is the mean cross-entropy
    over its masked tokens; the loss is the mean over the images that have masked tokens (iBOT divides
    by the per-image mask count). With no masked token it is 0 (and still joins the centre all-reduce).

    Args: as :class:`DINOLoss` (the patch tokens keep their own centre).

    Shape: ``student``, ``teacher``: ``(M, K)``; ``index``: ``(M,)`` long batch rows. Returns a scalar.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 center_momentum: float = 0.9, gather_distributed: bool = True) -> None:
        super().__init__(out_dim, student_temp, teacher_temp, center_momentum, gather_distributed)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        self._check("MaskedPatchDistillationLoss", student, teacher)
        if index.ndim != 1 or index.shape[0] != student.shape[0]:
            raise ShapeMismatchError("MaskedPatchDistillationLoss index", tuple(index.shape), (student.shape[0],),
                                     "one batch row per masked token")
        with no_autocast(student.device.type):
            s, t = student.float(), teacher.float()
            if s.shape[0] == 0:
                loss = s.sum() * 0.0
            else:
                ce = distillation_cross_entropy(s, t, self.center, self.student_temp, self.teacher_temp)
                idx = index.long()
                counts = torch.bincount(idx)
                per_image = torch.zeros(counts.shape[0], dtype=ce.dtype, device=ce.device).index_add_(0, idx, ce)
                present = counts > 0
                loss = (per_image[present] / counts[present]).mean()
            if self.training:
                self.update_center(t)
            return loss
