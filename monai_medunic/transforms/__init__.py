"""MONAI transforms of monai-medunic: DICOM-aware radiograph loading, view filtering, SR report text and 3D volumes.

Each transform has an array form and a dictionary form (``X`` / ``Xd``), records what it did in the
MetaTensor meta, and raises a typed error from :mod:`monai_medunic.errors` that names the file.
"""

from monai_medunic.transforms.dicom import (
    GrayscaleDicomReader,
    RGB_POLICIES,
    VOI_FALLBACKS,
    LoadDicomImage,
    LoadDicomImaged,
    dicom_to_array,
    dicom_to_metatensor,
    read_dicom,
    window_to_unit,
)
from monai_medunic.transforms.radiograph import LoadRadiograph, LoadRadiographd, image_format, select_radiograph
from monai_medunic.transforms.slice_selection import SelectSlices, SelectSlicesd, choose_slices, cls_patch_attention, extract_slices, slice_relevance, top_k_slices
from monai_medunic.transforms.sr import ReadReportFromSR, ReadReportFromSRd, SRReportText, read_report_from_sr
from monai_medunic.transforms.views import FRONTAL, LATERAL, UNKNOWN, FrontalViewFilter, classify_view, view_evidence
from monai_medunic.transforms.volume import (
    HU_WINDOW_PRESETS,
    DicomSeriesVolumeReader,
    LoadDicomSeriesVolume,
    LoadDicomSeriesVolumed,
    LoadNiftiVolume,
    LoadNiftiVolumed,
    hu_window,
    hu_windowd,
    read_dicom_series,
)

__all__ = [
    "RGB_POLICIES",
    "VOI_FALLBACKS",
    "GrayscaleDicomReader",
    "LoadDicomImage",
    "LoadDicomImaged",
    "dicom_to_array",
    "dicom_to_metatensor",
    "read_dicom",
    "window_to_unit",
    "ReadReportFromSR",
    "ReadReportFromSRd",
    "SRReportText",
    "read_report_from_sr",
    "FRONTAL",
    "LATERAL",
    "UNKNOWN",
    "FrontalViewFilter",
    "classify_view",
    "view_evidence",
    "HU_WINDOW_PRESETS",
    "DicomSeriesVolumeReader",
    "hu_window",
    "hu_windowd",
    "LoadDicomSeriesVolume",
    "LoadDicomSeriesVolumed",
    "LoadNiftiVolume",
    "LoadNiftiVolumed",
    "read_dicom_series",
    "LoadRadiograph",
    "LoadRadiographd",
    "image_format",
    "select_radiograph",
    "SelectSlices", "SelectSlicesd", "choose_slices", "cls_patch_attention", "extract_slices", "slice_relevance", "top_k_slices",
]
