"""Task config: finding masks from a trained ``cxr_segmentation`` bundle, built when the app is started with
``--conf segmentation_bundle_path DIR`` (next to ``--conf bundle_path``, the pre-training bundle)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_medunic.label import BundleContext, SegmentationTask

TASK_NAME = "segmentation"


class Segmentation(TaskConfig):
    """One infer task, ``segmentation``, when a segmentation bundle is configured."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle: BundleContext = kwargs["bundle"]

    def infer(self) -> Dict[str, InferTask]:
        model = self.bundle.segmentation_model()
        if model is None:
            return {}
        return {TASK_NAME: SegmentationTask(self.bundle.findings_scorer(), model)}

    def trainer(self) -> Optional[TrainTask]:
        return None
