"""The one resize-and-type step between a loaded radiograph (or CT volume) and the network, shared by
training, evaluation and deployment so that all three see identical pixels (or voxels)."""

from __future__ import annotations

from typing import Sequence

from monai.transforms import Compose, EnsureType, EnsureTyped, Resize, Resized, Transpose, Transposed

from monai_medunic.errors import ConfigurationError
from monai_medunic.transforms.slice_selection import RequireSlices, RequireSlicesd
from monai_medunic.transforms.volume import hu_window, hu_windowd

__all__ = ["model_input_transform", "model_input_transformd", "volume_input_transform", "volume_input_transformd"]


def model_input_transform(image_size: int) -> Compose:
    """``(1, H, W)`` image in [0, 1] -> ``(1, S, S)`` float32, area-averaged (anti-aliased) resize."""
    return Compose([Resize((image_size, image_size), mode="area"), EnsureType(dtype="float32", track_meta=False)])


def model_input_transformd(keys: Sequence[str] | str, image_size: int) -> Compose:
    """Dictionary form of :func:`model_input_transform`."""
    return Compose(
        [Resized(keys, (image_size, image_size), mode="area"), EnsureTyped(keys, dtype="float32", track_meta=False)]
    )


def _volume_size(volume_size: Sequence[int]) -> tuple[int, int, int]:
    size = tuple(int(v) for v in volume_size)
    if len(size) != 3 or min(size) < 1:
        raise ConfigurationError(f"volume_size must be three positive sizes (D, H, W), got {volume_size}")
    return size  # type: ignore[return-value]


def volume_input_transform(volume_size: Sequence[int], window: str | Sequence[float] = "lung", min_slices: int = 2) -> Compose:
    """A loaded volume ``(1, X, Y, Z)`` in HU (``LoadDicomSeriesVolume`` / ``LoadNiftiVolume``) -> ``(1, D, H, W)``
    float32 in [0, 1], the layout of :class:`~monai_medunic.networks.UnifiedViT`'s 3D tokenizer.

    Steps: refuse a volume of fewer than ``min_slices`` slices (:class:`~monai_medunic.transforms.slice_selection.RequireSlices`,
    a typed error naming the file), the HU window to [0, 1] (:func:`~monai_medunic.transforms.volume.hu_window`,
    ``lung`` by default), the axes ``(C, X, Y, Z) -> (C, Z, Y, X)`` (slices first, then image rows and
    columns, as the DICOM slices are displayed) and an area-averaged (anti-aliased) resize to
    ``volume_size = (D, H, W)``. Slice ``z`` of the loaded volume lands at ``z * D / Z`` of the output.
    """
    return Compose([RequireSlices(min_slices), hu_window(window), Transpose((0, 3, 2, 1)),
                    Resize(_volume_size(volume_size), mode="area"), EnsureType(dtype="float32", track_meta=False)])


def volume_input_transformd(keys: Sequence[str] | str, volume_size: Sequence[int], window: str | Sequence[float] = "lung",
                            min_slices: int = 2) -> Compose:
    """Dictionary form of :func:`volume_input_transform`."""
    return Compose([
        RequireSlicesd(keys, min_slices),
        hu_windowd(keys, window),
        Transposed(keys, (0, 3, 2, 1)),
        Resized(keys, _volume_size(volume_size), mode="area"),
        EnsureTyped(keys, dtype="float32", track_meta=False),
    ])
