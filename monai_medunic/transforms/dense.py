"""The truth of dense tasks as tensors: per-finding masks for segmentation, boxes for MONAI detection.

The manifest gives a radiograph's truth as files and numbers (:mod:`monai_medunic.data.manifest`):
``masks`` ``{finding: mask file}`` (a 2D NIfTI or picture of the image's size, ``(rows, columns)``) and
``boxes`` ``[[x0, y0, x1, y1], ...]`` in pixels of the source image, ``x`` along columns, ``x1`` / ``y1``
one past the last pixel, with ``box_labels`` (the finding index of each box). The transforms here turn
them into what MONAI's segmentation and detection networks take:

* :class:`FindingMasks` / :class:`FindingMasksd`: a ``(F, H, W)`` float label, one channel per
  configured finding (findings may overlap, so one channel each, for a sigmoid output); a finding
  without a mask file is empty (absent). A mask whose size differs from the image raises a
  :class:`~monai_medunic.errors.DataError` naming the mask file and the field ``masks``.
* :class:`DetectionBoxes` / :class:`DetectionBoxesd`: ``(N, 4)`` float32 boxes in MONAI's
  ``StandardMode`` **in the image tensor's axis order**. MONAI detection reads box coordinate ``k`` along
  spatial axis ``k`` of the tensor (``0 <= xmin < xmax <= H`` in ``RetinaNetDetector``), and a radiograph
  tensor here is ``(1, rows, columns)``, so ``[x0, y0, x1, y1]`` becomes ``[y0, x0, y1, x1]``. A box
  outside the image raises a :class:`~monai_medunic.errors.DataError` (field ``boxes``).
* :class:`ResizeImageBoxd`: the image resized to the network size and its boxes with it (MONAI's
  ``Resize`` and ``ResizeBox``; MONAI has ``ZoomBoxd`` for a fixed zoom but no dictionary resize).
* :func:`read_seg_masks`: the per-finding masks of a DICOM SEG (highdicom) on one referenced image;
  a SEG that does not reference that image (the image it was made from is missing) raises a
  :class:`~monai_medunic.errors.DataError` naming the SEG and the image.
* :class:`DetectionCollate`: the ``collate_fn`` for variable-length box lists: images stacked, boxes
  and labels kept per image as ``targets`` ``[{"boxes": (N, 4), "labels": (N,)}]`` (what
  ``RetinaNetDetector`` takes; MONAI's detection tutorials use ``no_collation`` and a loop for this).
"""

from __future__ import annotations

import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.utils import list_data_collate
from monai.transforms import MapTransform, Resize, Transform

from monai_medunic.errors import ConfigurationError, DataError

__all__ = [
    "FindingMasks",
    "FindingMasksd",
    "DetectionBoxes",
    "DetectionBoxesd",
    "ResizeImageBoxd",
    "DetectionCollate",
    "read_mask",
    "read_seg_masks",
]

_PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A 2D binary mask ``(rows, columns)`` from a NIfTI file (as stored) or a picture, as ``uint8`` 0/1.

    Raises:
        DataError: the file cannot be read or is not 2D (field ``masks``).
    """
    from monai.data import NibabelReader, PILReader
    from monai.transforms import LoadImage

    p = os.fspath(path)
    reader = PILReader(reverse_indexing=False) if p.lower().endswith(_PICTURES) else NibabelReader()
    try:
        arr = np.asarray(LoadImage(image_only=True, reader=reader)(p))
    except Exception as err:
        raise DataError(f"cannot read the mask: {type(err).__name__}: {str(err)[:200]}", path=p, field="masks") from None
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DataError(f"a radiograph mask must be 2D, got shape {arr.shape}", path=p, field="masks")
    return (arr > 0).astype(np.uint8)


def read_seg_masks(seg_path: str | os.PathLike, sop_instance_uid: str, findings: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``{segment label: (rows, columns) uint8 mask}`` of a BINARY DICOM SEG on the source image
    ``sop_instance_uid``, for ``findings`` (default: every segment; a finding without a segment is not in the result).

    Raises:
        DataError: the file is not a readable DICOM SEG (field ``seg``), or it does not reference the
            image ``sop_instance_uid`` (field ``ReferencedSeriesSequence``): the SEG's image is missing.
    """
    import highdicom as hd

    p = os.fspath(seg_path)
    try:
        seg = hd.seg.segread(p)
    except Exception as err:
        raise DataError(f"not a readable DICOM Segmentation: {type(err).__name__}: {str(err)[:200]}", path=p, field="seg") from None
    referenced = {str(uid) for _, _, uid in seg.get_source_image_uids()}
    if str(sop_instance_uid) not in referenced:
        raise DataError(f"the SEG does not reference image {sop_instance_uid} (it references {sorted(referenced)}): "
                        "the image it was made from is missing", path=p, field="ReferencedSeriesSequence")
    labels = {int(item.SegmentNumber): str(item.SegmentLabel) for item in seg.SegmentSequence}
    wanted = [n for n, label in labels.items() if findings is None or label in set(findings)]
    if not wanted:
        return {}
    pixels = seg.get_pixels_by_source_instance([str(sop_instance_uid)], segment_numbers=wanted, combine_segments=False)
    return {labels[n]: np.asarray(pixels[0, ..., i], dtype=np.uint8) for i, n in enumerate(wanted)}


