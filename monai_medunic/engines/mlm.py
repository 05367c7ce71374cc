"""Cross-lingual masked-language-model post-pre-training with MONAI's Ignite ``SupervisedTrainer``.

Med-UniC Sec. 3.2 step (3): after the vocabulary extension, the text encoder is trained with BERT's
masked language modelling on randomly mixed English and Spanish reports (15% masking). This module
holds what the ``bundles/cxr_text_mlm`` bundle needs so that its configs stay pure JSON:

* :class:`MLMIteration`: the ``iteration_update`` of ``monai.engines.SupervisedTrainer`` (AMP via
  ``torch.autocast``: bf16 on CPU where supported, fp16 + ``GradScaler`` on CUDA; gradient accumulation
  with the trainer's ``accumulation_steps``; gradient clipping; a non-finite loss check);
* :func:`prepare_mlm_batch` and :class:`MaskedLMLoss` (the MLM loss, BERT Eq. in Devlin et al. Sec. 3.1:
  cross-entropy over the masked positions only);
* :func:`load_masked_lm` (HF model from a directory, optional lower-layer freeze), :func:`parameter_groups`,
  :func:`linear_warmup_schedule` (linear warm-up over 10% of the steps, then linear decay);
* handlers: :class:`ResumeCheckpointLoader`, :class:`EngineCheckpointSaver`, :class:`EpochLossRecorder`,
  :class:`SaveHFPretrained` (the HF-format output directory that the vision-language bundle loads);
* distributed helpers for ``multi_gpu_train.json``: :func:`init_distributed`, :func:`distributed_device`,
  :func:`ddp_wrap`, :func:`handlers_for_rank`, :func:`destroy_distributed`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import CommonKeys as Keys
from torch import nn

from monai_medunic.engines.distributed import get_rank
from monai_medunic.engines.iterations import resolve_precision as _resolve_precision_name
from monai_medunic.errors import ConfigurationError, ModelLoadError, NonFiniteLossError
from monai_medunic.text.io_utils import atomic_directory
from monai_medunic.losses.mlm import MaskedLMLoss

__all__ = [
    "select_device",
    "to_device",
    "load_masked_lm",
    "freeze_lower_layers",
    "parameter_groups",
    "linear_warmup_schedule",
    "prepare_mlm_batch",
    "output_item",
    "MaskedLMLoss",
    "resolve_precision",
    "MLMIteration",
    "ResumeCheckpointLoader",
    "EngineCheckpointSaver",
    "EpochLossRecorder",
    "SaveHFPretrained",
    "init_distributed",
    "distributed_device",
    "ddp_wrap",
    "handlers_for_rank",
    "destroy_distributed",
    "get_rank",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# devices, model, optimiser, schedule
# --------------------------------------------------------------------------------------------------
def select_device(device: str = "auto") -> torch.device:
    """``"auto"`` gives ``cuda`` when available, else ``cpu``; any other value is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_device(module: nn.Module, device: str | torch.device) -> nn.Module:
    """``module.to(device)`` for configs."""
    return module.to(device)


def freeze_lower_layers(model: nn.Module, num_layers: int, freeze_embeddings: bool = False) -> int:
    """Freeze the lower ``num_layers`` transformer layers (Med-UniC Sec. 4.5: update only the top layers).

    In the MLM stage the word embeddings stay trainable by default: the new second-language rows
    :math:`\\mathbf{W}_{sp}` are learned here.

    Returns:
        the number of frozen parameters.
    """
    from monai_medunic.networks.text import find_transformer_layers

    if num_layers < 0:
        raise ConfigurationError(f"freeze_layers must be >= 0, got {num_layers}")
    base = getattr(model, "base_model", model)
    layers = find_transformer_layers(base)
    if num_layers > len(layers):
        raise ConfigurationError(f"freeze_layers={num_layers} but the model has {len(layers)} layers")
    frozen = 0
    modules: list[nn.Module] = list(layers[:num_layers])
    if freeze_embeddings and hasattr(base, "embeddings"):
        modules.append(base.embeddings)
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen


def load_masked_lm(model_dir: str | os.PathLike, freeze_layers: int = 0, freeze_embeddings: bool = False,
                   local_files_only: bool = True) -> nn.Module:
    """Load an HF masked-LM (``AutoModelForMaskedLM``) from a directory, optionally freezing lower layers.

    Raises:
        ModelLoadError: the directory is missing or holds no loadable model.
    """
    from transformers import AutoModelForMaskedLM

    path = os.fspath(model_dir)
    if not os.path.isdir(path):
        raise ModelLoadError(f"{path}: model directory not found (build one with build_base_model / build-vocab)")
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=local_files_only)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{path}: cannot load a masked-LM model: {err}") from err
    if freeze_layers or freeze_embeddings:
        n = freeze_lower_layers(model, int(freeze_layers), freeze_embeddings)
        logger.info("froze %d parameters (%d lower layers%s)", n, freeze_layers,
                    " and the embeddings" if freeze_embeddings else "")
    return model


