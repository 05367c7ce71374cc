"""monailabel_medunic: a MONAI Label app serving a trained Med-UniC bundle behind a DICOMweb PACS.

Start (in the MONAI Label environment, ``make label-install``)::

    .venv-label/bin/monailabel start_server --app apps/monailabel_medunic \\
        --studies http://127.0.0.1:8042/dicom-web --conf bundle_path DIR [--conf language es]

``/info`` lists the infer tasks built from the bundle; ``POST /infer/<task>?image=<SeriesInstanceUID>``
runs one on a series held by the PACS. Research use only: the output is not a diagnosis.

The infer tasks come from the task configs of ``lib/configs`` (one :class:`TaskConfig` each; all
of them get the same bundle, loaded once). The DICOMweb datastore hands the tasks the original DICOM
instances (no NIfTI conversion: it would drop the VOI LUT and MONOCHROME1). Client errors are
answered 4xx with a message (``monai_medunic.label.http``).
"""

from __future__ import annotations

import logging
from typing import Dict

import lib.configs
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.utils.others.class_utils import get_class_names

from monai_medunic import __version__
from monai_medunic.label import (
    BundleContext,
    check_infer_request,
    install_error_handlers,
    make_dicomweb_datastore,
    to_http_exception,
)

logger = logging.getLogger(__name__)


class MedUniCApp(MONAILabelApp):
    """Infer tasks over the trained bundle of ``--conf bundle_path`` (see the module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.bundle = BundleContext.from_conf(conf)
        self.task_configs: Dict[str, TaskConfig] = {}
        for class_path in sorted(get_class_names(lib.configs, "TaskConfig")):
            module_name, class_name = class_path.rsplit(".", 1)
            config = getattr(__import__(module_name, fromlist=[class_name]), class_name)()
            name = module_name.split(".")[-1]
            config.init(name, self.bundle.bundle_path, conf, None, bundle=self.bundle)
            self.task_configs[name] = config
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai-medunic (Med-UniC)",
            description="Zero-shot chest X-ray findings, phrase grounding, CT slice selection (UniMedI) and finding masks (cxr_segmentation) from trained bundles. Research use only.",
            version=__version__,
        )
        install_error_handlers()
        logger.info("infer tasks: %s (bundle %s)", sorted(self._infers), self.bundle.bundle_path)

    def init_remote_datastore(self) -> Datastore:
        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_remote_datastore()
        return make_dicomweb_datastore(self.studies, self.conf)

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, config in self.task_configs.items():
            tasks = config.infer() or {}
            tasks = tasks if isinstance(tasks, dict) else {name: tasks}
            for task_name, task in tasks.items():
                logger.info("+++ infer task %s (%s)", task_name, name)
                infers[task_name] = task
        return infers

    def init_strategies(self) -> Dict[str, Strategy]:
        return {}

    def infer(self, request, datastore=None):
        check_infer_request(request, self._infers)
        try:
            return super().infer(request, datastore)
        except Exception as err:  # every failure becomes an HTTP answer with a message
            raise to_http_exception(err) from err
