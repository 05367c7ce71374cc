"""Frozen BatchNorm statistics after a warm-up: Uni-Mlip Sec. 3.3 (Bawazir & Wu).

"We propose to train without SimCLR for some epochs first, and then we freeze the mean and variance
in the batch normalization layers while keeping the weight and bias as learnable parameters when
incorporating the SimCLR loss (Eq. 2)." Strongly augmented views then no longer move the statistics
that carry the absolute intensities of medical images (Table 3 of the paper).

Mechanism, and why: the training step calls ``network.train()`` every iteration, so putting the
BatchNorm layers in eval mode once does not last. :class:`FreezeBatchNormStatistics` instead
registers a forward pre-hook on every ``_BatchNorm`` layer (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``)
that switches the layer to eval behaviour at each call, whatever ``train()`` did before; hooks live on
the modules, so this works inside DDP and for any network. In the default mode
(``normalize_with="running"``) the layer then normalises with its frozen running mean and variance,
the ``.eval()`` / FrozenBatchNorm semantics of "freezing the mean and variance"; with ``"batch"`` it
keeps normalising with the statistics of each batch but no longer updates the running ones
(``track_running_stats`` switched off). In both modes the running buffers stay bitwise unchanged and
the affine ``weight`` and ``bias`` keep their gradients.

Checkpoint/resume: nothing here is saved. The handler decides from the engine's iteration or epoch,
which the checkpoint restores, and re-freezes at the first iteration after a resume; the frozen
statistics themselves are buffers in the network's ``state_dict``.

Under DDP (``broadcast_buffers=True``, the default) rank 0's buffers are broadcast at every forward,
so after the first frozen iteration every rank holds rank 0's statistics. The handler must be attached
on every rank (it changes the training computation, like an LR scheduler).
"""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from monai_medunic.engines.warmup import WarmupPhase
from monai_medunic.errors import ConfigurationError

__all__ = ["FreezeBatchNormStatistics", "batchnorm_layers", "NORMALIZE_WITH"]

logger = logging.getLogger(__name__)

NORMALIZE_WITH = ("running", "batch")


def batchnorm_layers(module: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """Every BatchNorm layer (1d/2d/3d, SyncBatchNorm, subclasses) of ``module`` with its qualified name."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, _BatchNorm)]


def _eval_mode_pre_hook(module: nn.Module, args: tuple) -> None:
    module.training = False  # runs after any network.train(): this call normalises with running statistics


class FreezeBatchNormStatistics(WarmupPhase):
    """Ignite handler: after a warm-up, fix the running mean and variance of every BatchNorm layer of
    ``network`` (or of one of its sub-modules), leaving the affine weights trainable.

    Attach it on every rank (``attach(engine)``); it checks at each ``ITERATION_STARTED`` whether the
    warm-up is over: iteration ``warmup_iterations + 1`` (or the first iteration of epoch
    ``warmup_epochs + 1``) is the first one with frozen statistics. With no warm-up given, the
    statistics are frozen from the first iteration (Uni-Mlip Sec. 4.2 starts from a pre-trained
    PMC-CLIP and freezes throughout).

    Args:
        network: the trained network, DDP-wrapped or not.
        warmup_iterations: iterations trained with updating statistics (exclusive with ``warmup_epochs``).
        warmup_epochs: epochs trained with updating statistics.
        submodule: restrict to this dotted sub-module path of the (unwrapped) network, e.g.
            ``"image_encoder"``; default: the whole network (projector BatchNorms included).
        normalize_with: ``"running"`` (default): frozen layers normalise with the frozen statistics,
            as in eval mode; ``"batch"``: they normalise with batch statistics but do not update the
            running ones.
        enabled: ``False`` attaches nothing (a config switch, e.g. the "naive SimCLR" ablation).

    Raises:
        ConfigurationError: both warm-ups given, a negative warm-up, an unknown ``normalize_with``,
            or a ``submodule`` the network does not have.
    """

    runs_on_all_ranks = True  # it changes the training computation: attached on every rank by handlers_for_rank

    def __init__(
        self,
        network: nn.Module,
        warmup_iterations: int | None = None,
        warmup_epochs: int | None = None,
        submodule: str | None = None,
        normalize_with: str = "running",
        enabled: bool = True,
    ) -> None:
        super().__init__(warmup_iterations, warmup_epochs)
        if normalize_with not in NORMALIZE_WITH:
            raise ConfigurationError(f"normalize_with must be one of {NORMALIZE_WITH}, got '{normalize_with}'")
        self.network = network
        self.submodule = submodule
        self.normalize_with = normalize_with
        self.enabled = bool(enabled)
        self._target()  # fail at construction on an unknown sub-module
        self._handles: list[RemovableHandle] = []
        self._frozen: list[_BatchNorm] = []

    def _target(self) -> nn.Module:
        net = self.network.module if isinstance(self.network, nn.parallel.DistributedDataParallel) else self.network
        if not self.submodule:
            return net
        try:
            return net.get_submodule(self.submodule)
        except AttributeError as err:
            raise ConfigurationError(
                f"FreezeBatchNormStatistics: the network ({type(net).__name__}) has no sub-module '{self.submodule}'"
            ) from err

    @property
    def frozen(self) -> bool:
        """Whether the statistics are currently frozen."""
        return bool(self._frozen)

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            logger.info("FreezeBatchNormStatistics is disabled: the BatchNorm statistics keep updating")
            return
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def warmup_over(self, engine: Engine) -> bool:
        """True from the first iteration after the warm-up (read from the engine, so it survives a resume)."""
        return self.over(engine)

    def __call__(self, engine: Engine) -> None:
        if not self._frozen and self.warmup_over(engine):
            n = self.freeze()
            where = f"'{self.submodule}'" if self.submodule else "the network"
            if n:
                logger.info("froze the running statistics of %d BatchNorm layers of %s (normalise with %s statistics) "
                            "from iteration %d (epoch %d)", n, where, self.normalize_with, engine.state.iteration,
                            engine.state.epoch)
            else:
                logger.warning("FreezeBatchNormStatistics: %s has no BatchNorm layer; nothing to freeze", where)

    def freeze(self) -> int:
        """Freeze now (idempotent); returns the number of BatchNorm layers frozen."""
        if self._frozen:
            return len(self._frozen)
        layers = [m for _, m in batchnorm_layers(self._target())]
        for m in layers:
            if self.normalize_with == "running":
                self._handles.append(m.register_forward_pre_hook(_eval_mode_pre_hook))
            else:
                m.track_running_stats = False
        self._frozen = layers
        return len(layers)

    def unfreeze(self) -> None:
        """Undo :meth:`freeze`: the layers update and use batch statistics again in train mode."""
        for h in self._handles:
            h.remove()
        for m in self._frozen:
            if self.normalize_with == "batch":
                m.track_running_stats = True
        self._handles, self._frozen = [], []

    @staticmethod
    def statistics(module: nn.Module) -> dict[str, torch.Tensor]:
        """A copy of every BatchNorm running mean and variance of ``module`` (for tests and checks)."""
        out: dict[str, torch.Tensor] = {}
        for name, m in batchnorm_layers(module):
            if m.running_mean is not None:
                out[f"{name}.running_mean"] = m.running_mean.detach().clone()
                out[f"{name}.running_var"] = m.running_var.detach().clone()
        return out
