"""Ignite handlers for the training bundles: atomic checkpoints with resume, loss-history recording,
export of the trained model into the bundle and a DDP weights digest (the prediction writer is in
:mod:`monai_medunic.engines.predictions`, the calibration fit in :mod:`monai_medunic.engines.calibration`).

One checkpoint pair serves every bundle: :class:`AtomicCheckpointSaver` writes, and
:class:`ResumeFromLatestCheckpoint` restores, the objects of the config's ``save_dict`` plus the
training state the engine itself holds: the trainer (epoch, iteration), the objective
(``engine.loss_function``, when it has parameters such as a learnable temperature) and the training
step (the fp16 gradient scaler).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from monai_medunic.errors import CheckpointError

__all__ = [
    "AtomicCheckpointSaver",
    "ResumeFromLatestCheckpoint",
    "latest_checkpoint",
    "LossHistoryRecorder",
    "ExportPretrainedHandler",
    "RankWeightsDigest",
]

logger = logging.getLogger(__name__)


_STEP_RE = re.compile(r"_(\d+)\.pt$")
_TEMP_RE = re.compile(r"^tmp[a-z0-9_]{8}$")  # tempfile.NamedTemporaryFile(dir=save_dir), as ignite's DiskSaver makes it


def engine_training_state(engine: Engine) -> dict[str, Any]:
    """What a checkpoint holds besides the config's ``save_dict``: the trainer, the objective when it
    has state (trainable parameters), and the training step when it has state (the fp16 scaler)."""
    state: dict[str, Any] = {"trainer": engine}
    objective = getattr(engine, "loss_function", None)
    if isinstance(objective, nn.Module) and objective.state_dict():
        state["objective"] = objective
    step = getattr(engine, "_process_function", None)  # the iteration_update given to the trainer
    if callable(getattr(step, "state_dict", None)) and callable(getattr(step, "load_state_dict", None)):
        state["train_step"] = step
    return state


def latest_checkpoint(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> Path | None:
    """The checkpoint with the highest iteration number in ``save_dir`` (``None`` if there is none)."""
    d = Path(save_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.glob(f"{prefix}_*.pt") if (m := _STEP_RE.search(p.name))]
    return max(found)[1] if found else None


class _KeepUntilSavedDiskSaver(DiskSaver):
    """ignite's atomic :class:`~ignite.handlers.DiskSaver`, removing the checkpoints ignite retires only
    after the new one is complete.

    ignite's ``Checkpoint`` removes the oldest of its ``n_saved`` files *before* it writes the new one, so
    while a checkpoint is written only ``n_saved - 1`` complete ones exist (none with ``n_saved=1``): a
    kill or a full disk at that moment loses one. Here the removal waits for the rename of the new file;
    when the write fails, the old file stays.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retired: list[str] = []

    def remove(self, filename: str) -> None:
        self._retired.append(filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, filename, metadata)
        retired, self._retired = self._retired, []
        for old in retired:
            if old != filename and (self.dirname / old).exists():
                super().remove(old)


