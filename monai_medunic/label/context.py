"""The trained bundle a MONAI Label app serves, as the task configs of the app share it.

``monailabel start_server --app apps/monailabel_medunic --studies URL --conf bundle_path DIR`` puts
``bundle_path`` (and any other ``--conf`` pair) in the app's ``conf``. :meth:`BundleContext.from_conf`
checks it; every task config of the app receives the same context and asks it for what its tasks
need (:meth:`BundleContext.findings_scorer` today), so the bundle is loaded once however many
tasks use it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from monai_medunic.errors import ConfigurationError

from .scorer import FindingsScorer, load_findings_scorer

__all__ = ["BundleContext", "BUNDLE_CONF_KEY", "SEGMENTATION_CONF_KEY"]

logger = logging.getLogger(__name__)

BUNDLE_CONF_KEY = "bundle_path"
#: ``--conf segmentation_bundle_path DIR``: a trained ``cxr_segmentation`` bundle served next to the pre-training bundle
SEGMENTATION_CONF_KEY = "segmentation_bundle_path"


@dataclass
class BundleContext:
    """``bundle_path``, the device, the app's ``--conf`` pairs and the objects loaded from the bundle (cached)."""

    bundle_path: Path
    device: str = "cpu"
    conf: dict[str, str] = field(default_factory=dict)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_conf(cls, conf: Mapping[str, str]) -> "BundleContext":
        """From the app's ``--conf``: ``bundle_path`` (required), ``device`` (``cpu`` / ``cuda``; default: CUDA when present).

        Raises:
            ConfigurationError: no ``bundle_path``, a path that is not a folder, or an unknown device.
        """
        conf = {str(k): str(v) for k, v in (conf or {}).items()}
        raw = conf.get(BUNDLE_CONF_KEY, "").strip()
        if not raw:
            raise ConfigurationError(
                f"no trained bundle: start the server with --conf {BUNDLE_CONF_KEY} DIR (a trained cxr_medunic_pretrain bundle)"
            )
        path = Path(os.path.expanduser(raw)).absolute()
        if not path.is_dir():
            raise ConfigurationError(f"--conf {BUNDLE_CONF_KEY} {path}: not a folder (expected a trained MONAI bundle)")
        device = conf.get("device", "cuda" if torch.cuda.is_available() else "cpu").strip().lower()
        if device.split(":")[0] not in ("cpu", "cuda") or (device.startswith("cuda") and not torch.cuda.is_available()):
            raise ConfigurationError(f"--conf device {device}: must be 'cpu', or 'cuda' on a machine with a GPU")
        return cls(bundle_path=path, device=device, conf=conf)

    def findings_scorer(self) -> FindingsScorer:
        """The zero-shot findings scorer of the bundle (loaded on first use, then shared)."""
        if "findings" not in self._cache:
            self._cache["findings"] = load_findings_scorer(self.bundle_path, self.device)
        return self._cache["findings"]

    def segmentation_model(self) -> Any:
        """The trained ``cxr_segmentation`` bundle of ``--conf segmentation_bundle_path`` (loaded on first use,
        :func:`~monai_medunic.pretrained.load_segmentation_bundle`), or ``None`` when the app has none.

        Raises:
            ConfigurationError: the path is not a folder. ModelLoadError: not a trained segmentation bundle.
        """
        raw = self.conf.get(SEGMENTATION_CONF_KEY, "").strip()
        if not raw:
            return None
        if "segmentation" not in self._cache:
            from monai_medunic.pretrained import load_segmentation_bundle

            path = Path(os.path.expanduser(raw)).absolute()
            if not path.is_dir():
                raise ConfigurationError(f"--conf {SEGMENTATION_CONF_KEY} {path}: not a folder (expected a trained cxr_segmentation bundle)")
            self._cache["segmentation"] = load_segmentation_bundle(path, self.device)
        return self._cache["segmentation"]
