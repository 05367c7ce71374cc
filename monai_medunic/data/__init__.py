"""Data of monai-medunic: dataset manifests, report corpora (:mod:`monai_medunic.data.corpora`) and the embedded demo dataset.

* :mod:`monai_medunic.data.manifest`: validated image-report records from JSONL / CSV manifests.
* :mod:`monai_medunic.data.datalist`: manifest -> MONAI data list for the bundles (2D radiograph
  records by default; 3D volume records and the truth fields when asked).
* :mod:`monai_medunic.data.demo`: the synthetic bilingual chest radiograph and chest CT DICOM dataset
  with its ground truth (``medunic demo-data``).
"""

from monai_medunic.data.demo import (
    CT_FINDINGS,
    DEFAULT_PREVALENCE,
    DEMO_FINDINGS,
    SPANISH_NAMES,
    DemoDatasetInfo,
    generate_demo_dataset,
)
from monai_medunic.data.manifest import (
    SPLITS,
    ManifestLoadResult,
    ManifestRecord,
    ManifestSummary,
    load_manifest,
    records_to_data_dicts,
    write_manifest,
)

__all__ = [
    "CT_FINDINGS",
    "DEFAULT_PREVALENCE",
    "DEMO_FINDINGS",
    "SPANISH_NAMES",
    "DemoDatasetInfo",
    "generate_demo_dataset",
    "SPLITS",
    "ManifestLoadResult",
    "ManifestRecord",
    "ManifestSummary",
    "load_manifest",
    "records_to_data_dicts",
    "write_manifest",
]
