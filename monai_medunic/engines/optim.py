"""Optimiser parameters and learning-rate schedules for the bundles' configs."""

from __future__ import annotations

import math
from typing import Any, Sequence, Sized

import torch
from monai.optimizers import WarmupCosineSchedule
from torch import nn

from monai_medunic.errors import ConfigurationError

__all__ = ["trainable_parameters", "parameter_groups", "encoder_head_param_groups", "warmup_cosine_schedule",
           "linear_warmup_schedule"]


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def _named_trainable(modules: Sequence[nn.Module | None], seen: set[int]) -> list[tuple[str, nn.Parameter]]:
    """The trainable parameters of ``modules`` not in ``seen`` (ids; updated), each once, with their names."""
    out = []
    for m in modules:
        for name, p in m.named_parameters() if m is not None else ():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
    return out


def trainable_parameters(network: nn.Module, objective: nn.Module | None = None) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` of the network and of the objective, each once.

    The optimizer of a bundle whose objective has trainable parameters (a learnable temperature)
    takes both: ``"params": {"_target_": "monai_medunic.engines.optim.trainable_parameters",
    "network": "@network", "objective": "@loss"}``.

    Raises:
        ConfigurationError: no parameter is trainable.
    """
    params = [p for _, p in _named_trainable((network, objective), set())]
    if not params:
        raise ConfigurationError("no trainable parameter: every parameter is frozen")
    return params


def parameter_groups(module: nn.Module, weight_decay: float = 0.01, objective: nn.Module | None = None) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters of ``module`` (and of ``objective``): no
    weight decay on biases, norm weights and scalars (BERT's convention), ``weight_decay`` on the rest."""
    named = _named_trainable((module, objective), set())
    if not named:
        raise ConfigurationError("the model has no trainable parameter (every layer is frozen)")
    return _decay_groups(named, weight_decay)


def _decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float, **extra: Any) -> list[dict[str, Any]]:
    decay = [p for n, p in named if not (p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n)]
    no_decay = [p for n, p in named if p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n]
    return [{"params": decay, "weight_decay": weight_decay, **extra}, {"params": no_decay, "weight_decay": 0.0, **extra}]


def encoder_head_param_groups(
    network: nn.Module,
    encoder_lr: float = 5e-5,
    head_lr: float = 5e-4,
    encoders: Sequence[str] = ("image_encoder", "text_encoder"),
    objective: nn.Module | None = None,
    weight_decay: float = 0.0,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the pre-trained encoders at ``encoder_lr``, everything else (fusion,
    question tokens, classifier, and the trainable parameters of ``objective``) at ``head_lr``.

    Uni-Mlip Sec. 4.2 (VQA): "the vision and text encoders [...] trained with a learning rate of 5e-5.
    Meanwhile, the fusion and classification modules are randomly initialized and trained with a higher
    rate of 5e-4." Frozen parameters (``requires_grad=False``) are left out; a parameter shared between
    modules is listed once. Within each part, :func:`parameter_groups`' weight-decay split applies
    (``weight_decay`` on weights, none on biases, norms and scalars). Groups carry a ``name``
    (``"encoders"``, ``"encoders_no_decay"``, ``"head"``, ``"head_no_decay"``); empty groups are dropped.
    In a bundle config: ``"params": {"_target_": "monai_medunic.engines.optim.encoder_head_param_groups",
    "network": "@network"}``.

    Args:
        network: the VQA model (DDP-wrapped or not).
        encoder_lr, head_lr: the two learning rates.
        encoders: dotted sub-module paths of the encoders in ``network``.
        objective: a loss module with trainable parameters, put in the head group.
        weight_decay: of the weights of both parts.

    Raises:
        ConfigurationError: a negative rate, an encoder path the network does not have, or no
            trainable parameter at all.
    """
    if encoder_lr < 0 or head_lr < 0:
        raise ConfigurationError(f"learning rates must be >= 0, got encoder_lr={encoder_lr}, head_lr={head_lr}")
    net = _unwrap(network)
    modules = []
    for path in encoders:
        try:
            modules.append(net.get_submodule(path))
        except AttributeError as err:
            children = [n for n, _ in net.named_children()]
            raise ConfigurationError(f"the network has no encoder '{path}'; its sub-modules are {children}") from err
    seen: set[int] = set()
    enc = _decay_groups(_named_trainable(modules, seen), weight_decay, lr=float(encoder_lr))
    head = _decay_groups(_named_trainable((net, objective), seen), weight_decay, lr=float(head_lr))
    for g, name in zip(enc + head, ("encoders", "encoders_no_decay", "head", "head_no_decay")):
        g["name"] = name
    groups = [g for g in enc + head if g["params"]]
    if not groups:
        raise ConfigurationError("no trainable parameter: every parameter of the network is frozen")
    return groups


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
