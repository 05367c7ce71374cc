"""Optimiser parameters and learning-rate schedules for the bundles' configs."""

from __future__ import annotations

import math
from typing import Any, Sequence, Sized

import torch
from monai.optimizers import WarmupCosineSchedule
from torch import nn

from monai_medunic.errors import ConfigurationError

__all__ = ["trainable_parameters", "parameter_groups", "warmup_cosine_schedule", "linear_warmup_schedule"]


def trainable_parameters(network: nn.Module, objective: nn.Module | None = None) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` of the network and of the objective, each once.

    The optimizer of a bundle whose objective has trainable parameters (a learnable temperature)
    takes both: ``"params": {"_target_": "monai_medunic.engines.optim.trainable_parameters",
    "network": "@network", "objective": "@loss"}``.

    Raises:
        ConfigurationError: no parameter is trainable.
    """
    seen: set[int] = set()
    params = []
    for module in (network, objective):
        for p in module.parameters() if module is not None else ():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    if not params:
        raise ConfigurationError("no trainable parameter: every parameter is frozen")
    return params


def parameter_groups(module: nn.Module, weight_decay: float = 0.01, objective: nn.Module | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters of ``module`` (and of ``objective``): no
    weight decay on biases, norm weights and scalars (BERT's convention), ``weight_decay`` on the rest."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for m in (module, objective):
        for name, p in m.named_parameters() if m is not None else ():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    if not decay and not no_decay:
        raise ConfigurationError("the model has no trainable parameter (every layer is frozen)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _iterations(max_epochs: int, steps_per_epoch: int | Sized) -> int:
    """Iterations of a run; a data loader that yields no batch is an error, not a run that silently does nothing."""
    per_epoch = steps_per_epoch if isinstance(steps_per_epoch, int) else len(steps_per_epoch)
    if int(per_epoch) < 1:
        dataset = getattr(steps_per_epoch, "dataset", None)
        n = len(dataset) if isinstance(dataset, Sized) else "?"
        batch = getattr(steps_per_epoch, "batch_size", "?")
        drop_last = getattr(steps_per_epoch, "drop_last", None)
        raise ConfigurationError(
            f"the training data loader yields no batch: {n} training records, batch_size {batch}"
            + (", drop_last true" if drop_last else "")
            + "; lower the batch size (e.g. --batch_size 8) or add training data"
        )
    return int(max_epochs) * int(per_epoch)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, dataloader: Sized | int, max_epochs: int, warmup_fraction: float = 0.1, end_lr: float = 0.0
) -> WarmupCosineSchedule:
    """MONAI's :class:`~monai.optimizers.WarmupCosineSchedule` over ``max_epochs * len(dataloader)`` iterations,
    with linear warm-up over ``warmup_fraction`` of them (Med-UniC App. C: linear warm-up, cosine annealing).
    Step it every iteration (``LrScheduleHandler(epoch_level=False)``)."""
    if not 0 <= warmup_fraction < 1:
        raise ConfigurationError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    total = max(1, _iterations(max_epochs, dataloader))
    return WarmupCosineSchedule(optimizer, warmup_steps=int(warmup_fraction * total), t_total=total, end_lr=end_lr)


def linear_warmup_schedule(optimizer: torch.optim.Optimizer, max_epochs: int, steps_per_epoch: int | Sequence | Any,
                           warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the iterations, then linear decay to 0 (BERT's schedule).

    Step it every iteration (``LrScheduleHandler(epoch_level=False)``).

    Args:
        optimizer: the optimiser.
        max_epochs: number of epochs.
        steps_per_epoch: iterations per epoch, or a sized object (a DataLoader) whose ``len`` gives them.
        warmup_ratio: fraction of all iterations spent warming up.
    """
    from transformers import get_linear_schedule_with_warmup

    total = _iterations(max_epochs, steps_per_epoch)
    if total < 1:
        raise ConfigurationError(f"the schedule has no step (max_epochs={max_epochs})")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigurationError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return get_linear_schedule_with_warmup(optimizer, int(math.ceil(warmup_ratio * total)), total)
