"""Ignite handlers for pre-training bundles: warm-up + cosine schedule, atomic checkpoints with
resume, loss-history recording and export of the trained model into the bundle."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence, Sized

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader
from monai.optimizers import WarmupCosineSchedule

from monai_medunic.errors import ConfigurationError

__all__ = [
    "warmup_cosine_schedule",
    "AtomicCheckpointSaver",
    "ResumeFromLatestCheckpoint",
    "latest_checkpoint",
    "LossHistoryRecorder",
    "ExportPretrainedHandler",
    "ZeroShotPredictionWriter",
    "RankWeightsDigest",
]

logger = logging.getLogger(__name__)


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, dataloader: Sized, max_epochs: int, warmup_fraction: float = 0.1, end_lr: float = 0.0
) -> WarmupCosineSchedule:
    """MONAI's :class:`~monai.optimizers.WarmupCosineSchedule` over ``max_epochs * len(dataloader)`` iterations,
    with linear warm-up over ``warmup_fraction`` of them (Med-UniC App. C: linear warm-up, cosine annealing).
    Step it every iteration (``LrScheduleHandler(epoch_level=False)``)."""
    if not 0 <= warmup_fraction < 1:
        raise ConfigurationError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
    total = max(1, int(max_epochs) * len(dataloader))
    return WarmupCosineSchedule(optimizer, warmup_steps=int(warmup_fraction * total), t_total=total, end_lr=end_lr)


_STEP_RE = re.compile(r"_(\d+)\.pt$")


def latest_checkpoint(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> Path | None:
    """The checkpoint with the highest iteration number in ``save_dir`` (``None`` if there is none)."""
    d = Path(save_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.glob(f"{prefix}_*.pt") if (m := _STEP_RE.search(p.name))]
    return max(found)[1] if found else None


class AtomicCheckpointSaver:
    """Save the training state (model, optimizer, scheduler, trainer, ...) every N epochs and/or N
    iterations, and at completion, with ignite's :class:`~ignite.handlers.Checkpoint`.

    Files are written atomically (ignite's ``DiskSaver(atomic=True)``: a temporary file, then a
    rename), so a run killed while saving never leaves a truncated checkpoint; MONAI's
    ``CheckpointSaver`` saves with ``atomic=False``. Files are named ``checkpoint_<iteration>.pt``.

    Args:
        save_dir: output folder.
        save_dict: objects with ``state_dict`` to save.
        every_n_epochs: epoch interval (0 disables).
        every_n_iterations: iteration interval (0 disables); lets a killed run resume mid-epoch.
        n_saved: keep this many most recent checkpoints.

    The engine it is attached to is saved too, as ``trainer`` (its epoch and iteration), without the
    config having to reference the trainer from its own handler list.
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
        checkpoint = Checkpoint(
            {**self.save_dict, "trainer": engine},
            DiskSaver(self.save_dir, require_empty=False, atomic=True),
            filename_prefix="",
            n_saved=self.n_saved,
            global_step_transform=lambda eng, _: eng.state.iteration,
        )
        self._checkpoint = checkpoint
        if self.every_n_epochs:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), checkpoint)
        if self.every_n_iterations:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every_n_iterations), checkpoint)
        engine.add_event_handler(Events.COMPLETED, self._final, checkpoint)

    def _final(self, engine: Engine, checkpoint: Checkpoint) -> None:
        last = checkpoint.last_checkpoint
        if last is None or not str(last).endswith(f"_{engine.state.iteration}.pt"):
            checkpoint(engine)


class ResumeFromLatestCheckpoint:
    """At start, restore the newest ``checkpoint_<iteration>.pt`` of ``save_dir`` (if any) with MONAI's
    :class:`~monai.handlers.CheckpointLoader` (``torch.load(weights_only=True)``); training then continues
    from the saved iteration (the engine it is attached to is restored as ``trainer``). Logs where it
    resumed from, or that it starts from scratch."""

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
        CheckpointLoader(load_path=str(path), load_dict={**self.load_dict, "trainer": engine}, map_location="cpu")(engine)
        logger.info("resumed from %s at epoch %d, iteration %d", path.name, engine.state.epoch, engine.state.iteration)


