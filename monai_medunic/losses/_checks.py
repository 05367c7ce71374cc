"""Input checks shared by the losses: clear errors instead of library tracebacks."""

from __future__ import annotations

import contextlib

import torch

from monai_medunic.errors import BatchSizeError, ShapeMismatchError


def check_pair(name: str, a: torch.Tensor, b: torch.Tensor, min_batch: int = 1) -> None:
    """``a`` and ``b`` must both be ``(K, D)`` with equal shapes and ``K >= min_batch``."""
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ShapeMismatchError(f"{name} inputs", tuple(a.shape), tuple(b.shape), "both must be (batch, features)")
    if a.shape[0] < min_batch:
        raise BatchSizeError(
            f"{name} needs a batch of at least {min_batch} samples to compute batch statistics, got {a.shape[0]}; "
            "increase the batch size (drop_last=True avoids a final batch of 1)"
        )


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Disable autocast for the loss computation and compute in float32: similarity logits and correlation matrices lose too much precision in bf16/fp16."""
    return torch.autocast(device_type=device_type, enabled=False)
