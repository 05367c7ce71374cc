"""The one training step of every pre-training bundle, for MONAI's ``SupervisedTrainer(iteration_update=...)``.

A method is a configuration of :class:`TrainStep`: which batch entries the network takes
(:class:`NetworkInputs`) and which objective the trainer's ``loss_function`` is (a
:class:`~monai_medunic.losses.CompositeObjective`). Med-UniC, the cross-lingual MLM post-pre-training,
UniMedI and Uni-Mlip share everything else: mixed precision, gradient accumulation, clipping, DDP
gradient synchronisation, the non-finite check and MONAI's ``IterationEvents``.

The step follows the shape of ``monai.engines.SupervisedTrainer._iteration``: ``engine.prepare_batch``
(a dict of tensors on the device), the network call, ``engine.loss_function``, backward, and the
optimiser step, firing ``FORWARD_COMPLETED``, ``LOSS_COMPLETED``, ``BACKWARD_COMPLETED`` and
``MODEL_COMPLETED``. The network takes several named inputs, so it is called through
:class:`NetworkInputs` rather than ``engine.inferer``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from monai.engines.utils import IterationEvents, default_prepare_batch
from torch import nn

from monai_medunic.engines.precision import autocast, resolve_precision
from monai_medunic.errors import ConfigurationError, NonFiniteLossError

__all__ = ["TrainStep", "NetworkInputs", "prepare_dict_batch", "loss_terms", "output_item", "unwrap"]

logger = logging.getLogger(__name__)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``network`` itself)."""
    return network.module if hasattr(network, "module") else network


def loss_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: every ``loss*`` entry of the step output."""
    return {k: float(v) for k, v in output.items() if k.startswith("loss")}


def output_item(key: str = "loss") -> Any:
    """An Ignite ``output_transform`` giving ``engine.state.output[key]`` (for metrics such as ``Average``).

    ``monai.handlers.from_engine`` returns a tuple for a dict, which Ignite's ``Average`` rejects.
    """

    def _get(output: Mapping[str, Any]) -> Any:
        return output[key]

    return _get


def prepare_dict_batch(
    batchdata: Mapping[str, Any], device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """``prepare_batch`` for dict batches: every tensor (or array) entry moved to ``device``; others kept as they are."""
    if not isinstance(batchdata, Mapping):
        raise ConfigurationError(f"the training step needs dict batches, got {type(batchdata).__name__}")
    out: dict[str, Any] = {}
    for key, value in batchdata.items():
        if isinstance(value, torch.Tensor):
            out[key] = value.as_subclass(torch.Tensor).to(device=device, non_blocking=non_blocking, **kwargs)
        else:
            out[key] = value
    return out


class NetworkInputs:
    """How a batch becomes a network call: forward argument name -> batch key.

    Med-UniC: ``{"images": "image", "images_aug": "image_aug", "input_ids": "input_ids",
    "attention_mask": "attention_mask"}`` with ``optional=["images_aug"]``; an HF masked LM:
    ``{"input_ids": "input_ids", "attention_mask": "attention_mask"}``.

    The network's output becomes a dict of named tensors: a mapping (a dict, an HF ``ModelOutput``)
    is kept, a tensor is returned as ``{"pred": tensor}``. When the network's ``forward`` takes a
    ``required_outputs`` argument, it gets the keys the objective reads, so it can skip what no
    active term needs (a second text view without CTR, for example).

    Args:
        inputs: forward argument name -> batch key.
        optional: argument names whose batch key may be absent (the argument is then not passed).
    """

    def __init__(self, inputs: Mapping[str, str], optional: Sequence[str] = ()) -> None:
        if not inputs:
            raise ConfigurationError("NetworkInputs needs at least one forward argument")
        self.inputs = dict(inputs)
        self.optional = set(optional)
        unknown = self.optional - set(self.inputs)
        if unknown:
            raise ConfigurationError(f"optional inputs {sorted(unknown)} are not among the forward arguments {list(self.inputs)}")

    def kwargs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The forward keyword arguments taken from ``batch``.

        Raises:
            ConfigurationError: a required batch key is missing (the message lists what the batch has).
        """
        kwargs = {}
        for arg, key in self.inputs.items():
            if key in batch and batch[key] is not None:
                kwargs[arg] = batch[key]
            elif arg not in self.optional:
                raise ConfigurationError(f"the network argument '{arg}' needs batch key '{key}', which the batch lacks "
                                         f"(it has {sorted(batch)})")
        return kwargs

    def __call__(self, network: nn.Module, batch: Mapping[str, Any], required_outputs: set[str] | None = None) -> dict[str, Any]:
        kwargs = self.kwargs(batch)
        if required_outputs is not None and _accepts(network, "required_outputs"):
            kwargs["required_outputs"] = required_outputs
        out = network(**kwargs)
        if isinstance(out, torch.Tensor):
            return {"pred": out}
        if isinstance(out, Mapping):
            return dict(out)
        raise ConfigurationError(f"the network returned {type(out).__name__}; expected a dict of tensors or a tensor")


