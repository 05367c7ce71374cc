"""Strong views for Uni-Mlip's image self-supervision ``L_I2I`` (Eq. 2), from MONAI transforms.

Bawazir & Wu, Sec. 4.2: "the implementation of the SimCLR augmentation includes color jittering,
random gray-scale conversion, random Gaussian blurring, and horizontal flipping" (SimCLR, Chen et al.
2020, App. A). Radiographs have one channel, so colour jitter becomes *intensity* jitter (brightness as
a random gain and offset, contrast as a scaling about the image mean) and grayscale conversion is the
identity; blur and flip are kept. The blur's sigma range is SimCLR's ``[0.1, 2.0]`` px at 224 px,
scaled to the image size.

:func:`strong_views_transform` copies one image into ``len(view_keys)`` views and gives each view its
own random draw (one MONAI transform per view and operation, so the two views of Eq. 2 differ). Use it
in a bundle's preprocessing before the weak augmentation of the clean view::

    {"_target_": "monai_medunic.transforms.augment.strong_views_transform", "source_key": "image",
     "view_keys": ["image_strong_a", "image_strong_b"], "image_size": "@image_size"}

Left-right flips change the meaning of "left" and "right": fine for image-only SimCLR, never used for
VQA fine-tuning, where "Which side is the pneumothorax on?" is answered from the image.
"""

from __future__ import annotations

from typing import Sequence

from monai.transforms import (
    Compose,
    CopyItemsd,
    RandFlipd,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    RandShiftIntensityd,
)

from monai_medunic.errors import ConfigurationError

__all__ = ["strong_views_transform"]


def strong_views_transform(
    source_key: str = "image",
    view_keys: Sequence[str] = ("image_strong_a", "image_strong_b"),
    image_size: int = 224,
    jitter_prob: float = 0.8,
    brightness: float = 0.4,
    brightness_shift: float = 0.1,
    contrast: float = 0.4,
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    flip_prob: float = 0.5,
) -> Compose:
    """Strong views of ``source_key`` under ``view_keys``, each with independent random intensity jitter,
    Gaussian blur and horizontal flip.

    Per view, in order: a gain ``1 + U(-brightness, brightness)`` and an offset ``U(-brightness_shift,
    brightness_shift)`` (each with ``jitter_prob``), a contrast scaling about the mean by ``1 +
    U(-contrast, contrast)`` (``jitter_prob``), a Gaussian blur with sigma ``U(blur_sigma) *
    image_size / 224`` (``blur_prob``) and a flip of the last axis (``flip_prob``).

    Args:
        source_key: the image to copy (channel-first ``(C, H, W)``, after resizing).
        view_keys: names of the views (two for Eq. 2).
        image_size: the image edge in pixels (scales the blur).

    Raises:
        ConfigurationError: no view key, a view key equal to the source, or a probability outside [0, 1].
    """
    keys = [str(k) for k in view_keys]
    if not keys or source_key in keys or len(set(keys)) != len(keys):
        raise ConfigurationError(f"view_keys must be distinct names other than the source '{source_key}', got {keys}")
    for name, p in (("jitter_prob", jitter_prob), ("blur_prob", blur_prob), ("flip_prob", flip_prob)):
        if not 0.0 <= p <= 1.0:
            raise ConfigurationError(f"{name} must be in [0, 1], got {p}")
    if image_size < 1 or not 0 < blur_sigma[0] <= blur_sigma[1]:
        raise ConfigurationError(f"image_size must be >= 1 and blur_sigma an increasing positive range, got {image_size}, {blur_sigma}")
    scale = image_size / 224.0
    sigma = (blur_sigma[0] * scale, blur_sigma[1] * scale)
    transforms: list = [CopyItemsd(source_key, times=len(keys), names=keys)]
    for key in keys:
        transforms += [
            RandScaleIntensityd(key, factors=brightness, prob=jitter_prob),
            RandShiftIntensityd(key, offsets=brightness_shift, prob=jitter_prob),
            RandScaleIntensityFixedMeand(key, factors=contrast, prob=jitter_prob),
            RandGaussianSmoothd(key, sigma_x=sigma, sigma_y=sigma, prob=blur_prob),
            RandFlipd(key, prob=flip_prob, spatial_axis=-1),
        ]
    return Compose(transforms)
