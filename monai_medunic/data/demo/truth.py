"""The demo dataset's ground truth: voxel / pixel masks as NIfTI, lesion boxes, and DICOM SEG.

The phantom generators know where they draw each lesion; this module writes that knowledge in the
forms training and evaluation consume:

* :func:`write_label_nifti`: a CT label map (``(slices, rows, columns)`` as drawn) as a NIfTI file
  aligned voxel for voxel with the CT series as :func:`monai_medunic.transforms.volume.read_dicom_series`
  loads it: array axes ``(X = columns, Y = rows, Z = slices)`` and the same RAS affine, so
  ``LoadNiftiVolume(mask)`` and ``LoadDicomSeriesVolume(series)`` give tensors of one shape and affine.
* :func:`write_mask_nifti_2d`: a radiograph's binary mask of one finding as a 2D NIfTI file whose
  array is ``(rows, columns)`` like the image, with the affine of
  :class:`~monai_medunic.transforms.LoadDicomImage` (pixel spacing on the diagonal), so MONAI's
  ``LoadImage`` + ``EnsureChannelFirst`` give a ``(1, H, W)`` mask that overlays the loaded image.
* :func:`box_of`: the bounding box of a lesion mask, ``[x0, y0, x1, y1]`` in pixels of the source
  image (``x`` along columns, ``y`` along rows), pixel edges: ``x0``/``y0`` the first column/row
  inside, ``x1``/``y1`` one past the last (``x1 - x0`` is the width), as MONAI detection's ``xyxy``.
* :func:`radiograph_seg`: the masks of a radiograph as a DICOM Segmentation (highdicom), BINARY, one
  segment per finding present, referencing the source image, its segments coded with SNOMED CT
  (:data:`SEG_PROPERTY_TYPES`) in the category *Morphologically abnormal structure*.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

__all__ = ["SEG_PROPERTY_TYPES", "ct_affine", "write_label_nifti", "write_mask_nifti_2d", "box_of", "radiograph_seg", "finding_slug"]

# SNOMED CT codes of the segmented findings (pydicom's code dictionary where it has them)
SEG_PROPERTY_TYPES: dict[str, Code] = {
    "Nodule": Code("27925004", "SCT", "Nodule"),
    "Pneumothorax": Code("36118008", "SCT", "Pneumothorax"),
    "Pleural Effusion": Code("60046008", "SCT", "Pleural effusion"),
    "Consolidation": Code("95436008", "SCT", "Lung consolidation"),
}
_UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's root, as the demo's other UIDs
_CATEGORY = Code("49755003", "SCT", "Morphologically Abnormal Structure")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ct_affine(spacing: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """RAS affine of an axial CT volume indexed ``(X = column, Y = row, Z = slice)``.

    Args:
        spacing: ``(slice, row, column)`` spacing in mm.
        origin: LPS position (mm) of the centre of the first voxel.

    The same matrix :func:`~monai_medunic.transforms.volume.read_dicom_series` builds from the slices'
    Image Orientation ``1\\0\\0\\0\\1\\0`` and Image Positions (DICOM LPS turned into RAS).
    """
    dz, row_sp, col_sp = (float(v) for v in spacing)
    lps = np.eye(4)
    lps[0, 0], lps[1, 1], lps[2, 2] = col_sp, row_sp, dz
    lps[:3, 3] = [float(v) for v in origin]
    return _LPS_TO_RAS @ lps


def write_label_nifti(path: str | os.PathLike, labels_zyx: np.ndarray, affine: np.ndarray) -> str:
    """Write a ``(slices, rows, columns)`` uint8 label map as NIfTI-1 (``.nii.gz``) in ``(X, Y, Z)`` order.

    The header carries the label intent, millimetre units and ``affine`` as both qform and sform
    (scanner coordinates). Gzip output is byte-reproducible (nibabel writes no time stamp).
    """
    import nibabel as nib

    p = os.fspath(path)
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    data = np.ascontiguousarray(np.transpose(np.asarray(labels_zyx, dtype=np.uint8), (2, 1, 0)))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, p)
    return p


def finding_slug(finding: str) -> str:
    """``"Pleural Effusion"`` -> ``"pleural_effusion"`` (file names)."""
    return "_".join(finding.lower().split())


def box_of(mask: np.ndarray) -> list[int]:
    """``[x0, y0, x1, y1]`` of a non-empty 2D mask: first column / row inside, one past the last."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("box_of: empty mask")
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def write_mask_nifti_2d(path: str | os.PathLike, mask: np.ndarray, pixel_spacing: Sequence[float]) -> str:
    """Write a ``(rows, columns)`` binary mask as a 2D NIfTI-1 file (uint8 0/1, label intent).

    The affine holds the pixel spacing ``(row, column)`` on its diagonal, as
    :class:`~monai_medunic.transforms.LoadDicomImage` builds it for the image.
    """
    import nibabel as nib

    p = os.fspath(path)
    os.makedirs(os.path.dirname(p) or ".", exist_ok=True)
    affine = np.diag([float(pixel_spacing[0]), float(pixel_spacing[1]), 1.0, 1.0])
    img = nib.Nifti1Image(np.ascontiguousarray(mask, dtype=np.uint8), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_intent("label")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, p)
    return p


