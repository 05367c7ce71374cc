"""An exponential-moving-average teacher as an Ignite handler (UniMedI Sec. 3.4; DINO Sec. 3.1).

UniMedI: "we maintain an online student network, and a teacher network, which is updated by
exponential moving averaged (EMA) over [the student]". DINO (Caron et al., ICCV 2021, Sec. 3.1):
``theta_t <- lambda theta_t + (1 - lambda) theta_s`` with ``lambda`` following "a cosine schedule from
0.996 to 1 during training": ``lambda(i) = 1 - (1 - lambda_0) (cos(pi i / T) + 1) / 2``.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_medunic.errors import ConfigurationError, ModelLoadError

__all__ = ["EMATeacher", "cosine_momentum"]

logger = logging.getLogger(__name__)


def cosine_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0) -> float:
    """DINO's momentum schedule: ``final - (final - base) (cos(pi step / total) + 1) / 2``; ``base`` at 0, ``final`` at ``total``."""
    if total_steps <= 0:
        raise ConfigurationError(f"total_steps must be > 0, got {total_steps}")
    t = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if hasattr(network, "module") else network


class EMATeacher:
    """Keep an EMA copy of (parts of) a student network and update it after each optimizer step.

    The teacher is a deep copy of the student's ``modules`` (default: the student's ``teacher_modules``
    attribute, e.g. UniMedI's ``("image_encoder", "distill_head")``; else the whole student) held in an
    ``nn.ModuleDict``, frozen (``requires_grad=False``) and in eval mode. It is *not* a submodule of the
    student, so it is outside the optimizer, the student's ``state_dict`` and DDP; if the student has
    ``set_teacher``, the teacher is registered with it so its ``forward`` can produce the teacher's
    targets. A DDP-wrapped student is unwrapped (``.module``); every rank keeps its own, identical teacher
    (DDP keeps the students identical), so attach this handler on every rank.

    Update (at ``Events.ITERATION_COMPLETED``, after each optimizer step: every ``every`` micro-batches
    counted within the epoch, and at the epoch's last iteration, as the training step groups gradient
    accumulation): ``theta_t <- m theta_t + (1 - m) theta_s`` for parameters, buffers copied, with
    ``m = cosine_momentum(iteration - 1, total_steps, momentum, final_momentum)``.
    ``total_steps`` defaults to ``max_epochs * epoch_length`` of the engine.

    Checkpointing: :meth:`state_dict` / :meth:`load_state_dict` hold the teacher weights and the update
    count; put the handler in the checkpoint's ``save_dict`` next to the network.

    Args:
        network: the student (possibly DDP-wrapped).
        momentum: ``m0`` (DINO: 0.996). final_momentum: the schedule's end value (1.0).
        total_steps: iterations of the schedule (default from the engine).
        modules: names of the student's submodules to copy (``None``: ``teacher_modules`` or the whole student).
        every: the gradient-accumulation steps (default: the trainer's ``accumulation_steps``, else 1).
    """

    runs_on_all_ranks = True  # every rank keeps its teacher in step (handlers_for_rank)

    def __init__(
        self,
        network: nn.Module,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        total_steps: int | None = None,
        modules: Sequence[str] | None = None,
        every: int | None = None,
    ) -> None:
        if not 0.0 <= momentum <= 1.0 or not 0.0 <= final_momentum <= 1.0:
            raise ConfigurationError(f"momentum values must be in [0, 1], got {momentum} -> {final_momentum}")
        if every is not None and every < 1:
            raise ConfigurationError(f"every must be >= 1, got {every}")
        self.network = network
        self.momentum, self.final_momentum = float(momentum), float(final_momentum)
        self.total_steps = total_steps
        self.every = every
        self.num_updates = 0
        student = _unwrap(network)
        names = modules if modules is not None else getattr(student, "teacher_modules", None)
        self.module_names: list[str] | None = list(names) if names else None
        self.teacher = self._copy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        if hasattr(student, "set_teacher"):
            student.set_teacher(self.teacher)

    def _copy(self, student: nn.Module) -> nn.Module:
        if self.module_names is None:
            existing = getattr(student, "teacher", None)
            memo = {id(existing): None} if isinstance(existing, nn.Module) else {}
            return nn.ModuleDict({"student": copy.deepcopy(student, memo)})
        try:
            return nn.ModuleDict({n: copy.deepcopy(student.get_submodule(n)) for n in self.module_names})
        except AttributeError as err:
            raise ConfigurationError(f"EMATeacher: the student has no submodule among {self.module_names}: {err}") from err

    def _sources(self) -> nn.ModuleDict:
        student = _unwrap(self.network)
        if self.module_names is None:
            return nn.ModuleDict({"student": student})
        return nn.ModuleDict({n: student.get_submodule(n) for n in self.module_names})

    def _sync_device(self) -> None:
        """Move the teacher to the student's device (the student may have moved after the copy)."""
        s = next(_unwrap(self.network).parameters(), None)
        t = next(self.teacher.parameters(), None)
        if s is not None and t is not None and t.device != s.device:
            self.teacher.to(s.device)

    @torch.no_grad()
    def update(self, momentum: float | None = None) -> float:
        """One EMA step with ``momentum`` (default: the scheduled value at the current update count); returns it."""
        m = self.momentum_at(self.num_updates) if momentum is None else float(momentum)
        self._sync_device()
        sources = self._sources()
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in sources.parameters()]
        if len(t_params) != len(s_params):
            raise ConfigurationError(f"EMATeacher: teacher has {len(t_params)} parameters, student {len(s_params)}")
        torch._foreach_mul_(t_params, m)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - m)
        for tb, sb in zip(self.teacher.buffers(), sources.buffers()):
            tb.copy_(sb)
        self.num_updates += 1
        return m

    def momentum_at(self, step: int) -> float:
        """The scheduled momentum at update/iteration ``step`` (``momentum`` when no ``total_steps`` is known)."""
        if not self.total_steps:
            return self.momentum
        return cosine_momentum(step, self.total_steps, self.momentum, self.final_momentum)

    # -- ignite --------------------------------------------------------------------------------------------------
    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._on_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _on_started(self, engine: Engine) -> None:
        self._sync_device()
        if self.total_steps is None and engine.state.epoch_length and engine.state.max_epochs:
            self.total_steps = int(engine.state.max_epochs) * int(engine.state.epoch_length)

    def __call__(self, engine: Engine) -> None:
        it = engine.state.iteration
        every = self.every or max(1, int(getattr(engine, "accumulation_steps", 1) or 1))
        local = (it - 1) % engine.state.epoch_length + 1 if engine.state.epoch_length else it
        if local % every and local != engine.state.epoch_length:
            return
        # the schedule follows the engine's iteration (restored on resume); iteration 1 -> step 0
        m = self.update(self.momentum_at(it - 1))
        engine.state.metrics["teacher_momentum"] = m

    # -- checkpointing -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict(), "num_updates": torch.tensor(self.num_updates)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "teacher" not in state:
            raise ModelLoadError("EMATeacher checkpoint entry has no 'teacher' weights")
        try:
            self.teacher.load_state_dict(state["teacher"])
        except RuntimeError as err:
            raise ModelLoadError(f"EMATeacher: the checkpoint's teacher does not fit this network: {str(err).splitlines()[0]}") from err
        self.num_updates = int(state.get("num_updates", 0))