def _findings(findings: Sequence[str]) -> list[str]:
    names = [str(f) for f in findings]
    if not names:
        raise ConfigurationError("findings is empty: a dense task needs at least one finding (an empty label set)")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"findings must be distinct, got {names}")
    return names


class FindingMasks(Transform):
    """``{finding: mask file}`` -> a ``(F, *spatial_shape)`` float32 label, one channel per finding of ``findings``.

    A finding of ``findings`` that has no mask file is absent (an empty channel); mask files of
    findings outside ``findings`` are not read.

    Args:
        findings: the segmented findings, in channel order.

    Raises:
        ConfigurationError: ``findings`` is empty (an empty label set).
        DataError: a mask cannot be read, or its size differs from the image's (names the mask file).
    """

    def __init__(self, findings: Sequence[str]) -> None:
        self.findings = _findings(findings)

    def __call__(self, masks: Mapping[str, str], spatial_shape: Sequence[int]) -> torch.Tensor:  # type: ignore[override]
        shape = tuple(int(s) for s in spatial_shape)
        out = np.zeros((len(self.findings), *shape), dtype=np.float32)
        for i, finding in enumerate(self.findings):
            path = (masks or {}).get(finding)
            if path is None:
                continue
            mask = read_mask(path)
            if mask.shape != shape:
                raise DataError(f"mask of {finding!r} has size {mask.shape}, its image {shape}", path=path, field="masks")
            out[i] = mask
        return torch.from_numpy(out)


