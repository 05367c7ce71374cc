"""The one contract for a trained vision-language bundle: export it, load it, encode with it.

A trained bundle (Med-UniC, UniMedI, Uni-Mlip, ...) is a MONAI Bundle directory that holds:

* ``configs/inference.json`` whose ``network_def`` is the trained inference network, written at
  export with its ``_target_`` and construction arguments, so that ``monai.bundle`` and
  ``ConfigParser`` build it: :class:`~monai_medunic.networks.ImageEmbedder` around the method's
  network (``images -> L2-normalised joint-space embeddings``). ``verify_net_in_out``,
  ``ckpt_export`` and MONAI Label's ``BundleInferTask`` use it with their default ``net_id``;
* a ``pretrained`` section in the same file: the method, the input size, the findings and prompt
  languages of zero-shot inference, the tokenizer length, and method-specific fields nested under
  the method's name;
* ``configs/metadata.json`` whose ``network_data_format`` describes ``network_def`` (input size,
  embedding width);
* ``models/model.pt``: the ``state_dict`` of ``network_def`` (loaded with ``weights_only=True``);
* ``models/text/``: the text encoder's HF directory (config, weights, tokenizer).

Every consumer (evaluation, the Deploy apps, MONAI Label, the linear probe) goes through
:func:`load_pretrained_bundle` and the protocol of the method network: ``encode_image(images)`` and
``encode_text(input_ids, attention_mask)``, plus the bundle's prompt set, whatever the method.
Bundles exported before this layout (with ``models/inference_settings.json``) still load.

On top of it, :func:`load_inference` gives the one-call inference API, :class:`PretrainedInference`:
``embed_image``, ``embed_text``, ``score``, ``findings``, ``similarity_map`` and ``select_slices`` for
a DICOM file or folder, a PNG, a NIfTI file or an array, every image read by
:class:`~monai_medunic.transforms.radiograph.LoadRadiograph` (``LoadDicomImage`` for DICOM) and resized
by the model input transform of training.
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

from monai_medunic.errors import ConfigurationError, ModelLoadError

__all__ = [
    "PretrainedBundle",
    "PretrainedInference",
    "SegmentationModel",
    "load_segmentation_bundle",
    "SimilarityMap",
    "load_inference",
    "load_pretrained_bundle",
    "export_pretrained_bundle",
    "read_inference_settings",
    "inference_preprocessing",
    "zero_shot_classifier",
    "save_model_weights",
    "MODEL_FILE",
    "TEXT_DIR",
    "INFERENCE_CONFIG",
    "SETTINGS_KEY",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "models/model.pt"
TEXT_DIR = "models/text"
INFERENCE_CONFIG = "configs/inference.json"
SETTINGS_KEY = "pretrained"
_LEGACY_SETTINGS_FILE = "models/inference_settings.json"  # bundles exported by monai-medunic 0.1.0


@dataclass
class PretrainedBundle:
    """A loaded, trained bundle.

    Attributes:
        network: the inference network (``network_def``: images -> embeddings), in eval mode.
        model: the method network inside it (``encode_image`` / ``encode_text``; ``image_encoder``).
        tokenizer: the text encoder's tokenizer.
        settings: the ``pretrained`` section of ``inference.json``.
        calibration: the zero-shot decision thresholds and Platt scaling of ``models/calibration.json``
            (:mod:`monai_medunic.metrics.calibration`), or ``None`` for an uncalibrated bundle.
    """

    bundle_dir: Path
    network: torch.nn.Module
    tokenizer: Any
    settings: dict
    metadata: dict = field(default_factory=dict)
    calibration: Any = None

    @property
    def model(self) -> torch.nn.Module:
        return getattr(self.network, "model", self.network)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.bundle_dir.name))

    @property
    def version(self) -> str:
        return str(self.metadata.get("version", "0"))

    @property
    def method(self) -> str:
        return str(self.settings.get("method", "medunic"))

    @property
    def spatial_size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.settings["spatial_size"])

    @property
    def image_size(self) -> int:
        """The square 2D input size (the first spatial size)."""
        return self.spatial_size[0]

    @property
    def findings(self) -> list[str]:
        return list(self.settings["findings"])

    @property
    def prompt_languages(self) -> list[str]:
        return list(self.settings["prompt_languages"])

    @property
    def max_length(self) -> int:
        return int(self.settings["max_length"])

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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelLoadError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: not valid JSON: {err}") from None


def _atomic_write_json(path: Path, obj: Any, indent: int = 4) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_inference_settings(bundle_root: str | os.PathLike) -> dict:
    """The ``pretrained`` section of a trained bundle's ``configs/inference.json`` (method, spatial
    size, findings, prompt languages, tokenizer length); a 0.1.0 bundle's ``inference_settings.json``
    is read in the same form.

    Raises:
        ModelLoadError: the bundle has neither.
    """
    root = Path(bundle_root)
    config = root / INFERENCE_CONFIG
    if config.is_file():
        settings = _read_json(config).get(SETTINGS_KEY)
        if isinstance(settings, dict):
            return settings
    legacy = root / _LEGACY_SETTINGS_FILE
    if legacy.is_file():
        old = _read_json(legacy)
        size = int(old["image_size"])
        return {"method": "medunic", "spatial_size": [size, size], "findings": old["findings"],
                "prompt_languages": old["prompt_languages"], "max_length": old["max_length"], "legacy_network": old["network"]}
    raise ModelLoadError(f"{root}: not a trained bundle: '{INFERENCE_CONFIG}' has no '{SETTINGS_KEY}' section (export it with "
                         "the training config's ExportPretrainedHandler)")


def inference_preprocessing(bundle_root: str | os.PathLike, keys: Sequence[str] | str = "image", **load_options: Any):
    """DICOM loading (modality LUT, VOI LUT, MONOCHROME1) and the resize to the trained input size: the
    exact pixels the bundle was validated on. The image may also be a DICOM folder, a PNG, a NIfTI
    file or an array (:class:`~monai_medunic.transforms.radiograph.LoadRadiographd`); ``load_options``
    go to :class:`~monai_medunic.transforms.LoadDicomImage` (``frame`` defaults to 0)."""
    from monai.transforms import Compose

    from monai_medunic.transforms.pipelines import model_input_transformd
    from monai_medunic.transforms.radiograph import LoadRadiographd

    size = int(read_inference_settings(bundle_root)["spatial_size"][0])
    return Compose([LoadRadiographd(keys, **load_options), model_input_transformd(keys, size)])


def zero_shot_classifier(bundle_root: str | os.PathLike, model: torch.nn.Module, languages: Sequence[str] | None = None):
    """A :class:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier` over the bundle's findings and
    tokenizer, for ``model`` (the bundle's network, or the method network inside it)."""
    from transformers import AutoTokenizer

    from monai_medunic.metrics.calibration import load_calibration
    from monai_medunic.metrics.zero_shot import ZeroShotClassifier

    settings = read_inference_settings(bundle_root)
    tokenizer = AutoTokenizer.from_pretrained(str(Path(bundle_root) / TEXT_DIR), local_files_only=True)
    return ZeroShotClassifier(
        model,
        tokenizer,
        settings["findings"],
        languages=list(languages) if languages else settings["prompt_languages"],
        max_length=int(settings["max_length"]),
        calibration=load_calibration(bundle_root),
    )


def _network_def(model: torch.nn.Module) -> dict:
    """The ``network_def`` config of a trained method network: its class and recorded construction
    arguments (``init_args``), with the text encoder read from ``models/text``."""
    args = dict(getattr(model, "init_args", None) or {})
    if not args:
        raise ModelLoadError(f"{type(model).__name__} records no construction arguments (init_args): it cannot be exported")
    unset = [k for k, v in args.items() if v is None and k in ("image_encoder",)]
    if unset:
        raise ModelLoadError(f"export needs a {type(model).__name__} built from names, not modules ({unset} were modules)")
    args.pop("text_config", None)
    args["text_model_name_or_path"] = f"$@bundle_root + '/{TEXT_DIR}'"
    cls = type(model)
    return {"_target_": "monai_medunic.networks.ImageEmbedder",
            "model": {"_target_": f"{cls.__module__}.{cls.__qualname__}", **args}}


def export_pretrained_bundle(
    model: torch.nn.Module,
    tokenizer: Any,
    bundle_dir: str | os.PathLike,
    findings: Sequence[str],
    prompt_languages: Sequence[str] = ("en", "es"),
    max_length: int = 128,
    method_settings: dict | None = None,
) -> Path:
    """Write a trained method network (``MedUniC``, ``UniMedI``, ...) and its tokenizer into ``bundle_dir``.

    ``models/text`` is written to a temporary directory and renamed into place, ``models/model.pt``
    and the configs are written atomically, so a crash leaves no half bundle. ``configs/inference.json``
    gets the trained ``network_def`` and the ``pretrained`` section (created from a minimal template
    when the bundle has no inference config); ``configs/metadata.json`` gets the trained sizes.

    Args:
        method_settings: method-specific fields, stored under the method's name in the ``pretrained`` section.
    """
    from monai_medunic.networks import ImageEmbedder

    net = model.module if hasattr(model, "module") else model
    network_def = _network_def(net)
    args = network_def["model"]
    method = type(net).__name__.lower()
    size = args.get("img_size", 224)
    spatial_dims = int(args.get("spatial_dims", 2))
    spatial = [int(s) for s in size] if isinstance(size, (list, tuple)) else [int(size)] * spatial_dims
    settings = {"method": method, "spatial_dims": spatial_dims, "spatial_size": spatial, "in_channels": int(args.get("in_channels", 1)),
                "embed_dim": int(args["embed_dim"]), "findings": list(findings), "prompt_languages": list(prompt_languages),
                "max_length": int(max_length)}
    net_settings = net.export_settings() if callable(getattr(net, "export_settings", None)) else {}  # e.g. UniMedI's volume size
    if method_settings or net_settings:
        settings[method] = {**net_settings, **dict(method_settings or {})}

    root = Path(bundle_dir)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=models))
    try:
        net.text_encoder.model.save_pretrained(tmp / "text")
        tokenizer.save_pretrained(tmp / "text")
        if (models / "text").exists():
            shutil.rmtree(models / "text")
        os.replace(tmp / "text", models / "text")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from monai_medunic.metrics.calibration import CALIBRATION_FILE

    if (root / CALIBRATION_FILE).is_file():  # fitted on the earlier weights: it would mislead the new ones
        (root / CALIBRATION_FILE).unlink()
        logger.info("removed %s: it was fitted on the weights this export replaces", CALIBRATION_FILE)
    save_model_weights(ImageEmbedder(net), root / MODEL_FILE)
    (root / "configs").mkdir(exist_ok=True)
    config_file = root / INFERENCE_CONFIG
    config = _read_json(config_file) if config_file.is_file() else {"bundle_root": "."}
    config["network_def"] = network_def
    config[SETTINGS_KEY] = settings
    _atomic_write_json(config_file, config)
    _describe_trained_network(root / "configs" / "metadata.json", settings)
    return root


def _describe_trained_network(meta_file: Path, settings: dict) -> None:
    """Make ``network_data_format`` in ``metadata.json`` state the trained input size and embedding width."""
    if not meta_file.is_file():
        return
    meta = _read_json(meta_file)
    fmt = meta.setdefault("network_data_format", {})
    image = fmt.setdefault("inputs", {}).setdefault("image", {})
    image["spatial_shape"] = list(settings["spatial_size"])
    image["num_channels"] = settings["in_channels"]
    volume_size = (settings.get(settings.get("method", "")) or {}).get("volume_size")
    if volume_size:  # a 2D + 3D network (UniMedI): network_def also takes volumes, described as the "volume" input
        volume = fmt["inputs"].setdefault("volume", {k: v for k, v in image.items() if k != "modality"})
        volume["spatial_shape"] = list(volume_size)
        volume["num_channels"] = settings["in_channels"]
    pred = fmt.setdefault("outputs", {}).setdefault("pred", {})
    pred["num_channels"] = settings["embed_dim"]
    pred["spatial_shape"] = [settings["embed_dim"]]
    _atomic_write_json(meta_file, meta)


def _build_network(root: Path, settings: dict) -> torch.nn.Module:
    from monai_medunic.networks import ImageEmbedder, MedUniC

    if "legacy_network" in settings:  # a 0.1.0 bundle: MedUniC arguments in inference_settings.json
        return ImageEmbedder(MedUniC(text_model_name_or_path=root / TEXT_DIR, **settings["legacy_network"]))
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / INFERENCE_CONFIG))
    parser["bundle_root"] = str(root)
    return parser.get_parsed_content("network_def", instantiate=True)


def load_pretrained_bundle(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu") -> PretrainedBundle:
    """Load a trained bundle: the inference network (weights loaded, eval mode), tokenizer, settings, metadata.

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
            raise ModelLoadError(f"{root}: not a trained bundle: '{required}' is missing")
    settings = read_inference_settings(root)
    metadata = _read_json(root / "configs" / "metadata.json")
    try:
        network = _build_network(root, settings)
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"{root / INFERENCE_CONFIG}: cannot build network_def: {type(err).__name__}: {err}") from err
    weights = root / MODEL_FILE
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if "legacy_network" in settings:
            network.model.load_state_dict(state)
        else:
            network.load_state_dict(state)
    except Exception as err:
        raise ModelLoadError(f"{weights}: cannot load the weights: {type(err).__name__}: {str(err)[:500]}") from err
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root / TEXT_DIR), local_files_only=True)
    except Exception as err:
        raise ModelLoadError(f"{root / TEXT_DIR}: cannot load the tokenizer: {type(err).__name__}: {err}") from err
    network.to(device).eval()
    logger.info("loaded bundle %s version %s", metadata.get("name", root.name), metadata.get("version", "?"))
    from monai_medunic.metrics.calibration import load_calibration

    return PretrainedBundle(bundle_dir=root, network=network, tokenizer=tokenizer, settings=settings, metadata=metadata,
                            calibration=load_calibration(root))


# --------------------------------------------------------------------------------------------------
# The one-call inference API: load a trained bundle once, then embed, score, find and ground.

#: Kinds of :meth:`PretrainedInference.similarity_map` (see :class:`SimilarityMap`).
SIMILARITY_MAP_KINDS = ("contribution", "cosine")


@dataclass
class SimilarityMap:
    """A patch-level grounding map of one image and one text (:meth:`PretrainedInference.similarity_map`).

    Let ``f_p`` be the image encoder's last spatial features at patch ``p`` (ResNet ``layer4``; ViT patch
    tokens), ``x`` the pooled feature the projector ``P_v`` reads (the mean of the ``f_p`` for a
    ResNet, the CLS token for a ViT), ``u = P_v(x)`` the joint-space image embedding before its L2
    normalisation, ``t`` the L2-normalised text embedding and ``J`` the Jacobian of ``P_v`` at ``x``.
    The global score is ``s = cos(u, t) = t . u / |u|``.

    * ``kind="contribution"`` (default): ``grid[p] = t . (u + J (f_p - x)) / |u|``: each patch's feature
      projected into the joint space by ``P_v`` linearised at the image's own pooled feature
      (``Linear -> BatchNorm -> ReLU -> Linear -> BatchNorm`` in eval mode is piecewise linear, so
      this is exactly ``P_v`` on the ReLU pattern of ``x``), scored against the text and divided by
      the global norm ``|u|``. For a mean-pooled encoder (ResNet) the mean of the ``f_p`` is ``x``,
      hence **the grid's mean equals the global score**: ``grid.mean() == score`` (``offset == 0`` up
      to rounding); each patch's value is its share of the cosine, as CAM (Zhou et al., CVPR 2016)
      decomposes a linear classifier after global average pooling. For a CLS-pooled encoder (ViT)
      ``grid.mean() = score - offset`` with ``offset = t . J (x - mean_p f_p) / |u|``, the part of the
      score that the CLS token carries beyond the mean patch token.
    * ``kind="cosine"``: ``grid[p] = cos(P_v(f_p), t)``, every patch through the full projector and
      normalised on its own (BioViL's similarity map, Boecking et al., ECCV 2022). Values lie in
      [-1, 1]; the grid's mean has no fixed relation to ``score`` (``offset`` is reported as is).

    ``map`` is ``grid`` upsampled bilinearly (``align_corners=False``) to the image's own rows and
    columns: the model input is the whole image resized, so the grid covers the whole image. Bilinear
    interpolation keeps the mean only up to its edge effect, so the identity above is stated, and
    tested, on ``grid``.

    Attributes:
        map: ``(H, W)`` float32 at the image's size (rows, columns).
        grid: ``(h, w)`` float32, the patch grid.
        score: the global image-text cosine (:meth:`PretrainedInference.score`).
        offset: ``score - grid.mean()``.
        text: the text.
        kind: ``"contribution"`` or ``"cosine"``.
        image: ``(H, W)`` float32 display values in [0, 1], the image as loaded (for overlays).
    """

    map: Any
    grid: Any
    score: float
    offset: float
    text: str
    kind: str
    image: Any = None


class PretrainedInference:
    """A trained bundle loaded once, with one call per question (BioViL's raw-data helpers, with the
    DICOM grayscale pipeline of training). Build it with :func:`load_inference`.

    Images may be a DICOM file or folder, a PNG, a NIfTI file, a pydicom dataset or an array (rules:
    :mod:`monai_medunic.transforms.radiograph`); each one is read by ``LoadRadiograph``
    (``LoadDicomImage`` for DICOM: Modality LUT, VOI LUT, MONOCHROME1) and resized by the model input
    transform of training, exactly as :func:`inference_preprocessing`. A list of images gives a batch.
    Only the method-agnostic protocol is used: ``model.encode_image`` / ``model.encode_text`` and the
    bundle's prompt set; :meth:`similarity_map` also reads ``model.image_encoder`` (``feature_map`` and
    ``pooled`` / ``cls``) and ``model.image_projection``.

    Text embeddings are cached (least recently used first out, ``text_cache_size`` entries), and so
    are the zero-shot prompt embeddings of every prompt language (encoded at load).

    Args:
        bundle: a loaded bundle (:func:`load_pretrained_bundle`).
        text_cache_size: how many text embeddings to keep.
    """

    def __init__(self, bundle: PretrainedBundle, text_cache_size: int = 4096) -> None:
        import threading
        from collections import OrderedDict

        from monai_medunic.transforms.pipelines import model_input_transform
        from monai_medunic.transforms.radiograph import LoadRadiograph

        self.bundle = bundle
        self.device = next(bundle.network.parameters()).device
        self.loader = LoadRadiograph(frame=0)
        self.resize = model_input_transform(bundle.image_size)
        self.classifier = zero_shot_classifier(bundle.bundle_dir, bundle.model, bundle.prompt_languages)
        self.classifier.refresh()  # every prompt language, once
        self.text_cache_size = int(text_cache_size)
        self._text_cache: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()

    # ---- the bundle
    @property
    def model(self) -> torch.nn.Module:
        return self.bundle.model

    @property
    def finding_keys(self) -> list[str]:
        return list(self.classifier.findings)

    @property
    def languages(self) -> list[str]:
        return list(self.classifier.languages)

    # ---- images
    def load_image(self, image: Any):
        """The image as loaded: a ``(1, H, W)`` MetaTensor of display values in [0, 1]."""
        return self.loader(image)

    def model_input(self, image: Any) -> tuple[torch.Tensor, Any]:
        """``(1, C, S, S)`` network input on the bundle's device, and the loaded ``(1, H, W)`` image."""
        img = self.loader(image)
        return torch.as_tensor(self.resize(img))[None].to(self.device), img

    @torch.no_grad()
    def embed_image(self, image: Any) -> torch.Tensor:
        """L2-normalised joint-space embedding ``(d,)`` of an image, or ``(B, d)`` of a list of images (CPU, float32)."""
        many = isinstance(image, (list, tuple))
        images = list(image) if many else [image]
        if not images:
            raise ConfigurationError("embed_image: no image given")
        x = torch.cat([self.model_input(im)[0] for im in images])
        emb = self.model.encode_image(x).float().cpu()
        return emb if many else emb[0]

    # ---- texts
    @torch.no_grad()
    def embed_text(self, text: str | Sequence[str]) -> torch.Tensor:
        """L2-normalised joint-space embedding ``(d,)`` of a text, or ``(N, d)`` of a list (CPU, float32; cached)."""
        many = not isinstance(text, str)
        texts = list(text) if many else [text]
        bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
        if not texts or bad:
            raise ConfigurationError(f"embed_text: every text must be a non-empty string, got {bad[:1] or texts!r}")
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for i in range(0, len(missing), 64):
            chunk = missing[i : i + 64]
            tok = self.bundle.tokenize(chunk)
            emb = self.model.encode_text(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)).float().cpu()
            with self._lock:
                for t, e in zip(chunk, emb):
                    self._text_cache[t] = e
                while len(self._text_cache) > self.text_cache_size:
                    self._text_cache.popitem(last=False)
        with self._lock:
            out = []
            for t in texts:
                e = self._text_cache.get(t)
                if e is None:  # evicted by a larger request meanwhile
                    tok = self.bundle.tokenize([t])
                    e = self.model.encode_text(tok["input_ids"].to(self.device), tok["attention_mask"].to(self.device)).float().cpu()[0]
                    self._text_cache[t] = e
                self._text_cache.move_to_end(t)
                out.append(e)
        emb = torch.stack(out)
        return emb if many else emb[0]

    # ---- questions
    def score(self, image: Any, text: str | Sequence[str]) -> float | torch.Tensor:
        """The image-text similarity: the cosine of the two L2-normalised joint-space embeddings
        (Med-UniC Eq. 1's ``s``, without the temperature). One image and one text give a float; lists give
        ``(B, N)`` (or ``(B,)`` / ``(N,)``)."""
        txt = self.embed_text(text)
        sims = self.embed_image(image) @ (txt.transpose(0, 1) if txt.ndim == 2 else txt)
        return float(sims) if sims.ndim == 0 else sims

    def findings(self, image: Any, language: str | None = None) -> list[dict[str, Any]]:
        """Zero-shot findings of one image (Med-UniC Sec. 4.2) with the bundle's prompts in ``language``
        (default: the bundle's first prompt language).

        The decision is the bundle's rule, taken in one place,
        :meth:`~monai_medunic.metrics.zero_shot.ZeroShotClassifier.classify_embeddings` of the classifier
        :func:`zero_shot_classifier` builds from the bundle's settings: the bundle's calibration
        (``models/calibration.json``: a per-finding threshold on ``s_pos - s_neg`` and a Platt-scaled
        probability, per language) where it has one, else the paper's ``s_pos > s_neg`` with the score
        ``sigmoid((s_pos - s_neg) / tau)``, flagged ``calibrated: False``.

        Returns:
            one dict per finding, in the bundle's order: ``finding`` (English key), ``name`` (in the
            language), ``probability``, ``positive``, ``calibrated`` and ``decision_rule``.
        """
        from monai_medunic.text.prompts import translate_finding

        language = str(language or self.languages[0]).lower()
        pred = self.classifier.classify_embeddings(self.embed_image(image)[None].to(self.device), language)
        calibrated = pred.calibrated.tolist() if pred.calibrated is not None else [False] * len(self.finding_keys)
        return [
            {"finding": f, "name": translate_finding(f, language), "probability": float(p), "positive": bool(v),
             "calibrated": bool(c), "decision_rule": pred.decision_rule}
            for f, p, v, c in zip(self.finding_keys, pred.probs[0].tolist(), pred.positive[0].tolist(), calibrated)
        ]

    def similarity_map(self, image: Any, text: str, kind: str = "contribution") -> SimilarityMap:
        """A patch-level grounding map of ``text`` on ``image``, upsampled to the image (definitions, and
        how its mean relates to :meth:`score`, in :class:`SimilarityMap`).

        Raises:
            ConfigurationError: an unknown ``kind``, or a method network without ``image_encoder`` /
                ``image_projection`` (or whose encoder gives no ``feature_map``).
        """
        import torch.nn.functional as F

        if kind not in SIMILARITY_MAP_KINDS:
            raise ConfigurationError(f"similarity_map kind must be one of {SIMILARITY_MAP_KINDS}, got {kind!r}")
        encoder = getattr(self.model, "image_encoder", None)
        projection = getattr(self.model, "image_projection", None)
        if encoder is None or projection is None:
            raise ConfigurationError(
                f"similarity_map needs a method network with image_encoder and image_projection; {type(self.model).__name__} has not"
            )
        x, img = self.model_input(image)
        t = self.embed_text(text).to(self.device)
        with torch.no_grad():
            enc = encoder(x)
        fmap = enc.get("feature_map")
        pooled = enc["pooled"] if "pooled" in enc else enc.get("cls")
        if fmap is None or pooled is None or fmap.ndim != 4:
            raise ConfigurationError(f"similarity_map needs a 2D feature_map and a pooled feature from {type(encoder).__name__}")
        feats = fmap[0].flatten(1).T.float()  # (P, C)
        x0 = pooled.detach().float().clone().requires_grad_(True)
        with torch.enable_grad():
            u = projection(x0)[0]
            (g,) = torch.autograd.grad(u @ t, x0)  # J^T t
        u = u.detach()
        norm = u.norm()
        score = float(u @ t / norm)
        with torch.no_grad():
            if kind == "contribution":
                values = (u @ t + (feats - x0.detach()) @ g[0]) / norm
            else:
                values = F.cosine_similarity(projection(feats), t[None], dim=-1)
            grid = values.reshape(fmap.shape[2:])
            full = F.interpolate(grid[None, None], size=tuple(img.shape[1:]), mode="bilinear", align_corners=False)[0, 0]
        return SimilarityMap(
            map=full.cpu().numpy(),
            grid=grid.cpu().numpy(),
            score=score,
            offset=score - float(grid.mean()),
            text=text,
            kind=kind,
            image=torch.as_tensor(img)[0].cpu().numpy(),
        )

    def select_slices(self, volume: Any, text: str | None = None, k: int | None = None) -> "SliceSelection":
        """The ``k`` slices of a CT volume most relevant to ``text`` (or, without text, by the CLS attention),
        with the per-slice scores (UniMedI Sec. 3.2): :func:`select_slices_from_bundle` on this bundle.

        Raises:
            ConfigurationError: the bundle is not a UniMedI bundle.
        """
        if self.bundle.method != "unimedi":
            raise ConfigurationError(f"{self.bundle.bundle_dir}: slice selection needs a trained UniMedI bundle "
                                     f"(this bundle's method is '{self.bundle.method}')")
        return select_slices_from_bundle(self.bundle, volume, text=text, k=k)


def load_inference(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu", text_cache_size: int = 4096) -> PretrainedInference:
    """Load a trained bundle for the one-call inference API (:class:`PretrainedInference`), on CPU or CUDA.

    Raises:
        ModelLoadError: the folder is not a trained bundle (names the path and the file).
        ConfigurationError: ``device`` is CUDA on a machine without a GPU.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device '{device}': CUDA is not available on this machine")
    return PretrainedInference(load_pretrained_bundle(bundle_dir, device=device), text_cache_size=text_cache_size)


# --------------------------------------------------------------------------------------------------
# Trained cxr_segmentation bundles (networks.dense.EncoderSegmentationNetwork on a pre-trained encoder).


@dataclass
class SegmentationModel:
    """A trained ``cxr_segmentation`` bundle, loaded: the network (eval mode) and its settings (used by the Deploy app
    ``cxr_segmentation`` and the MONAI Label app, which must not import the Deploy SDK)."""

    bundle_dir: Path
    network: torch.nn.Module
    findings: list[str]
    image_size: int
    threshold: float
    name: str = "cxr_segmentation"
    version: str = "0"


def load_segmentation_bundle(bundle_dir: str | os.PathLike, device: str | torch.device = "cpu") -> SegmentationModel:
    """The ``network_def``, ``findings``, ``image_size`` and ``threshold`` of the bundle's
    ``configs/inference.json``, with ``models/model.pt`` loaded (``weights_only=True``).

    Raises:
        ModelLoadError: a file is missing, the config does not build, or the weights do not fit (names the path).
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir)
    config, weights = root / "configs" / "inference.json", root / "models" / "model.pt"
    for required in (config, weights):
        if not required.is_file():
            raise ModelLoadError(f"{root}: not a trained cxr_segmentation bundle: '{required.relative_to(root)}' is missing")
    try:
        parser = ConfigParser()
        parser.read_config(str(config))
        parser["bundle_root"] = str(root)
        network = parser.get_parsed_content("network_def", instantiate=True)
        findings = [str(f) for f in parser.get_parsed_content("findings")]
        image_size = int(parser.get_parsed_content("image_size"))
        threshold = float(parser.get_parsed_content("threshold"))
    except Exception as err:
        raise ModelLoadError(f"{config}: cannot build the segmentation network: {type(err).__name__}: {str(err)[:300]}") from err
    try:
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as err:
        raise ModelLoadError(f"{weights}: the weights do not fit the network of inference.json: {type(err).__name__}: {str(err)[:300]}") from err
    meta_file = root / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    network.to(device).eval()
    return SegmentationModel(root, network, findings, image_size, threshold, str(meta.get("name", root.name)), str(meta.get("version", "0")))



# --------------------------------------------------------------------------------------------------
# UniMedI's attentive slice selection from a trained bundle (UniMedI Sec. 3.2, Eq. 1-2).


@dataclass
class SliceSelection:
    """What :func:`select_slices_from_bundle` found in one volume.

    Attributes:
        scores: ``(Z,)`` relevance of every slice of the input volume (its Z axis as the loader sorts
            it: ascending along the slice normal); the slices of one token slab share its score.
        indices: the ``k`` selected input slices, best first (the central slice of each selected slab).
        slab_scores: ``(S,)`` the scores of the network's token slabs (Eq. 2).
        slab_indices: the ``k`` selected slabs, best first.
        slab_slices: for each slab, the ``[first, last]`` input slices it covers.
        method: ``"attention"`` (Eq. 1-2: CLS-to-patch attention) or ``"text"`` (similarity of each
            slab's slice to the given text in the joint space).
        attention_scores: ``(S,)`` the Eq. 2 slab scores (also when ``method == "text"``).
        name: the volume's file or folder (or the name given for an array).
    """

    scores: torch.Tensor
    indices: list[int]
    slab_scores: torch.Tensor
    slab_indices: list[int]
    slab_slices: list[tuple[int, int]]
    method: str
    attention_scores: torch.Tensor
    name: str


def _raise_typed(err: Exception) -> None:
    """Re-raise the package's typed error that a MONAI ``Compose`` wrapped into a ``RuntimeError``."""
    from monai_medunic.errors import MedUniCError

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, MedUniCError):
        cause = cause.__cause__
    if cause is not None:
        raise cause from None
    raise err


def select_slices_from_bundle(
    bundle: "PretrainedBundle | str | os.PathLike",
    volume: Any,
    text: str | None = None,
    k: int | None = None,
    name: str | None = None,
) -> SliceSelection:
    """Rank the slices of a CT volume with a trained UniMedI bundle and pick the top ``k`` (UniMedI Sec. 3.2).

    The volume goes through the bundle's training-time volume pipeline
    (:func:`~monai_medunic.transforms.pipelines.volume_input_transform`: the HU window recorded in the
    bundle, slices first, resized to the trained ``volume_size``). Without ``text`` the slabs are
    ranked by Eq. 1-2 (CLS-to-patch attention averaged over heads and the trained ``attention_layers``,
    then over each slab's tokens, :func:`monai_medunic.networks.unimedi.select_slices`); with a report or
    prompt they are ranked by the joint-space similarity of each slab's slice to it
    (:meth:`~monai_medunic.networks.unimedi.UniMedI.slab_text_similarity`). Scores are mapped back to the
    slices of the input volume.

    Args:
        bundle: a loaded :class:`PretrainedBundle` or a trained bundle directory.
        volume: a DICOM series (folder or list of files), a NIfTI file, or an array / tensor in the
            loaders' layout, ``(X, Y, Z)`` or ``(1, X, Y, Z)`` in HU (a MetaTensor keeps its file name).
        text: a report or prompt; ``None`` for the attention ranking.
        k: slices to select (default: the bundle's trained ``num_slices``).
        name: the name of an array volume in messages (default: its ``filename_or_obj``, else ``"volume"``).

    Raises:
        ConfigurationError: not a UniMedI bundle, or ``k`` outside ``[1, S]`` (the network's token slabs).
        DataError / VolumeReadError: the volume cannot be read (missing or duplicated slices, mixed
            orientations, inconsistent spacing), is 2D, or has fewer than ``k`` slices; names the file.
    """
    import numpy as np
    from monai.data import MetaTensor

    from monai_medunic.errors import ConfigurationError, DataError
    from monai_medunic.networks.unimedi import UniMedI, select_slices
    from monai_medunic.transforms.pipelines import volume_input_transform
    from monai_medunic.transforms.volume import LoadVolume

    if not isinstance(bundle, PretrainedBundle):
        bundle = load_pretrained_bundle(bundle)
    model = bundle.model
    if not isinstance(model, UniMedI):
        raise ConfigurationError(f"{bundle.bundle_dir}: slice selection needs a trained UniMedI bundle, not '{bundle.method}'")
    encoder = model.image_encoder
    slabs, patch_depth = encoder.grid_3d[0], encoder.patch_depth
    k = int(model.num_slices if k is None else k)
    if not 1 <= k <= slabs:
        raise ConfigurationError(f"k must be in [1, {slabs}] (the token slabs of a {tuple(encoder.volume_size)} volume), got {k}")
    window = (bundle.settings.get("unimedi") or {}).get("volume_window", "lung")

    if isinstance(volume, (str, os.PathLike)) or (isinstance(volume, (list, tuple)) and volume and isinstance(volume[0], (str, os.PathLike))):
        label = name or (os.fspath(volume) if isinstance(volume, (str, os.PathLike)) else os.path.dirname(os.fspath(volume[0])))
        try:
            vol = LoadVolume()(volume)
        except Exception as err:  # noqa: BLE001 - typed errors pass through, MONAI's wrapped ones are unwrapped
            _raise_typed(err)
    else:
        meta = dict(getattr(volume, "meta", None) or {})
        label = name or str(meta.get("filename_or_obj") or "volume")
        arr = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume.as_subclass(torch.Tensor))
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[0] != encoder.in_channels:
            raise DataError(f"expected a volume (X, Y, Z) or ({encoder.in_channels}, X, Y, Z) in HU, got shape {tuple(arr.shape)} "
                            "(a 2D image given as a volume?)", path=label, field="volume")
        vol = MetaTensor(arr.float(), meta={**meta, "filename_or_obj": label})
    depth = int(vol.shape[-1])
    if depth < k:
        raise DataError(f"the volume has {depth} slice(s) but k={k} are to be selected; use a thicker volume or a smaller k",
                        path=label, field="slices")
    try:
        x = volume_input_transform(encoder.volume_size, window, min_slices=max(2, k))(vol)
    except Exception as err:  # noqa: BLE001
        _raise_typed(err)
    device = next(model.parameters()).device
    x = torch.as_tensor(x)[None].to(device)
    model.eval()
    with torch.no_grad():
        sel = select_slices(model, x, k, model.attention_layers, names=[label])
        attention = sel["slab_scores"][0].float().cpu()
        if text is not None:
            tok = bundle.tokenize([text])
            slab_scores = model.slab_text_similarity(x, tok["input_ids"].to(device), tok["attention_mask"].to(device))[0].float().cpu()
            method = "text"
        else:
            slab_scores, method = attention, "attention"
    net_depth = int(encoder.volume_size[0])
    slab_of = [min(slabs - 1, (z * net_depth // depth) // patch_depth) for z in range(depth)]  # input slice -> its slab
    spans = [(slab_of.index(s), len(slab_of) - 1 - slab_of[::-1].index(s)) if s in slab_of else (-1, -1) for s in range(slabs)]
    ranked = [int(s) for s in torch.argsort(slab_scores, descending=True, stable=True)]
    chosen = [s for s in ranked if spans[s][0] >= 0][:k]
    return SliceSelection(
        scores=slab_scores[torch.as_tensor(slab_of)],
        indices=[(spans[s][0] + spans[s][1]) // 2 for s in chosen],
        slab_scores=slab_scores,
        slab_indices=chosen,
        slab_slices=spans,
        method=method,
        attention_scores=attention,
        name=label,
    )


__all__ += ["SliceSelection", "select_slices_from_bundle"]