def parameter_groups(module: nn.Module, weight_decay: float = 0.01) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters: no weight decay on biases and LayerNorm weights (BERT)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    if not decay and not no_decay:
        raise ConfigurationError("the model has no trainable parameter (every layer is frozen)")
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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

    per_epoch = steps_per_epoch if isinstance(steps_per_epoch, int) else len(steps_per_epoch)
    total = int(max_epochs) * int(per_epoch)
    if total < 1:
        raise ConfigurationError(f"the schedule has no step (max_epochs={max_epochs}, steps_per_epoch={per_epoch})")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigurationError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}")
    return get_linear_schedule_with_warmup(optimizer, int(math.ceil(warmup_ratio * total)), total)


# --------------------------------------------------------------------------------------------------
# iteration
# --------------------------------------------------------------------------------------------------
def output_item(key: str = Keys.LOSS) -> Any:
    """An Ignite ``output_transform`` giving ``engine.state.output[key]`` (for a non-decollated dict output).

    ``monai.handlers.from_engine`` returns a tuple for a dict, which Ignite's ``Average`` rejects.
    """

    def _get(output: Mapping[str, Any]) -> Any:
        return output[key]

    return _get


def prepare_mlm_batch(batchdata: Mapping[str, Any], device: str | torch.device | None = None,
                      non_blocking: bool = False, **kwargs: Any
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, torch.Tensor]]:
    """``(input_ids, labels, (), {"attention_mask": ...})`` on ``device`` from a collated MLM batch."""
    missing = [k for k in ("input_ids", "attention_mask", "labels") if k not in batchdata]
    if missing:
        raise ConfigurationError(f"MLM batch lacks {missing} (use TokenizeReportd then RandMaskTokensd)")

    def mv(x: Any) -> torch.Tensor:
        return torch.as_tensor(x).to(device=device, non_blocking=non_blocking, **kwargs)

    return mv(batchdata["input_ids"]), mv(batchdata["labels"]), (), {"attention_mask": mv(batchdata["attention_mask"])}


