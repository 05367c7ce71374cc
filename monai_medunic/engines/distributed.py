"""torch.distributed set-up for bundles launched with torchrun: one config for CUDA and CPU.

The backend follows the device: NCCL on CUDA, gloo on CPU, so a ``multi_gpu_train.json`` also runs as
several CPU processes (as CI does). Multi-node runs use torchrun's standard flags (``--nnodes``,
``--node_rank``, ``--rdzv_endpoint``); nothing here is node-specific.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["setup_distributed", "wrap_ddp", "cleanup_distributed", "handlers_for_rank", "runs_on_all_ranks", "get_rank",
           "ALL_RANKS_HANDLERS"]

logger = logging.getLogger(__name__)


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def setup_distributed(backend: str | None = None) -> torch.device:
    """Initialise the process group from torchrun's environment (idempotent) and return this rank's device.

    Args:
        backend: force a backend; default ``nccl`` when CUDA is available, else ``gloo``.
    """
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group(backend=backend or ("nccl" if use_cuda else "gloo"))
        # Ignite sets up its own view of the process group lazily, with a collective `new_group`, the
        # first time any handler asks for the rank; do it now on every rank, or a rank-0-only handler
        # (checkpoints, logging) asking first would wait for the other ranks forever.
        import ignite.distributed as idist

        idist.sync()
        logger.info("rank %d/%d initialised (%s)", dist.get_rank(), dist.get_world_size(), dist.get_backend())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def wrap_ddp(module: nn.Module, device: torch.device | str, find_unused_parameters: bool = False) -> nn.Module:
    """Move ``module`` to ``device`` and wrap it in DistributedDataParallel when a process group is up."""
    device = torch.device(device)
    module = module.to(device)
    if not (dist.is_available() and dist.is_initialized()):
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def cleanup_distributed() -> None:
    """Destroy the process group if one is up."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


# MONAI / Ignite handlers that must run on every rank: they change the training state or need every rank's data
ALL_RANKS_HANDLERS = ("LrScheduleHandler", "ValidationHandler", "CheckpointLoader", "EarlyStopHandler")


def runs_on_all_ranks(handler: object) -> bool:
    """Whether a handler must be attached on every rank: this package's handlers say so with a
    ``runs_on_all_ranks = True`` class attribute (resume, EMA teacher, BN-statistics freeze, weights
    digest); MONAI's and Ignite's are listed in :data:`ALL_RANKS_HANDLERS`."""
    return bool(getattr(handler, "runs_on_all_ranks", False)) or type(handler).__name__ in ALL_RANKS_HANDLERS


def handlers_for_rank(handlers: Sequence) -> list:
    """The handlers this rank attaches: all of them on rank 0; on other ranks only those that change the
    training state or need every rank (:func:`runs_on_all_ranks`: schedules, validation, resume), not
    the ones that log, save or export (which would write the same files from every process)."""
    if get_rank() == 0:
        return list(handlers)
    return [h for h in handlers if runs_on_all_ranks(h)]