def radiograph_seg(
    source: Dataset,
    masks: Mapping[str, np.ndarray],
    *,
    series_uid: str,
    sop_uid: str,
    series_number: int = 100,
) -> Dataset:
    """A DICOM Segmentation of ``source`` with one BINARY segment per finding of ``masks`` (in that order).

    The segments are coded with :data:`SEG_PROPERTY_TYPES`; the algorithm type is AUTOMATIC: the masks
    come from the phantom generator's geometry (each lesion's density thresholded at half its maximum),
    so the algorithm family is *Histogram Analysis* (DCM 123105, the thresholding family of CID 7162)
    and the algorithm is named ``monai-medunic demo phantom``. Source images without a frame of
    reference (projection radiographs) are referenced by SOP instance, as highdicom does for them.

    Raises:
        ValueError: ``masks`` is empty, a finding has no code, or a mask's shape differs from the image.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from monai_medunic import __version__

    if not masks:
        raise ValueError("radiograph_seg needs at least one mask")
    shape = (int(source.Rows), int(source.Columns))
    algorithm = hd.AlgorithmIdentificationSequence(
        name="monai-medunic demo phantom", version=__version__, family=codes.cid7162.HistogramAnalysis
    )
    descriptions = []
    planes = []
    for number, (finding, mask) in enumerate(masks.items(), start=1):
        if finding not in SEG_PROPERTY_TYPES:
            raise ValueError(f"no SNOMED CT code for finding {finding!r}; known: {sorted(SEG_PROPERTY_TYPES)}")
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask of {finding!r} has shape {tuple(mask.shape)}, the image {shape}")
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=finding,
                segmented_property_category=_CATEGORY,
                segmented_property_type=SEG_PROPERTY_TYPES[finding],
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=hd.UID(generate_uid(prefix=_UID_ROOT, entropy_srcs=[sop_uid, finding])),
                tracking_id=f"{finding} (demo truth)",
            )
        )
        planes.append(np.asarray(mask, dtype=bool))
    pixels = np.stack(planes, axis=-1)[np.newaxis].astype(np.uint8)  # (1 frame, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="monai-medunic synthetic phantom",
        manufacturer_model_name="demo phantom truth",
        software_versions=__version__,
        device_serial_number="0",
        content_description="SYNTHETIC TRUTH (DEMO)",
        content_label="DEMO_TRUTH",
        series_description="SYNTHETIC TRUTH (DEMO)",
        omit_empty_frames=False,
    )
    # highdicom draws the Dimension Organization UID at random: derive it from the SEG's UID instead,
    # so a seed reproduces the file byte for byte
    dim_uid = generate_uid(prefix=_UID_ROOT, entropy_srcs=[sop_uid, "dimension-organization"])
    for item in list(seg.get("DimensionOrganizationSequence", [])) + list(seg.get("DimensionIndexSequence", [])):
        item.DimensionOrganizationUID = dim_uid
    # General Image, Type 2C without a plane orientation: the source's (empty if it states none)
    seg.PatientOrientation = source.get("PatientOrientation", "") or ""
    # highdicom 0.28 writes, for a projection source with Pixel Spacing (CR), a Pixel Measures item
    # without Slice Thickness, then its own segread refuses that item. Without a frame of reference the
    # item is optional (and highdicom omits it for DX sources), so it is dropped: every demo SEG reads
    # back with highdicom and passes dciodvfy. The spacing stays in the referenced image.
    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.get("PixelMeasuresSequence")
    if "FrameOfReferenceUID" not in source and measures and "SliceThickness" not in measures[0]:
        del shared.PixelMeasuresSequence
    return seg
