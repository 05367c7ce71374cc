"""Task config: CT slice selection (UniMedI Sec. 3.2), built when the app's bundle is a trained UniMedI bundle.

The DICOMweb datastore lists the series of its QIDO-RS filter (``--conf dicomweb_search_filter
'{"Modality": "CT"}'`` to list CT series); any series held by the PACS can be asked for by its
SeriesInstanceUID.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_medunic.label import BundleContext, SliceSelectionTask

TASK_NAME = "ct_slice_selection"


class SliceSelection(TaskConfig):
    """One infer task, ``ct_slice_selection``, for a UniMedI bundle."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle: BundleContext = kwargs["bundle"]

    def infer(self) -> Dict[str, InferTask]:
        scorer = self.bundle.findings_scorer()
        if scorer.inference.bundle.method != "unimedi":
            return {}
        return {TASK_NAME: SliceSelectionTask(scorer)}

    def trainer(self) -> Optional[TrainTask]:
        return None