def resolve_precision(precision: str, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
    """``(autocast enabled, dtype, use GradScaler)`` for ``precision`` in ``auto | fp32 | bf16 | fp16``.

    The choice itself is :func:`monai_medunic.engines.iterations.resolve_precision` (shared with the
    vision-language bundle): ``auto`` is fp16 with a ``GradScaler`` on CUDA, bf16 on a CPU with native
    bf16 support, else fp32.
    """
    resolved = _resolve_precision_name(str(precision).lower(), device)
    if resolved == "fp32":
        return False, None, False
    return True, (torch.float16 if resolved == "fp16" else torch.bfloat16), resolved == "fp16"


class MLMIteration:
    """``iteration_update`` for ``monai.engines.SupervisedTrainer`` on an HF masked-LM.

    One call = one mini-batch: forward under ``torch.autocast`` (per ``precision``), the trainer's
    ``loss_function`` on the logits, backward of ``loss / accumulation_steps``, and an optimiser step every
    ``engine.accumulation_steps`` iterations (and at the end of an epoch), with optional gradient clipping.
    Under DDP, gradient synchronisation is skipped on the accumulation-only iterations.

    Args:
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16`` (see :func:`resolve_precision`).
        max_grad_norm: clip the gradient norm to this value (``None``: no clipping).

    Raises:
        NonFiniteLossError: the loss is NaN or infinite.
    """

    def __init__(self, precision: str = "auto", max_grad_norm: float | None = 1.0) -> None:
        self.precision = precision
        self.max_grad_norm = max_grad_norm
        self._resolved: tuple[bool, torch.dtype | None, bool] | None = None
        self.scaler: torch.amp.GradScaler | None = None

    def _setup(self, device: torch.device) -> tuple[bool, torch.dtype | None, bool]:
        if self._resolved is None:
            self._resolved = resolve_precision(self.precision, device)
            if self._resolved[2]:
                self.scaler = torch.amp.GradScaler("cuda")
            logger.info("MLM precision: %s", self._resolved[1] or "fp32")
        return self._resolved

    def __call__(self, engine: Any, batchdata: Mapping[str, Any]) -> dict[str, Any]:
        if batchdata is None:
            raise ConfigurationError("Must provide batch data for current iteration.")
        device = torch.device(engine.state.device) if not isinstance(engine.state.device, torch.device) else \
            engine.state.device
        enabled, dtype, use_scaler = self._setup(device)
        input_ids, labels, args, kwargs = engine.prepare_batch(batchdata, device, engine.non_blocking,
                                                              **engine.to_kwargs)
        acc = max(1, int(getattr(engine, "accumulation_steps", 1)))
        epoch_length = engine.state.epoch_length
        local_iter = (engine.state.iteration - 1) % epoch_length if epoch_length else engine.state.iteration - 1
        zero_grad = local_iter % acc == 0
        step = (local_iter + 1) % acc == 0 or (epoch_length is not None and local_iter + 1 == epoch_length)

        network = engine.network
        network.train()
        if zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        sync_ctx = network.no_sync() if (not step and hasattr(network, "no_sync")) else _nullcontext()
        engine.state.output = {Keys.IMAGE: input_ids, Keys.LABEL: labels}
        with sync_ctx:
            with torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled):
                out = engine.inferer(input_ids, network, *args, **kwargs)
                logits = out.logits if hasattr(out, "logits") else out
                engine.state.output[Keys.PRED] = logits
                engine.fire_event(IterationEvents.FORWARD_COMPLETED)
                loss = engine.loss_function(logits, labels).mean()
            engine.state.output[Keys.LOSS] = loss
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            if not torch.isfinite(loss):
                raise NonFiniteLossError("mlm", float(loss.detach()), engine.state.iteration)
            scaled = loss / acc
            (self.scaler.scale(scaled) if use_scaler and self.scaler is not None else scaled).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if step:
            if use_scaler and self.scaler is not None:
                self.scaler.unscale_(engine.optimizer)
            if self.max_grad_norm:
                params = [p for g in engine.optimizer.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            if use_scaler and self.scaler is not None:
                self.scaler.step(engine.optimizer)
                self.scaler.update()
            else:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output[Keys.PRED] = logits.detach()
        engine.state.output[Keys.LOSS] = loss.detach()
        return engine.state.output


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# handlers
# --------------------------------------------------------------------------------------------------
_CKPT_RE = re.compile(r"(\d+)\.pt$")


class ResumeCheckpointLoader:
    """Resume from the newest checkpoint in ``checkpoint_dir`` (if any) with MONAI's ``CheckpointLoader``.

    The trainer itself is added to ``load_dict`` as ``"trainer"`` when attached (a config cannot reference
    the trainer from its own handler list), so epoch and iteration counts resume too. Loading uses
    ``torch.load(weights_only=True)``.

    Args:
        checkpoint_dir: where ``EngineCheckpointSaver`` writes ``*.pt`` files.
        load_dict: objects to restore (e.g. network, optimizer, lr_scheduler).
        enabled: ``False`` turns the handler into a no-op (``"resume": false`` in the config).
        map_location: passed to ``torch.load``.
    """

    def __init__(self, checkpoint_dir: str, load_dict: dict[str, Any], enabled: bool = True,
                 map_location: Any = "cpu") -> None:
        self.checkpoint_dir = checkpoint_dir
        self.load_dict = dict(load_dict)
        self.enabled = enabled
        self.map_location = map_location

    def latest(self) -> str | None:
        """The newest checkpoint file: the highest trailing number (iteration/epoch), then the newest mtime."""
        files = [f for f in glob.glob(os.path.join(self.checkpoint_dir, "*.pt")) if os.path.isfile(f)]
        if not files:
            return None

        def key(f: str) -> tuple[int, float]:
            m = _CKPT_RE.search(os.path.basename(f))
            return (int(m.group(1)) if m else -1, os.path.getmtime(f))

        return max(files, key=key)

    def attach(self, engine: Any) -> None:
        if not self.enabled:
            return
        path = self.latest()
        if path is None:
            logger.info("resume: no checkpoint in %s, starting from scratch", self.checkpoint_dir)
            return
        logger.info("resume: loading %s", path)
        load_dict = {**self.load_dict, "trainer": engine}
        CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location).attach(engine)


class EngineCheckpointSaver(CheckpointSaver):
    """MONAI ``CheckpointSaver`` that also saves the trainer's state (epoch, iteration) as ``"trainer"``.

    Same arguments as ``monai.handlers.CheckpointSaver``; the trainer is added when the handler is attached.
    """

    def attach(self, engine: Any) -> None:
        self.save_dict["trainer"] = engine  # the Checkpoint objects share this dict
        super().attach(engine)


