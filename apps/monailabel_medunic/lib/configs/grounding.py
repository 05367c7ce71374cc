"""Task config: phrase grounding, the similarity map of a free-text prompt returned as a label image.

Built for every bundle whose method network exposes its image encoder's spatial features and its
image projector (``image_encoder`` and ``image_projection``: Med-UniC and UniMedI bundles).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_medunic.label import BundleContext, GroundingTask

TASK_NAME = "grounding"


class Grounding(TaskConfig):
    """One infer task, ``grounding``, when the bundle's network can give a similarity map."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle: BundleContext = kwargs["bundle"]

    def infer(self) -> Dict[str, InferTask]:
        scorer = self.bundle.findings_scorer()
        model = scorer.inference.model
        if not (hasattr(model, "image_encoder") and hasattr(model, "image_projection")):
            return {}
        return {TASK_NAME: GroundingTask(scorer)}

    def trainer(self) -> Optional[TrainTask]:
        return None
