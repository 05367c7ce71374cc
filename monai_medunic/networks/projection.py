"""Non-linear projectors of Med-UniC: P_v and P_l (to the joint space, d = 512) and P_d (CTR, D' = 1024)."""

from __future__ import annotations

from torch import nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Sequential):
    """``Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm(affine=False)``.

    Med-UniC Sec. 3.2 ("two non-linear visual and linguistic projectors P_l and P_v ... into the same
    dimension d") and Sec. 3.4 (a separate projector P_d for de-correlation, ``D' > D``). The final
    affine-free BatchNorm follows the Barlow Twins / SimSiam projector design.

    Args:
        in_dim: input features.
        out_dim: output features (512 for P_v/P_l, 1024 for P_d in the paper).
        hidden_dim: hidden features; defaults to ``in_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int = 512, hidden_dim: int | None = None) -> None:
        hidden_dim = hidden_dim or in_dim
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim, affine=False),
        )
        self.in_dim, self.out_dim = in_dim, out_dim
