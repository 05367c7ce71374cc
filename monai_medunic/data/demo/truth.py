"""The demo dataset's ground truth: voxel / pixel masks as NIfTI, lesion boxes, and DICOM SEG.

The phantom generators know where they draw each lesion; this module writes that knowledge in the
forms training and evaluation consume:

* :func:`write_label_nifti`: a CT label map (``(slices, rows, columns)`` as drawn) as a NIfTI file
  aligned voxel for voxel with the CT series as :func:`monai_medunic.transforms.volume.read_dicom_series`
  loads it: array axes ``(X = columns, Y = rows, Z = slices)`` and the same RAS affine, so
  ``LoadNiftiVolume(mask)`` and ``LoadDicomSeriesVolume(series)`` give tensors of one shape and affine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["ct_affine", "write_label_nifti"]

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