class FindingMasksd(MapTransform):
    """Dictionary form of :class:`FindingMasks`: ``d[keys]`` (the masks dict) -> ``d[label_key]``, sized like ``d[image_key]``.

    The label is a MetaTensor with the image's affine and ``findings`` in its meta.
    """

    def __init__(self, keys: KeysCollection = "masks", findings: Sequence[str] = (), label_key: str = "label",
                 image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.masks = FindingMasks(findings)
        self.label_key = label_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            label = self.masks(d[key], image.shape[1:])
            affine = image.affine if isinstance(image, MetaTensor) else None
            d[self.label_key] = MetaTensor(label, affine=affine, meta={"findings": list(self.masks.findings)})
        return d


class DetectionBoxes(Transform):
    """Manifest boxes ``[[x0, y0, x1, y1], ...]`` (``x`` along columns) and their labels -> MONAI detection
    boxes ``(N, 4)`` float32 ``[y0, x0, y1, x1]`` (the ``(1, rows, columns)`` tensor's axis order) and labels ``(N,)`` int64.

    Args:
        num_classes: labels must be in ``[0, num_classes)`` (``None``: not checked).

    Raises:
        DataError: a box is not four numbers with ``x0 < x1``, ``y0 < y1``, lies outside the image, or
            has a label out of range (field ``boxes``; the caller's path, when given).
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes

    def __call__(self, boxes: Sequence[Sequence[float]], labels: Sequence[int], spatial_shape: Sequence[int],  # type: ignore[override]
                 path: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = (int(s) for s in spatial_shape[-2:])
        try:
            arr = np.asarray([] if boxes is None else [list(b) for b in boxes], dtype=np.float32).reshape(-1, 4)
            lab = np.asarray([] if labels is None else list(labels), dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError("boxes must be [[x0, y0, x1, y1], ...] with one integer label each", path=path, field="boxes") from None
        if len(lab) != len(arr):
            raise DataError(f"{len(arr)} boxes but {len(lab)} box labels", path=path, field="boxes")
        for (x0, y0, x1, y1), c in zip(arr, lab):
            if not (x0 < x1 and y0 < y1):
                raise DataError(f"box {[float(x0), float(y0), float(x1), float(y1)]} is empty (needs x0 < x1, y0 < y1)", path=path, field="boxes")
            if x0 < 0 or y0 < 0 or x1 > cols or y1 > rows:
                raise DataError(f"box {[float(x0), float(y0), float(x1), float(y1)]} lies outside the image "
                                f"({cols} columns x {rows} rows)", path=path, field="boxes")
            if c < 0 or (self.num_classes is not None and c >= self.num_classes):
                raise DataError(f"box label {int(c)} is not a class index in [0, {self.num_classes})", path=path, field="boxes")
        return torch.from_numpy(arr[:, [1, 0, 3, 2]].copy()), torch.from_numpy(lab.copy())


class DetectionBoxesd(MapTransform):
    """Dictionary form of :class:`DetectionBoxes`: ``d[keys]`` (boxes) and ``d[label_key]`` -> tensors in place,
    checked against ``d[image_key]``'s size (errors name the image file)."""

    def __init__(self, keys: KeysCollection = "boxes", label_key: str = "box_labels", image_key: str = "image",
                 num_classes: int | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.boxes = DetectionBoxes(num_classes)
        self.label_key = label_key
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        path = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
        for key in self.key_iterator(d):
            d[key], d[self.label_key] = self.boxes(d[key], d.get(self.label_key, []), image.shape[1:], path=path and str(path))
        return d


class ResizeImageBoxd(MapTransform):
    """Resize ``d[image_key]`` to ``spatial_size`` (MONAI ``Resize``) and scale the boxes of ``keys`` with it
    (MONAI ``ResizeBox``, from the image's size before the resize). Boxes are in the tensor's axis order.

    Args:
        keys: the box keys.
        image_key: the image the boxes belong to.
        spatial_size: the output size.
        mode: the image's interpolation (``area``: anti-aliased, as the other bundles resize).
    """

    def __init__(self, keys: KeysCollection = "boxes", image_key: str = "image", spatial_size: Sequence[int] | int = 224,
                 mode: str = "area", allow_missing_keys: bool = False) -> None:
        from monai.apps.detection.transforms.array import ResizeBox

        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.resize = Resize(spatial_size, mode=mode)
        self.spatial_size = spatial_size
        self.resize_box = ResizeBox(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        src = tuple(int(s) for s in image.shape[1:])
        self.resize_box.spatial_size = self.spatial_size if not isinstance(self.spatial_size, int) else (self.spatial_size,) * len(src)
        for key in self.key_iterator(d):
            boxes = d[key]
            d[key] = self.resize_box(boxes, src_spatial_size=src) if len(boxes) else boxes
        d[self.image_key] = self.resize(image)
        return d


class DetectionCollate:
    """``collate_fn`` for detection batches with variable-length box lists.

    Every key but the boxes and their labels is collated by MONAI's ``list_data_collate`` (images of one
    size stack to ``(B, C, *spatial)``); the boxes and labels of each image go to ``targets``, a list of
    ``{"boxes": (N_i, 4) float32, "labels": (N_i,) int64}`` (``RetinaNetDetector``'s target keys).

    Args:
        box_key: the boxes' key in each item.
        label_key: the box labels' key in each item.
        targets_key: the batch key of the targets list.
    """

    def __init__(self, box_key: str = "boxes", label_key: str = "box_labels", targets_key: str = "targets") -> None:
        self.box_key, self.label_key, self.targets_key = box_key, label_key, targets_key

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not items:
            raise ConfigurationError("cannot collate an empty detection batch")
        targets = []
        rest = []
        for item in items:
            boxes = torch.as_tensor(item.get(self.box_key, torch.zeros(0, 4)), dtype=torch.float32).reshape(-1, 4)
            labels = torch.as_tensor(item.get(self.label_key, torch.zeros(0)), dtype=torch.int64).reshape(-1)
            targets.append({"boxes": boxes.as_subclass(torch.Tensor), "labels": labels.as_subclass(torch.Tensor)})
            rest.append({k: v for k, v in item.items() if k not in (self.box_key, self.label_key)})
        batch = dict(list_data_collate(rest))
        batch[self.targets_key] = targets
        return batch