class AtomicCheckpointSaver:
    """Save the training state (model, optimizer, scheduler, trainer, ...) every N epochs and/or N
    iterations, and at completion, with ignite's :class:`~ignite.handlers.Checkpoint`.

    Files are written atomically (ignite's ``DiskSaver(atomic=True)``: a temporary file, then a
    rename), so a run killed while saving never leaves a truncated checkpoint; MONAI's
    ``CheckpointSaver`` saves with ``atomic=False``. The checkpoint that a new one replaces (beyond
    ``n_saved``) is removed only after the new one is complete, so ``n_saved`` complete checkpoints exist
    at every moment (ignite removes first, then writes). Files are named ``checkpoint_<iteration>.pt``.
    A full disk stops training with :class:`~monai_medunic.errors.OutputWriteError` naming the
    checkpoint; the earlier checkpoints are left complete and loadable.

    Args:
        save_dir: output folder.
        save_dict: objects with ``state_dict`` to save.
        every_n_epochs: epoch interval (0 disables).
        every_n_iterations: iteration interval (0 disables); lets a killed run resume mid-epoch.
        n_saved: keep this many most recent checkpoints.

    The engine's own training state is saved too (:func:`engine_training_state`: the trainer's epoch
    and iteration, the objective's parameters, the step's gradient scaler), without the config
    having to reference the trainer from its own handler list.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        every_n_epochs: int = 1,
        every_n_iterations: int = 0,
        n_saved: int = 2,
    ) -> None:
        self.save_dir = str(save_dir)
        self.save_dict = dict(save_dict)
        self.every_n_epochs = every_n_epochs
        self.every_n_iterations = every_n_iterations
        self.n_saved = n_saved

    def attach(self, engine: Engine) -> None:
        os.makedirs(self.save_dir, exist_ok=True)
        self._checkpoint: Checkpoint | None = None
        # the objective is set on a SupervisedTrainer after its handlers are attached: build at start
        engine.add_event_handler(Events.STARTED, self._build)
        if self.every_n_epochs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self._save)
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), self._save)
        engine.add_event_handler(Events.COMPLETED, self._final)

    def _build(self, engine: Engine) -> None:
        if self._checkpoint is None:
            # a run killed while saving leaves the temporary file of that write (ignite's NamedTemporaryFile)
            for stale in sorted(Path(self.save_dir).iterdir()):
                if _TEMP_RE.match(stale.name) and stale.is_file():
                    logger.info("removing %s, the unfinished write of a run that was stopped while saving", stale.name)
                    with contextlib.suppress(OSError):
                        stale.unlink()
            self._checkpoint = Checkpoint(
                {**self.save_dict, **engine_training_state(engine)},
                _KeepUntilSavedDiskSaver(self.save_dir, require_empty=False, atomic=True),
                filename_prefix="",
                n_saved=self.n_saved,
                global_step_transform=lambda eng, _: eng.state.iteration,
            )

    def _save(self, engine: Engine) -> None:
        self._build(engine)
        self._write(engine)

    def _final(self, engine: Engine) -> None:
        self._build(engine)
        last = self._checkpoint.last_checkpoint
        if last is None or not str(last).endswith(f"_{engine.state.iteration}.pt"):
            self._write(engine)

    def _write(self, engine: Engine) -> None:
        """Save; a full disk (or quota, or a read-only file system) raises :class:`~monai_medunic.errors.OutputWriteError`
        naming the checkpoint, after removing the failed write's temporary file: the earlier checkpoints stay
        as they were (ignite removes an old one only after the new one is complete)."""
        from monai_medunic.text.io_utils import is_disk_error, output_write_error

        before = set(os.listdir(self.save_dir))
        try:
            self._checkpoint(engine)
        except Exception as err:
            if not (isinstance(err, OSError) or is_disk_error(err)):
                raise
            for name in set(os.listdir(self.save_dir)) - before:
                if not _STEP_RE.search(name):  # the temporary file of the write that failed
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(self.save_dir, name))
            target = os.path.join(self.save_dir, f"checkpoint_{engine.state.iteration}.pt")
            raise output_write_error(err, target, "checkpoint") from None


class ResumeFromLatestCheckpoint:
    """At start, restore the newest ``checkpoint_<iteration>.pt`` of ``save_dir`` (if any), loaded with
    ``torch.load(weights_only=True)``; training then continues from the saved iteration.

    It restores ``load_dict`` and the engine's own training state (:func:`engine_training_state`; an
    objective or step state that an older checkpoint lacks is left as built, with a log line). A
    larger ``max_epochs`` than the checkpoint's continues training, as MONAI's ``CheckpointLoader``
    allows. Logs where it resumed from, or that it starts from scratch.

    Raises:
        CheckpointError: the file cannot be read, lacks an object of ``load_dict``, or does not fit the
            network (an architecture change): the message names the file and how to start fresh.
    """

    runs_on_all_ranks = True

    def __init__(self, save_dir: str | os.PathLike, load_dict: Mapping[str, Any], enabled: bool = True) -> None:
        self.save_dir = save_dir
        self.load_dict = dict(load_dict)
        self.enabled = enabled

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        path = latest_checkpoint(self.save_dir) if self.enabled else None
        if path is None:
            logger.info("no checkpoint in %s: training from scratch", self.save_dir)
            return
        fresh = f"start fresh with '--resume false' or remove {self.save_dir}"
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated file, not a checkpoint, or a payload weights_only refuses
            raise CheckpointError(f"{path}: cannot read the checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}); {fresh}") from None
        to_load = {**self.load_dict, **engine_training_state(engine)}
        absent = [k for k in to_load if k not in checkpoint]
        if [k for k in absent if k not in ("objective", "train_step")]:
            raise CheckpointError(f"{path}: the checkpoint holds {sorted(checkpoint)} but not {absent}; {fresh}")
        for k in absent:
            logger.info("%s holds no '%s' state: it keeps its initial state", path.name, k)
            to_load.pop(k)
        prior_max_epochs = engine.state.max_epochs
        try:
            Checkpoint.load_objects(to_load=to_load, checkpoint=checkpoint)
        except RuntimeError as err:  # size mismatch / missing or unexpected keys
            lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
            summary = "; ".join(lines[:4]) + (f"; ... ({len(lines) - 4} more lines)" if len(lines) > 4 else "")
            raise CheckpointError(f"{path}: the checkpoint does not fit the configured network ({summary}); {fresh}") from None
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise CheckpointError(f"{path}: the checkpoint is at epoch {engine.state.epoch}, beyond max_epochs={prior_max_epochs}; "
                                  f"raise max_epochs to train further, or {fresh}")
        engine.state.max_epochs = prior_max_epochs
        logger.info("resumed from %s at epoch %d, iteration %d", path.name, engine.state.epoch, engine.state.iteration)


def _atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class LossHistoryRecorder:
    """Record the training curve to a JSON file, rewritten atomically at each epoch end:

    ``{"iterations": [{"iteration", "epoch", "loss", "loss_<term>", ..., "lr"}, ...],
    "epochs": [{"epoch", "mean_loss", "iterations"}, ...], "validation": [{"epoch", <metrics>}, ...]}``.

    A resumed run continues the file: at start (after the checkpoint is restored) the records beyond
    the restored iteration and epoch are dropped, so a run killed mid-epoch leaves no duplicates."""

    def __init__(self, path: str | os.PathLike, validator: Engine | None = None) -> None:
        self.path = Path(path)
        self.validator = validator
        self.history: dict[str, list] = {"iterations": [], "epochs": [], "validation": []}
        self._epoch_losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        if self.path.is_file():
            try:
                self.history.update(json.loads(self.path.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError):
                logger.warning("%s is not valid JSON: starting a new loss history", self.path)
        engine.add_event_handler(Events.STARTED, self._truncate)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _truncate(self, engine: Engine) -> None:
        it, ep = engine.state.iteration, engine.state.epoch
        self.history["iterations"] = [r for r in self.history["iterations"] if r["iteration"] <= it]
        self.history["epochs"] = [r for r in self.history["epochs"] if r["epoch"] <= ep]
        self.history["validation"] = [r for r in self.history["validation"] if r["epoch"] <= ep]
        self._epoch_losses = [r["loss"] for r in self.history["iterations"] if r["epoch"] == ep + 1 and "loss" in r]

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output or {}
        rec = {"iteration": engine.state.iteration, "epoch": engine.state.epoch}
        rec.update({k: float(v) for k, v in out.items() if k.startswith("loss") or k == "lr"})
        self.history["iterations"].append(rec)
        if "loss" in rec:
            self._epoch_losses.append(rec["loss"])

    def _epoch(self, engine: Engine) -> None:
        n = len(self._epoch_losses)
        self.history["epochs"].append({"epoch": engine.state.epoch, "mean_loss": sum(self._epoch_losses) / max(n, 1), "iterations": n})
        self._epoch_losses = []
        if self.validator is not None and self.validator.state.metrics:
            last = self.history["validation"][-1]["epoch"] if self.history["validation"] else None
            if last != engine.state.epoch:
                rec = {"epoch": engine.state.epoch}
                rec.update({k: float(v) for k, v in self.validator.state.metrics.items() if isinstance(v, (int, float))})
                self.history["validation"].append(rec)
        self._write(engine)

    def _write(self, engine: Engine) -> None:
        _atomic_write_json(self.path, self.history)


class ExportPretrainedHandler:
    """At the end of training, write the model and tokenizer into ``bundle_root/models`` in the
    trained-bundle layout of :mod:`monai_medunic.pretrained` (attach on rank 0 only). ``method_settings``
    (e.g. the HU window of a volume pipeline) go into the ``pretrained`` section under the method's name."""

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        network: torch.nn.Module,
        tokenizer: Any,
        findings: Sequence[str],
        prompt_languages: Sequence[str] = ("en", "es"),
        max_length: int = 128,
        method_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.bundle_root = bundle_root
        self.network = network
        self.tokenizer = tokenizer
        self.findings = list(findings)
        self.prompt_languages = list(prompt_languages)
        self.max_length = max_length
        self.method_settings = dict(method_settings) if method_settings else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from monai_medunic.pretrained import export_pretrained_bundle
        from monai_medunic.text.tokenize import load_tokenizer

        root = export_pretrained_bundle(
            self.network, load_tokenizer(self.tokenizer), self.bundle_root, self.findings, self.prompt_languages, self.max_length,
            method_settings=self.method_settings,
        )
        logger.info("exported the trained model to %s/models", root)


class RankWeightsDigest:
    """At completion, write a SHA-256 digest of the network's parameters to ``<output_dir>/weights_rank<r>.sha256``.

    Under DDP every rank must end with identical parameters; comparing the files checks it. Buffers
    (BatchNorm running statistics) are left out: DDP broadcasts them from rank 0 at the start of each
    forward pass, after which every rank updates them from its own shard, so they differ by design."""

    runs_on_all_ranks = True

    def __init__(self, output_dir: str | os.PathLike, network: torch.nn.Module) -> None:
        self.output_dir = Path(output_dir)
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        import hashlib

        from monai_medunic.engines.distributed import get_rank

        net = self.network.module if hasattr(self.network, "module") else self.network
        h = hashlib.sha256()
        for name, tensor in sorted(net.named_parameters()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / f"weights_rank{get_rank()}.sha256").write_text(h.hexdigest(), encoding="utf-8")
