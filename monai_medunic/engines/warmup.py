"""Warm-up phases of a training run, read from the engine's state (so they survive checkpoint/resume).

Uni-Mlip Sec. 3.3: "we propose to train without SimCLR for some epochs first, and then we freeze the
mean and variance in the batch normalization layers [...] when incorporating the SimCLR loss". Two
handlers follow one warm-up: :class:`~monai_medunic.engines.batchnorm.FreezeBatchNormStatistics`
freezes the statistics and :class:`ObjectiveTermWarmup` switches the I2I term on. Both decide from
:class:`WarmupPhase`, i.e. from ``engine.state.iteration`` / ``epoch``, which checkpoints restore.
"""

from __future__ import annotations

import logging
from typing import Mapping

from ignite.engine import Engine, Events

from monai_medunic.errors import ConfigurationError

__all__ = ["WarmupPhase", "ObjectiveTermWarmup"]

logger = logging.getLogger(__name__)


class WarmupPhase:
    """The first ``warmup_iterations`` iterations, or the first ``warmup_epochs`` epochs, of a run.

    :meth:`over` is true from iteration ``warmup_iterations + 1`` (or from the first iteration of epoch
    ``warmup_epochs + 1``); with neither given, from the first iteration.

    Raises:
        ConfigurationError: both given, or a negative one.
    """

    def __init__(self, warmup_iterations: int | None = None, warmup_epochs: int | None = None) -> None:
        if warmup_iterations is not None and warmup_epochs is not None:
            raise ConfigurationError("give warmup_iterations or warmup_epochs, not both")
        for key, value in (("warmup_iterations", warmup_iterations), ("warmup_epochs", warmup_epochs)):
            if value is not None and int(value) < 0:
                raise ConfigurationError(f"{key} must be >= 0, got {value}")
        self.warmup_iterations = None if warmup_iterations is None else int(warmup_iterations)
        self.warmup_epochs = None if warmup_epochs is None else int(warmup_epochs)

    def over(self, engine: Engine) -> bool:
        """True from the first iteration after the warm-up."""
        if self.warmup_epochs is not None:
            return engine.state.epoch > self.warmup_epochs
        return engine.state.iteration > (self.warmup_iterations or 0)


class ObjectiveTermWarmup(WarmupPhase):
    """Ignite handler: objective terms switched off (weight 0, so not computed) during a warm-up and on
    (at the given weights) after it. With a :class:`~monai_medunic.losses.CompositeObjective`, a term
    of weight 0 is not among ``required_keys``, so the network does not even compute its inputs (no
    strong view goes through the encoder before the I2I term is on).

    Attach it on every rank (``runs_on_all_ranks``): it changes the training computation. It sets the
    weights at every ``ITERATION_STARTED`` from the engine's iteration/epoch, so a resumed run gets the
    weights of where it resumes.

    Args:
        objective: the objective (an object with ``set_weight(term, weight)`` and ``weights``).
        terms: term -> weight after the warm-up (e.g. ``{"i2i": 0.5}``).
        warmup_iterations, warmup_epochs: the warm-up (see :class:`WarmupPhase`).

    Raises:
        ConfigurationError: a term the objective does not have, a negative weight, or a bad warm-up.
    """

    runs_on_all_ranks = True

    def __init__(self, objective, terms: Mapping[str, float], warmup_iterations: int | None = None,
                 warmup_epochs: int | None = None) -> None:
        super().__init__(warmup_iterations, warmup_epochs)
        if not terms:
            raise ConfigurationError("ObjectiveTermWarmup needs at least one term")
        self.objective = objective
        self.terms = {str(t): float(w) for t, w in terms.items()}
        if not any(w > 0 for t, w in objective.weights.items() if t not in self.terms):
            raise ConfigurationError(f"during the warm-up of {sorted(self.terms)} no other term of the objective has a "
                                     f"positive weight: {objective.weights}")
        for term, weight in self.terms.items():
            objective.set_weight(term, weight)  # validates the name and the weight
            objective.set_weight(term, 0.0)
        self._on: bool | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        on = self.over(engine)
        if on == self._on:
            return
        for term, weight in self.terms.items():
            self.objective.set_weight(term, weight if on else 0.0)
        self._on = on
        if on:
            logger.info("objective terms %s switched on at iteration %d (epoch %d)", self.terms, engine.state.iteration,
                        engine.state.epoch)
