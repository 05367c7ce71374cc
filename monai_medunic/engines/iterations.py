"""Ignite iteration functions for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator``.

:class:`MedUniCTrainStep` is the Med-UniC pre-training step (Wan et al., NeurIPS 2023, Eq. 1): two
augmented image views (SSV), the report and its dropout view (CTR), the weighted CVL + SSV + CTR
objective, mixed precision, gradient accumulation and clipping. :class:`ZeroShotEvalStep` produces
the L2-normalised image embeddings and labels that the zero-shot metrics consume.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, NonFiniteLossError

__all__ = ["MedUniCTrainStep", "ZeroShotEvalStep", "ZeroShotInferStep", "resolve_precision", "loss_terms", "cpu_supports_bf16"]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``fp16`` (AMP with a grad scaler) on CUDA, ``bf16`` on a CPU that supports it, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {PRECISIONS}, got '{precision}'")
    device_type = torch.device(device).type
    if precision == "auto":
        if device_type == "cuda":
            return "fp16"
        return "bf16" if device_type == "cpu" and cpu_supports_bf16() else "fp32"
    if precision == "fp16" and device_type != "cuda":
        raise ConfigurationError("precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return precision


def _autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def _unwrap(network: nn.Module) -> nn.Module:
    return network.module if hasattr(network, "module") else network


def loss_terms(output: Mapping[str, Any]) -> dict[str, float]:
    """``output_transform`` for StatsHandler / TensorBoardStatsHandler: every ``loss*`` entry of the step output."""
    return {k: float(v) for k, v in output.items() if k.startswith("loss")}


class MedUniCTrainStep:
    """One Med-UniC training iteration, for ``SupervisedTrainer(iteration_update=...)``.

    The batch is a dict with ``image`` and ``image_aug`` (two augmented views, ``(B, 1, H, W)``),
    ``input_ids`` and ``attention_mask``. The trainer's ``loss_function`` must be a
    :class:`~monai_medunic.losses.MedUniCLoss`; each of its terms is returned for logging as
    ``loss_<term>`` next to the total ``loss``.

    Args:
        precision: ``auto`` | ``fp32`` | ``bf16`` | ``fp16``. ``auto`` is AMP fp16 with a gradient
            scaler on CUDA, bf16 autocast on a CPU with bf16 instructions, fp32 otherwise.
        channels_last: run the image encoder in channels-last memory format (faster convolutions
            on CPU, in particular with bf16).
        grad_accumulation: optimizer step every N iterations (the loss is divided by N).
        grad_clip_norm: clip the global gradient norm (``None``: no clipping).
    """

    def __init__(
        self,
        precision: str = "auto",
        channels_last: bool = True,
        grad_accumulation: int = 1,
        grad_clip_norm: float | None = 1.0,
    ) -> None:
        if grad_accumulation < 1:
            raise ConfigurationError(f"grad_accumulation must be >= 1, got {grad_accumulation}")
        self.precision = precision
        self.channels_last = channels_last
        self.grad_accumulation = int(grad_accumulation)
        self.grad_clip_norm = grad_clip_norm
        self._resolved: str | None = None
        self._scaler: torch.amp.GradScaler | None = None
        self._prepared = False

    def _prepare(self, engine) -> None:
        device = torch.device(engine.state.device)
        self._resolved = resolve_precision(self.precision, device)
        if self._resolved == "fp16":
            self._scaler = torch.amp.GradScaler("cuda")
        if self.channels_last:
            _unwrap(engine.network).image_encoder.to(memory_format=torch.channels_last)
        logger.info("Med-UniC training step: precision=%s channels_last=%s grad_accumulation=%d",
                    self._resolved, self.channels_last, self.grad_accumulation)
        self._prepared = True

    def _to(self, x: torch.Tensor, device: torch.device, image: bool = False) -> torch.Tensor:
        x = torch.as_tensor(x).to(device, non_blocking=True)
        if image:
            x = x.float()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, Any]:
        if not self._prepared:
            self._prepare(engine)
        device = torch.device(engine.state.device)
        network, optimizer, loss_fn = engine.network, engine.optimizer, engine.loss_function
        network.train()
        images = self._to(batch["image"], device, image=True)
        images_aug = self._to(batch["image_aug"], device, image=True) if "image_aug" in batch else None
        input_ids = self._to(batch["input_ids"], device)
        attention_mask = self._to(batch["attention_mask"], device)

        with _autocast(self._resolved, device.type):
            outputs = network(images, input_ids, attention_mask, images_aug)
        try:
            losses = loss_fn(outputs)  # the losses compute in fp32 with autocast disabled
        except NonFiniteLossError as err:
            raise NonFiniteLossError(err.term, err.value, engine.state.iteration) from None
        loss = losses["loss"] / self.grad_accumulation
        if self._scaler is not None:
            self._scaler.scale(loss).backward()
        else:
            loss.backward()

        it = engine.state.iteration
        epoch_length = engine.state.epoch_length or it
        if it % self.grad_accumulation == 0 or it % epoch_length == 0:
            if self._scaler is not None:
                self._scaler.unscale_(optimizer)
            if self.grad_clip_norm:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in network.parameters() if p.requires_grad], self.grad_clip_norm
                )
            if self._scaler is not None:
                self._scaler.step(optimizer)
                self._scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        out: dict[str, Any] = {"loss": losses["loss"].detach()}
        for term, value in losses.items():
            if term != "loss":
                out[f"loss_{term}"] = value.detach()
        out["lr"] = optimizer.param_groups[0]["lr"]
        out["batch_size"] = images.shape[0]
        return out


class ZeroShotEvalStep:
    """Evaluation iteration: L2-normalised image embeddings (``pred``) and finding labels (``label``)."""

    def __init__(self, precision: str = "auto") -> None:
        self.precision = precision

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        device = torch.device(engine.state.device)
        network = _unwrap(engine.network)
        network.eval()
        images = torch.as_tensor(batch["image"]).to(device).float()
        if "labels" not in batch:
            raise ConfigurationError("zero-shot validation needs 'labels' in every validation record")
        with torch.no_grad(), _autocast(resolve_precision(self.precision, device), device.type):
            emb = network.encode_image(images)
        return {"pred": emb.float(), "label": torch.as_tensor(batch["labels"]).float()}


class ZeroShotInferStep:
    """Inference iteration: zero-shot finding probabilities and decisions in one prompt language.

    Output: ``probs`` and ``positive`` ``(B, F)``, and ``id`` (the records' identifiers, if present).
    """

    def __init__(self, classifier, language: str = "en") -> None:
        self.classifier = classifier
        self.language = language

    def __call__(self, engine, batch: Mapping[str, Any]) -> dict[str, Any]:
        device = torch.device(engine.state.device)
        images = torch.as_tensor(batch["image"]).to(device).float()
        pred = self.classifier(images, self.language)
        return {"probs": pred.probs.cpu(), "positive": pred.positive.cpu(), "id": list(batch.get("id", [""] * len(images)))}