class EpochLossRecorder:
    """Write the mean loss of every epoch (and every iteration's loss) to a JSON file, on rank 0.

    The file is ``{"epochs": [{"epoch": e, "mean_loss": x, "iterations": n}, ...], "iteration_loss": [...]}``;
    when training resumes, earlier epochs already in the file are kept.
    """

    def __init__(self, output_file: str, loss_key: str = Keys.LOSS) -> None:
        self.output_file = output_file
        self.loss_key = loss_key
        self._epoch_losses: list[float] = []

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _iteration(self, engine: Any) -> None:
        out = engine.state.output
        value = out[self.loss_key] if isinstance(out, Mapping) else out
        self._epoch_losses.append(float(torch.as_tensor(value).float().mean()))

    def _epoch(self, engine: Any) -> None:
        if get_rank() != 0:
            self._epoch_losses = []
            return
        log: dict[str, list] = {"epochs": [], "iteration_loss": []}
        if os.path.isfile(self.output_file):
            with open(self.output_file, encoding="utf-8") as f:
                old = json.load(f)
            log["epochs"] = [e for e in old.get("epochs", []) if e["epoch"] < engine.state.epoch]
            log["iteration_loss"] = [e for e in old.get("iteration_loss", []) if e[0] < engine.state.epoch]
        n = len(self._epoch_losses)
        log["epochs"].append({"epoch": engine.state.epoch, "mean_loss": sum(self._epoch_losses) / max(n, 1),
                              "iterations": n})
        log["iteration_loss"].extend([engine.state.epoch, v] for v in self._epoch_losses)
        os.makedirs(os.path.dirname(os.path.abspath(self.output_file)), exist_ok=True)
        tmp = self.output_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(log, f, indent=1)
        os.replace(tmp, self.output_file)
        self._epoch_losses = []


class SaveHFPretrained:
    """At the end of training, save the model and its tokenizer as an HF directory (rank 0, atomically).

    The directory loads with ``AutoTokenizer`` / ``AutoModel(ForMaskedLM).from_pretrained``; it is the
    text encoder that the vision-language bundle consumes. Files in ``extra_files`` (e.g. the loss log)
    and the vocabulary-extension record of ``tokenizer_dir`` are copied along.

    Args:
        output_dir: the HF directory to write (replaced if it exists).
        network: the trained model (a DDP wrapper is unwrapped).
        tokenizer_dir: the directory of the tokenizer the model was trained with.
        extra_files: more files to copy into ``output_dir``.
        event: the Ignite event name to save on (``COMPLETED``).
    """

    def __init__(self, output_dir: str, network: nn.Module, tokenizer_dir: str,
                 extra_files: Iterable[str] = (), event: str = "COMPLETED") -> None:
        self.output_dir = output_dir
        self.network = network
        self.tokenizer_dir = tokenizer_dir
        self.extra_files = list(extra_files)
        self.event = event

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(getattr(Events, self.event), self)

    def __call__(self, engine: Any = None) -> None:
        if get_rank() != 0:
            return
        from monai_medunic.text.tokenize import load_tokenizer
        from monai_medunic.text.vocab import EXTENSION_INFO_FILE

        model = getattr(self.network, "module", self.network)
        tok = load_tokenizer(self.tokenizer_dir)
        with atomic_directory(self.output_dir, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            for f in [os.path.join(self.tokenizer_dir, "vocab.txt"), os.path.join(self.tokenizer_dir,
                                                                                   EXTENSION_INFO_FILE),
                      *self.extra_files]:
                if os.path.isfile(f):
                    shutil.copy2(f, os.path.join(tmp, os.path.basename(f)))
        logger.info("saved the HF model and tokenizer to %s", self.output_dir)


# --------------------------------------------------------------------------------------------------
# distributed (torchrun)
# --------------------------------------------------------------------------------------------------
def init_distributed(backend: str = "auto") -> bool:
    """Initialise ``torch.distributed`` from torchrun's environment (``nccl`` on CUDA, else ``gloo``)."""
    if not torch.distributed.is_available():
        raise ConfigurationError("torch.distributed is not available in this PyTorch build")
    if torch.distributed.is_initialized():
        return True
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ConfigurationError("multi_gpu_train.json must be launched with torchrun (RANK / WORLD_SIZE unset)")
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return True


def distributed_device() -> torch.device:
    """``cuda:LOCAL_RANK`` on GPU machines (and sets it as the current device), else ``cpu``."""
    if torch.cuda.is_available():
        dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.cuda.set_device(dev)
        return dev
    return torch.device("cpu")


def ddp_wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """Move ``module`` to ``device`` and wrap it in ``DistributedDataParallel``."""
    module = module.to(device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, output_device=ids[0] if ids else None)


def handlers_for_rank(handlers: Sequence[Any], rank0_from: int) -> list[Any]:
    """All ``handlers`` on rank 0; on other ranks only ``handlers[:rank0_from]`` (not logging, checkpoints, export)."""
    return list(handlers) if get_rank() == 0 else list(handlers)[:rank0_from]


def destroy_distributed() -> None:
    """Tear down the process group if one is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
