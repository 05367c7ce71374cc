"""Data of monai-medunic: dataset manifests, report corpora (:mod:`monai_medunic.data.corpora`) and the embedded demo dataset.

* :mod:`monai_medunic.data.manifest`: validated image-report records from JSONL / CSV manifests.
* :mod:`monai_medunic.data.demo`: the synthetic bilingual chest radiograph DICOM dataset
  (``medunic demo-data``).
"""

from monai_medunic.data.demo import (
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
