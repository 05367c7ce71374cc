"""Helpers of the dense-task bundle tests (``test_cxr_segmentation_bundle.py``, ``test_cxr_detection_bundle.py``):
demo data with truth, a pre-trained-like bundle, MONAI's bundle workflow in-process and on the command line
(through :mod:`bundle_helpers`), and the typed error inside MONAI's instantiation error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from monai_medunic.errors import EncoderWeightsError


def demo_manifest(root: Path, num_studies: int, seed: int, image_size: int = 64) -> Path:
    """A radiographs-only demo data set with truth, most findings frequent, 60 % train / 40 % test; its manifest."""
    from monai_medunic.data.demo import generate_demo_dataset

    prev = {"Cardiomegaly": 0.1, "Pleural Effusion": 0.6, "Pneumothorax": 0.5, "Nodule": 0.5, "Consolidation": 0.6, "Edema": 0.1}
    info = generate_demo_dataset(Path(root) / "demo", num_studies=num_studies, seed=seed, image_size=image_size, prevalence=prev,
                                 lateral_fraction=0.0, num_ct_studies=0, split_fractions=(0.6, 0.0, 0.4))
    return Path(info.manifest_path)


def moved_pretrained_bundle(tiny_bundle: Path, root: Path, seed: int) -> Path:
    """A copy of ``tiny_bundle`` whose image-encoder weights and BN statistics moved off their seed-0
    initialisation (as after pre-training), so that a pre-trained and a random encoder differ."""
    root = Path(root) / "cxr_medunic_pretrain"
    shutil.copytree(tiny_bundle, root)
    state = torch.load(root / "models" / "model.pt", weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    for k, v in state.items():
        if ".image_encoder." in k and v.is_floating_point():
            state[k] = v + 0.05 * torch.randn(v.shape, generator=gen).abs()
    torch.save(state, root / "models" / "model.pt")
    return root


def bundle_workflow(bundle: Path, config: str, **overrides):
    """MONAI's ``ConfigWorkflow`` of ``bundle/configs/<config>``, initialised (list-valued overrides may be JSON text)."""
    from monai.bundle import ConfigWorkflow

    overrides = {k: (json.loads(v) if isinstance(v, str) and v.startswith("[") else v) for k, v in overrides.items()}
    wf = ConfigWorkflow(config_file=str(bundle / "configs" / config), meta_file=str(bundle / "configs" / "metadata.json"),
                        logging_file=False, workflow_type="train" if config == "train.json" else "infer", bundle_root=str(bundle), **overrides)
    wf.initialize()
    return wf


def run_with_overrides(bundle: Path, config: str, overrides: dict, tmp: Path, ok: bool = True):
    """``python -m monai.bundle run`` of ``configs/<config>`` with ``overrides`` as a second config file
    (:func:`bundle_helpers.run_bundle_cli`)."""
    from bundle_helpers import run_bundle_cli

    tmp.mkdir(parents=True, exist_ok=True)
    file = tmp / f"overrides_{Path(config).stem}.json"
    file.write_text(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in overrides.items()}), encoding="utf-8")
    return run_bundle_cli(bundle, f"configs/{config}", str(file), ok=ok, timeout=900)


def encoder_weights_error(err: BaseException) -> EncoderWeightsError | None:
    """The :class:`EncoderWeightsError` MONAI's config instantiation wrapped (its ``__cause__`` chain), if any."""
    while err is not None and not isinstance(err, EncoderWeightsError):
        err = err.__cause__
    return err