def _atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


class LossHistoryRecorder:
    """Record every iteration's ``loss*`` and ``lr`` values and every validation's metrics to a JSON
    file (``{"iterations": [...], "validation": [...]}``), rewritten atomically at each epoch end.
    A resumed run appends to the existing file."""

    def __init__(self, path: str | os.PathLike, validator: Engine | None = None) -> None:
        self.path = Path(path)
        self.validator = validator
        self.history: dict[str, list] = {"iterations": [], "validation": []}

    def attach(self, engine: Engine) -> None:
        if self.path.is_file():
            try:
                self.history = json.loads(self.path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                logger.warning("%s is not valid JSON: starting a new loss history", self.path)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output or {}
        rec = {"iteration": engine.state.iteration, "epoch": engine.state.epoch}
        rec.update({k: float(v) for k, v in out.items() if k.startswith("loss") or k == "lr"})
        self.history["iterations"].append(rec)

    def _epoch(self, engine: Engine) -> None:
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
    trained-bundle layout of :mod:`monai_medunic.pretrained` (attach on rank 0 only)."""

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        network: torch.nn.Module,
        tokenizer: Any,
        findings: Sequence[str],
        prompt_languages: Sequence[str] = ("en", "es"),
        max_length: int = 128,
    ) -> None:
        self.bundle_root = bundle_root
        self.network = network
        self.tokenizer = tokenizer
        self.findings = list(findings)
        self.prompt_languages = list(prompt_languages)
        self.max_length = max_length

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from monai_medunic.pretrained import export_pretrained_bundle
        from monai_medunic.text.tokenize import load_tokenizer

        root = export_pretrained_bundle(
            self.network, load_tokenizer(self.tokenizer), self.bundle_root, self.findings, self.prompt_languages, self.max_length
        )
        logger.info("exported the trained model to %s/models", root)


class ZeroShotPredictionWriter:
    """Collect :class:`~monai_medunic.engines.iterations.ZeroShotInferStep` outputs and write
    ``predictions.json`` and ``predictions.csv`` (one row per image: id, then each finding's
    probability and decision) to ``output_dir`` when the run completes."""

    def __init__(self, output_dir: str | os.PathLike, findings: Sequence[str], language: str = "en") -> None:
        self.output_dir = Path(output_dir)
        self.findings = list(findings)
        self.language = language
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        for i, ident in enumerate(out["id"]):
            row = {"id": str(ident), "language": self.language}
            for j, f in enumerate(self.findings):
                row[f] = {"probability": float(out["probs"][i, j]), "positive": bool(out["positive"][i, j])}
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        import csv

        _atomic_write_json(self.output_dir / "predictions.json", self.rows)
        fd, tmp = tempfile.mkstemp(prefix=".predictions.csv.", dir=self.output_dir)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "language"] + [f"{x} probability" for x in self.findings] + [f"{x} positive" for x in self.findings])
            for r in self.rows:
                w.writerow([r["id"], r["language"]] + [f"{r[x]['probability']:.4f}" for x in self.findings]
                           + [int(r[x]["positive"]) for x in self.findings])
        os.replace(tmp, self.output_dir / "predictions.csv")
        logger.info("wrote %d zero-shot predictions to %s", len(self.rows), self.output_dir)


class RankWeightsDigest:
    """At completion, write a SHA-256 digest of the network's parameters to ``<output_dir>/weights_rank<r>.sha256``.

    Under DDP every rank must end with identical parameters; comparing the files checks it. Buffers
    (BatchNorm running statistics) are left out: DDP broadcasts them from rank 0 at the start of each
    forward pass, after which every rank updates them from its own shard, so they differ by design."""

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
