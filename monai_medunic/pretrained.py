"""Exporting and loading a trained Med-UniC MONAI Bundle for inference (evaluation, Deploy apps).

A trained ``cxr_medunic_pretrain`` bundle directory holds:

* ``configs/inference.json`` whose ``network_def`` is :func:`build_pretrained_network` (it rebuilds
  the trained architecture from the files below, whatever sizes training used), and
  ``configs/metadata.json``;
* ``models/model.pt``: the network's ``state_dict`` (loaded with ``torch.load(weights_only=True)``);
* ``models/text/``: the text encoder's HF directory (config, weights and tokenizer);
* ``models/inference_settings.json``: the :class:`~monai_medunic.networks.MedUniC` construction
  arguments, the image size, the finding list, the prompt languages and the tokenizer max length.

Everything that reads a trained bundle goes through :func:`load_pretrained_bundle`, so evaluation,
the Deploy app and the tests agree on one layout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from monai_medunic.errors import ModelLoadError

__all__ = [
    "PretrainedBundle",
    "load_pretrained_bundle",
    "export_pretrained_bundle",
    "build_pretrained_network",
    "read_inference_settings",
    "inference_preprocessing",
    "zero_shot_classifier",
    "save_model_weights",
    "MODEL_FILE",
    "TEXT_DIR",
    "SETTINGS_FILE",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "models/model.pt"
TEXT_DIR = "models/text"
SETTINGS_FILE = "models/inference_settings.json"


@dataclass
class PretrainedBundle:
    """A loaded, trained bundle: the network in eval mode, its tokenizer and its inference settings."""

    bundle_dir: Path
    model: torch.nn.Module
    tokenizer: Any
    image_size: int
    findings: list[str]
    prompt_languages: list[str]
    max_length: int
    metadata: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.bundle_dir.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts the way the bundle was trained (padding, truncation at ``max_length``)."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def save_model_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    state = model.module.state_dict() if hasattr(model, "module") else model.state_dict()
    torch.save(state, tmp)
    os.replace(tmp, path)


def _read_settings(root: Path) -> dict:
    settings_file = root / SETTINGS_FILE
    if not settings_file.is_file():
        raise ModelLoadError(f"{root}: not a trained Med-UniC bundle: '{SETTINGS_FILE}' is missing")
    try:
        return json.loads(settings_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{settings_file}: not valid JSON: {err}") from err


def read_inference_settings(bundle_root: str | os.PathLike) -> dict:
    """The ``models/inference_settings.json`` of a trained bundle (network arguments, image size, findings, ...)."""
    return _read_settings(Path(bundle_root))


def inference_preprocessing(bundle_root: str | os.PathLike, keys: Sequence[str] | str = "image", **load_options: Any):
    """DICOM loading (modality LUT, VOI LUT, MONOCHROME1) and the resize to the trained image size: the
    exact pixels the bundle was validated on. ``load_options`` go to :class:`~monai_medunic.transforms.LoadDicomImaged`."""
    from monai.transforms import Compose

    from monai_medunic.transforms import LoadDicomImaged
    from monai_medunic.transforms.pipelines import model_input_transformd

    size = int(read_inference_settings(bundle_root)["image_size"])
    return Compose([LoadDicomImaged(keys, **load_options), model_input_transformd(keys, size)])


def zero_shot_classifier(bundle_root: str | os.PathLike, model: torch.nn.Module, languages: Sequence[str] | None = None):
    """A :class:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier` over the bundle's findings and
    tokenizer, for ``model`` (the bundle's network)."""
    from transformers import AutoTokenizer

    from monai_medunic.metrics.zero_shot import ZeroShotClassifier

    settings = read_inference_settings(bundle_root)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(bundle_root) / TEXT_DIR), local_files_only=True)
    return ZeroShotClassifier(
        model,
        tokenizer,
        settings["findings"],
        languages=list(languages) if languages else settings["prompt_languages"],
        max_length=int(settings["max_length"]),
    )


def build_pretrained_network(bundle_root: str | os.PathLike) -> torch.nn.Module:
    """The ``network_def`` of a trained bundle: the architecture recorded at export, text encoder from ``models/text``.

    Weights are not loaded here (MONAI's bundle tools and :func:`load_pretrained_bundle` load ``models/model.pt``).
    """
    from monai_medunic.networks import MedUniC

    root = Path(bundle_root)
    settings = _read_settings(root)
    return MedUniC(text_model_name_or_path=root / TEXT_DIR, **settings["network"])


def export_pretrained_bundle(
    model: torch.nn.Module,
    tokenizer: Any,
    bundle_dir: str | os.PathLike,
    findings: Sequence[str],
    prompt_languages: Sequence[str] = ("en", "es"),
    max_length: int = 128,
) -> Path:
    """Write the trained ``model`` (a :class:`~monai_medunic.networks.MedUniC`) and ``tokenizer`` into ``bundle_dir/models``.

    ``models/text`` and ``models/inference_settings.json`` are written to a temporary directory and
    renamed into place, and ``models/model.pt`` is written atomically, so a crash leaves no half bundle.
    """
    net = model.module if hasattr(model, "module") else model
    args = dict(getattr(net, "init_args", {}))
    if not args.get("image_encoder"):
        raise ModelLoadError("export_pretrained_bundle needs a MedUniC built from an image encoder name")
    root = Path(bundle_dir)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=models))
    try:
        net.text_encoder.model.save_pretrained(tmp / "text")
        tokenizer.save_pretrained(tmp / "text")
        settings = {
            "network": args,
            "image_size": int(args["img_size"]),
            "findings": list(findings),
            "prompt_languages": list(prompt_languages),
            "max_length": int(max_length),
        }
        (tmp / "inference_settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        if (models / "text").exists():
            shutil.rmtree(models / "text")
        os.replace(tmp / "text", models / "text")
        os.replace(tmp / "inference_settings.json", root / SETTINGS_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    save_model_weights(net, root / MODEL_FILE)
    _describe_trained_network(root / "configs" / "metadata.json", args)
    return root


def _describe_trained_network(meta_file: Path, args: dict) -> None:
    """Make ``network_data_format`` in ``metadata.json`` state the trained input size and embedding width."""
    if not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    fmt = meta.setdefault("network_data_format", {})
    image = fmt.setdefault("inputs", {}).setdefault("image", {})
    image["spatial_shape"] = [int(args["img_size"]), int(args["img_size"])]
    image["num_channels"] = int(args.get("in_channels", 1))
    pred = fmt.setdefault("outputs", {}).setdefault("pred", {})
    pred["num_channels"] = int(args["embed_dim"])
    pred["spatial_shape"] = [int(args["embed_dim"])]
    tmp = meta_file.with_name(f".{meta_file.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=4), encoding="utf-8")
    os.replace(tmp, meta_file)


def load_pretrained_bundle(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu") -> PretrainedBundle:
    """Load a trained Med-UniC bundle (network in eval mode, tokenizer, settings, metadata).

    Raises:
        ModelLoadError: the path is not a trained bundle, a file is missing, or the weights do not
            fit the recorded architecture. The message names the path.
    """
    from transformers import AutoTokenizer

    root = Path(bundle_dir)
    if not root.is_dir():
        raise ModelLoadError(f"{root}: model path is not a directory (expected a trained MONAI bundle)")
    for required in ("configs/metadata.json", MODEL_FILE, TEXT_DIR):
        if not (root / required).exists():
            raise ModelLoadError(f"{root}: not a trained Med-UniC bundle: '{required}' is missing")
    settings = _read_settings(root)
    try:
        metadata = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{root / 'configs' / 'metadata.json'}: not valid JSON: {err}") from err
    try:
        model = build_pretrained_network(root)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{root / SETTINGS_FILE}: cannot build the network: {type(err).__name__}: {err}") from err
    weights = root / MODEL_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise ModelLoadError(f"{weights}: cannot load the weights: {type(err).__name__}: {err}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root / TEXT_DIR), local_files_only=True)
    except Exception as err:
        raise ModelLoadError(f"{root / TEXT_DIR}: cannot load the tokenizer: {type(err).__name__}: {err}") from err
    model.to(device).eval()
    logger.info("loaded bundle %s version %s", metadata.get("name", root.name), metadata.get("version", "?"))
    return PretrainedBundle(
        bundle_dir=root,
        model=model,
        tokenizer=tokenizer,
        image_size=int(settings["image_size"]),
        findings=list(settings["findings"]),
        prompt_languages=list(settings["prompt_languages"]),
        max_length=int(settings["max_length"]),
        metadata=metadata,
    )
