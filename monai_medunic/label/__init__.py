"""MONAI Label integration of monai-medunic: infer tasks over a trained bundle behind a DICOMweb PACS.

Imported only by the MONAI Label app (``apps/monailabel_medunic``) and its tests: it imports
``monailabel`` (its own virtual environment, pydicom 2 / numpy 1; ``make label-install``) and never
the MONAI Deploy SDK.

* :mod:`.scorer`: :func:`load_findings_scorer`, the one place that loads a trained bundle (the one-call inference API);
* :mod:`.context`: :class:`BundleContext`, the bundle of ``--conf bundle_path`` shared by the task configs;
* :mod:`.images`: the original DICOM instance of a series (:class:`SelectRadiographd`);
* :mod:`.tasks`: :class:`MedUniCInferTask`, :class:`ZeroShotFindingsTask`, :class:`GroundingTask` and :class:`SliceSelectionTask`;
* :mod:`.datastore`: :class:`DicomSeriesDatastore`, the DICOMweb datastore without NIfTI conversion;
* :mod:`.http`: client errors as 4xx answers.
"""

from .context import BUNDLE_CONF_KEY, SEGMENTATION_CONF_KEY, BundleContext
from .datastore import DicomSeriesDatastore, ImageNotInPacsError, InvalidImageIdError, make_dicomweb_datastore
from .http import check_infer_request, install_error_handlers, to_http_exception
from .images import SelectRadiographd, is_dicom_uid, select_radiograph
from .scorer import FindingsScorer, load_findings_scorer
from .tasks import DISCLAIMER, GroundingTask, InvalidParameterError, MedUniCInferTask, SegmentationTask, SliceSelectionTask, ZeroShotFindingsTask

__all__ = [
    "BUNDLE_CONF_KEY",
    "SEGMENTATION_CONF_KEY",
    "BundleContext",
    "DicomSeriesDatastore",
    "ImageNotInPacsError",
    "InvalidImageIdError",
    "make_dicomweb_datastore",
    "check_infer_request",
    "install_error_handlers",
    "to_http_exception",
    "SelectRadiographd",
    "is_dicom_uid",
    "select_radiograph",
    "FindingsScorer",
    "load_findings_scorer",
    "DISCLAIMER",
    "GroundingTask",
    "SliceSelectionTask",
    "SegmentationTask",
    "InvalidParameterError",
    "MedUniCInferTask",
    "ZeroShotFindingsTask",
]