def _accepts(network: nn.Module, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(unwrap(network).forward).parameters
    except (TypeError, ValueError):
        return False


class TrainStep:
    """One training iteration for ``SupervisedTrainer(iteration_update=TrainStep(...))``.

    Per call: ``engine.prepare_batch`` (default: :func:`prepare_dict_batch`), the forward pass under
    autocast (per ``precision``), ``engine.loss_function`` on the network output merged over the
    batch (a :class:`~monai_medunic.losses.CompositeObjective`, or any callable returning a dict with
    ``loss`` or a tensor), backward, and an optimiser step at the end of each accumulation group.

    Gradient accumulation follows the trainer's ``accumulation_steps`` (N) and counts micro-batches
    within the epoch: every optimiser step sees N micro-batches, and the last group of an epoch whose
    length is not a multiple of N sees the remainder r, with the loss divided by r instead of N, so
    each step averages the micro-batch losses it saw. Under DDP, gradient synchronisation is skipped
    (``no_sync``) on the iterations that do not step. Trainable parameters of the objective (a
    learnable temperature) must be in the optimizer (checked at the first iteration) and have their
    gradients averaged over ranks before the step.

    Before the first forward (and again whenever the set of active terms or of batch keys changes, as
    when a warm-up switches a term on), every tensor the objective's active terms read must be a batch
    key or an output the network declares it can produce with its inputs (``available_outputs(inputs)``
    of :class:`~monai_medunic.networks.MedUniC` and its subclasses); otherwise
    :class:`~monai_medunic.errors.MissingOutputError` names the term and the key, before any compute.
    Networks that declare nothing are not checked (the objective then names a missing key at its call).

    Returns a dict: ``loss`` (the total), ``loss_<term>`` for each objective term, ``lr`` and ``batch_size``.

    Args:
        network_inputs: a :class:`NetworkInputs`, or its ``inputs`` mapping.
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` (see :func:`~monai_medunic.engines.precision.resolve_precision`).
        channels_last: run the network's convolutions and 4-D image inputs in channels-last memory format.
        grad_clip_norm: clip the global gradient norm of the optimised parameters (``None``: no clipping).
        optional_inputs: with a mapping for ``network_inputs``, the arguments that may be absent.

    Raises:
        NonFiniteLossError: a term became NaN or infinite (names the term and the iteration).
        ConfigurationError: a batch key is missing, or objective parameters are not optimised.
    """

    def __init__(
        self,
        network_inputs: NetworkInputs | Mapping[str, str],
        precision: str = "auto",
        channels_last: bool = False,
        grad_clip_norm: float | None = 1.0,
        optional_inputs: Sequence[str] = (),
    ) -> None:
        self.network_inputs = network_inputs if isinstance(network_inputs, NetworkInputs) else NetworkInputs(network_inputs, optional_inputs)
        self.precision = precision
        self.channels_last = channels_last
        self.grad_clip_norm = grad_clip_norm
        self.resolved: str | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._checked: set[tuple[frozenset, frozenset]] = set()

    # ------------------------------------------------------------------ set-up
    def _setup(self, engine: Any) -> None:
        device = torch.device(engine.state.device)
        self.resolved = resolve_precision(self.precision, device)
        if self.resolved == "fp16" and self.scaler is None:
            self.scaler = torch.amp.GradScaler("cuda")
        objective = engine.loss_function
        if isinstance(objective, nn.Module):
            objective.to(device)
            in_optimizer = {id(p) for g in engine.optimizer.param_groups for p in g["params"]}
            missing = [n for n, p in objective.named_parameters() if p.requires_grad and id(p) not in in_optimizer]
            if missing:
                raise ConfigurationError(
                    f"the objective's trainable parameters {missing} are not in the optimizer, so they would never train: "
                    "build the optimizer with monai_medunic.engines.optim.trainable_parameters(network, objective)"
                )
        if self.channels_last:
            unwrap(engine.network).to(memory_format=torch.channels_last)
        logger.info("training step: precision=%s channels_last=%s accumulation_steps=%d", self.resolved,
                    self.channels_last, max(1, int(getattr(engine, "accumulation_steps", 1))))

    def _prepare_batch(self, engine: Any, batchdata: Mapping[str, Any]) -> Mapping[str, Any]:
        device = engine.state.device
        if engine.prepare_batch is default_prepare_batch:
            batch = prepare_dict_batch(batchdata, device, engine.non_blocking, **engine.to_kwargs)
        else:
            batch = engine.prepare_batch(batchdata, device, engine.non_blocking, **engine.to_kwargs)
            if not isinstance(batch, Mapping):
                raise ConfigurationError("the trainer's prepare_batch must return a dict for TrainStep "
                                         "(e.g. monai_medunic.engines.step.prepare_dict_batch)")
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last)
                     if isinstance(v, torch.Tensor) and v.ndim == 4 and v.is_floating_point() else v
                     for k, v in batch.items()}
        return batch

    def check_outputs(self, network: nn.Module, objective: Any, batch: Mapping[str, Any]) -> None:
        """Raise :class:`~monai_medunic.errors.MissingOutputError` if an active term of ``objective`` reads a
        key that is neither in ``batch`` nor among the outputs ``network`` declares for the inputs it gets."""
        net = unwrap(network)
        declare = getattr(net, "available_outputs", None)
        check = getattr(objective, "check_available", None)
        required = getattr(objective, "required_keys", None)
        if declare is None or check is None or required is None:
            return
        key = (frozenset(required), frozenset(batch))
        if key in self._checked:
            return
        available = set(declare(self.network_inputs.kwargs(batch))) | {k for k, v in batch.items() if v is not None}
        check(available, getattr(net, "output_requirements", None))
        self._checked.add(key)

    # ------------------------------------------------------------------ iteration
    @staticmethod
    def accumulation_group(iteration: int, epoch_length: int | None, steps: int) -> tuple[bool, bool, int]:
        """``(first, last, size)`` of the accumulation group of a 1-based ``iteration``: whether it
        starts the group (zero the gradients), ends it (optimiser step), and how many micro-batches it has."""
        local = (iteration - 1) % epoch_length if epoch_length else iteration - 1
        start = local - local % steps
        size = min(steps, epoch_length - start) if epoch_length else steps
        return local == start, local - start + 1 == size, size

    def __call__(self, engine: Any, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ConfigurationError("the training step got no batch")
        if self.resolved is None:
            self._setup(engine)
        device = torch.device(engine.state.device)
        batch = self._prepare_batch(engine, batchdata)
        steps = max(1, int(getattr(engine, "accumulation_steps", 1)))
        first, last, group = self.accumulation_group(engine.state.iteration, engine.state.epoch_length, steps)
        network, optimizer, objective = engine.network, engine.optimizer, engine.loss_function
        network.train()
        if first:
            optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        required = getattr(objective, "required_keys", None)
        self.check_outputs(network, objective, batch)
        sync = network.no_sync() if (not last and hasattr(network, "no_sync")) else contextlib.nullcontext()
        engine.state.output = {}
        with sync:
            with autocast(self.resolved, device.type):
                outputs = self.network_inputs(network, batch, required)
            engine.state.output["pred"] = outputs
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            try:
                losses = objective({**batch, **outputs})
            except NonFiniteLossError as err:
                raise NonFiniteLossError(err.term, err.value, engine.state.iteration) from None
            if isinstance(losses, torch.Tensor):
                losses = {"loss": losses}
            loss = losses["loss"]
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError("loss", float(loss.detach()), engine.state.iteration)
            engine.state.output["loss"] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            scaled = loss / group
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if last:
            self._optimizer_step(optimizer, objective)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        out: dict[str, Any] = {"loss": loss.detach()}
        out.update({f"loss_{t}": v.detach() for t, v in losses.items() if t != "loss"})
        out["lr"] = optimizer.param_groups[0]["lr"]
        out["batch_size"] = next((len(v) for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim), 0)
        return out

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, objective: Any) -> None:
        if isinstance(objective, nn.Module) and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # DDP averages the network's gradients; the objective's parameters are outside DDP
            for p in objective.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= dist.get_world_size()
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        if self.grad_clip_norm:
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The fp16 gradient scaler's state (empty otherwise), so checkpoints resume with the same loss scale."""
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("scaler"):
            if self.scaler is None:  # resumed before the first iteration created it
                self.scaler = torch.amp.GradScaler("cuda")
            self.scaler.load_state_dict(state["scaler"])
