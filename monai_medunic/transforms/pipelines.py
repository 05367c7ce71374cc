"""The one resize-and-type step between a loaded radiograph and the network, shared by training,
evaluation and deployment so that all three see identical pixels."""

from __future__ import annotations

from typing import Sequence

from monai.transforms import Compose, EnsureType, EnsureTyped, Resize, Resized

__all__ = ["model_input_transform", "model_input_transformd"]


def model_input_transform(image_size: int) -> Compose:
    """``(1, H, W)`` image in [0, 1] -> ``(1, S, S)`` float32, area-averaged (anti-aliased) resize."""
    return Compose([Resize((image_size, image_size), mode="area"), EnsureType(dtype="float32", track_meta=False)])


def model_input_transformd(keys: Sequence[str] | str, image_size: int) -> Compose:
    """Dictionary form of :func:`model_input_transform`."""
    return Compose(
        [Resized(keys, (image_size, image_size), mode="area"), EnsureTyped(keys, dtype="float32", track_meta=False)]
    )
