"""MONAI Deploy App SDK operators for the ``cxr_findings`` app (DICOM study in, DICOM SR out).

Importing this package imports the MONAI Deploy App SDK (``pip install monai-medunic[deploy]``);
the package's top level never imports it. The SDK-free parts (the records, the highdicom SR builder)
live in :mod:`monai_medunic.deploy.results` and :mod:`monai_medunic.deploy.sr`.
"""

from .findings import ZeroShotFindingsOperator, classify_prepared
from .loader import ScreenedDICOMDataLoaderOperator
from .preprocessing import CXRPreprocessOperator, prepare_study
from .results import PreparedImage, StudyFindings, write_json_result
from .sr import build_findings_sr, finding_concept, read_findings_sr, write_findings_sr
from .sr_writer import FindingsSRWriterOperator, write_study_outputs

__all__ = [
    "ScreenedDICOMDataLoaderOperator",
    "CXRPreprocessOperator",
    "ZeroShotFindingsOperator",
    "FindingsSRWriterOperator",
    "PreparedImage",
    "StudyFindings",
    "prepare_study",
    "classify_prepared",
    "build_findings_sr",
    "write_findings_sr",
    "read_findings_sr",
    "finding_concept",
    "write_json_result",
    "write_study_outputs",
]
