"""Task config: zero-shot chest X-ray findings (Med-UniC Sec. 4.2) from the app's trained bundle.

``--conf language es`` makes Spanish the default prompt language (a request may still ask for any
of the bundle's prompt languages with ``{"language": "en"}``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

from monai_medunic.label import BundleContext, ZeroShotFindingsTask

TASK_NAME = "zero_shot_findings"


class ZeroShotFindings(TaskConfig):
    """One infer task, ``zero_shot_findings``, when the bundle defines findings."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle: BundleContext = kwargs["bundle"]

    def infer(self) -> Dict[str, InferTask]:
        scorer = self.bundle.findings_scorer()
        if not scorer.findings:
            return {}
        return {TASK_NAME: ZeroShotFindingsTask(scorer, language=self.conf.get("language", "en"))}

    def trainer(self) -> Optional[TrainTask]:
        return None
