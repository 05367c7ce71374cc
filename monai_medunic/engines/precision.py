"""Numeric precision of training and evaluation steps: one choice for every bundle.

``auto`` is fp16 autocast with a gradient scaler on CUDA, bf16 autocast on a CPU with native bf16
instructions (AVX512-BF16 or AMX), and fp32 everywhere else (an AVX2-only CPU emulates bf16 slowly).
"""

from __future__ import annotations

import contextlib

import torch

from monai_medunic.errors import ConfigurationError

__all__ = ["PRECISIONS", "cpu_supports_bf16", "resolve_precision", "autocast"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``fp16`` on CUDA, ``bf16`` on a CPU that supports it, else ``fp32``; other values are checked.

    Raises:
        ConfigurationError: an unknown precision, or ``fp16`` on a CPU.
    """
    precision = str(precision).lower()
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


def autocast(precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (a no-op for ``fp32``)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)
