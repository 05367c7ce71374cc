"""3D downstream tasks of a pre-trained UniMedI vision encoder: CT classification (linear probe and
fine-tuning) and CT segmentation with MONAI's UNETR, each against a random-init baseline.

UniMedI (``shared/papers/unimedi.txt``, Sec. 4.2, App. 7.1-7.2):

* **Linear probe** (Sec. 4.2.1): "keeping the pre-trained ViT vision encoder fixed and solely training a
  linear classification head initialized randomly". The encoder's features are computed once (it is
  frozen, so every epoch would compute the same ones) and a linear layer is trained on them with
  AdamW and a per-finding sigmoid (the CT findings are multi-label). Metric: macro ROC AUC.
* **Fine-tuning** (Sec. 4.2.1, App. 7.1: "we train the whole network"): the same head on the encoder,
  everything trained (:class:`~monai_medunic.metrics.probe.LinearProbeNetwork` with
  ``freeze_encoder=False``), with MONAI's ``SupervisedTrainer``.
* **Segmentation** (App. 7.2): MONAI's ``UNETR`` with the pre-trained ViT as its encoder
  (:func:`~monai_medunic.networks.vit_unetr.unetr_with_unified_vit`), the whole model trained with
  Dice + CE (MONAI ``DiceCELoss``), scored with MONAI's ``DiceMetric`` per lesion class on held-out
  volumes (background excluded; a class absent from a volume's truth is left out of that volume's mean).

Volumes enter as the bundle's training pipeline makes them (:func:`load_ct_studies`:
:class:`~monai_medunic.transforms.volume.LoadVolume` +
:func:`~monai_medunic.transforms.pipelines.volume_input_transform`), label maps resampled to the same
grid by nearest neighbour. The encoder of a volume is
:class:`~monai_medunic.networks.unimedi.UniMedIVisionEncoder`: a volume goes through the ViT together
with its selected slices, as in pre-training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_medunic.errors import MetricInputError

__all__ = ["load_ct_studies", "encode_volumes", "linear_probe_3d", "finetune_3d", "segment_3d_unetr"]

logger = logging.getLogger(__name__)


def load_ct_studies(
    records: Sequence[Mapping[str, Any]],
    volume_size: Sequence[int],
    findings: Sequence[str],
    window: str | Sequence[float] = "lung",
    masks: bool = False,
    root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Load volume records (``manifest_datalist(..., dimensions=3)``) into tensors on the network grid.

    Returns:
        ``volumes`` ``(N, 1, D, H, W)`` float32 in [0, 1]; ``labels`` ``(N, F)`` float32 in ``findings`` order
        (NaN where a record lacks a label; a record's ``labels`` is a ``{finding: 0/1}`` mapping or, as
        ``manifest_datalist(..., findings=findings)`` gives it, a list in ``findings`` order); ``depths`` the input slice counts; ``lesion_slices``, ``reports``,
        ``ids``, ``languages``; with ``masks``, ``masks`` ``(N, 1, D, H, W)`` int64 label maps (nearest resize).

    Raises:
        MetricInputError: no record, or ``masks`` and a record without a mask.
        VolumeReadError / DataError: a volume or mask cannot be read (names the file).
    """
    from monai.transforms import Compose, EnsureType, Resize, Transpose

    from monai_medunic.transforms.pipelines import volume_input_transform
    from monai_medunic.transforms.volume import LoadVolume

    if not records:
        raise MetricInputError("no volume record to load")
    load = LoadVolume()
    to_net = volume_input_transform(volume_size, window)
    mask_to_net = Compose([Transpose((0, 3, 2, 1)), Resize(tuple(int(v) for v in volume_size), mode="nearest"),
                           EnsureType(dtype=torch.int64, track_meta=False)])

    def path(p: str) -> str:
        return p if root is None or os.path.isabs(p) else os.path.join(os.fspath(root), p)

    vols, labs, depths, lesion, reports, ids, langs, mks = [], [], [], [], [], [], [], []
    for rec in records:
        vol = load(path(rec["image"]))
        depths.append(int(vol.shape[-1]))
        vols.append(torch.as_tensor(to_net(vol)))
        raw = rec.get("labels")
        if isinstance(raw, Mapping):  # {finding: 0/1}
            labs.append([float(raw.get(f, float("nan"))) for f in findings])
        elif raw is not None and len(raw) == len(findings):  # manifest_datalist(findings=...) gives them in that order
            labs.append([float(v) for v in raw])
        else:
            labs.append([float("nan")] * len(findings))
        lesion.append(dict(rec.get("lesion_slices") or {}))
        reports.append(str(rec.get("report", "")))
        ids.append(str(rec.get("id") or rec["image"]))
        langs.append(str(rec.get("language", "")))
        if masks:
            if not rec.get("mask"):
                raise MetricInputError(f"volume record {ids[-1]} has no mask for segmentation")
            mks.append(torch.as_tensor(mask_to_net(load(path(rec["mask"])))))
    out: dict[str, Any] = {"volumes": torch.stack(vols), "labels": torch.tensor(labs, dtype=torch.float32), "depths": depths,
                           "lesion_slices": lesion, "reports": reports, "ids": ids, "languages": langs}
    if masks:
        out["masks"] = torch.stack(mks)
    return out


@torch.no_grad()
def encode_volumes(encoder: nn.Module, volumes: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """``encoder(x)["pooled"]`` of every volume (eval mode, no gradient), ``(N, hidden)``."""
    was = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(volumes[i : i + batch_size])["pooled"].float() for i in range(0, len(volumes), batch_size)])
    finally:
        encoder.train(was)


def _labelled(x: torch.Tensor, y: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    keep = ~torch.isnan(y).any(dim=1)
    if not keep.any():
        raise MetricInputError(f"no {what} volume has every label")
    return x[keep], y[keep]


def _auc(labels: torch.Tensor, scores: torch.Tensor, findings: Sequence[str]) -> dict:
    from monai_medunic.metrics.zero_shot import multilabel_auc

    return multilabel_auc(labels.numpy(), scores.numpy(), findings)


def linear_probe_3d(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    findings: Sequence[str],
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> dict:
    """Linear probe on a frozen encoder (UniMedI Sec. 4.2.1): features once, a linear layer on them (full-batch
    AdamW, sigmoid BCE, features standardised with the training set's statistics); macro AUC on ``test``.

    Args:
        encoder: ``x -> {"pooled": (B, D)}`` (e.g. :class:`~monai_medunic.networks.unimedi.UniMedIVisionEncoder`).
        train, test: ``(volumes, labels)``; volumes without every label are left out.
    """
    x_tr, y_tr = _labelled(*train, "training")
    x_te, y_te = _labelled(*test, "test")
    f_tr, f_te = encode_volumes(encoder, x_tr), encode_volumes(encoder, x_te)
    mean, std = f_tr.mean(0), f_tr.std(0).clamp_min(1e-6)
    f_tr, f_te = (f_tr - mean) / std, (f_te - mean) / std
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(f_tr.shape[1], y_tr.shape[1])
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(int(epochs)):
        opt.zero_grad()
        loss = loss_fn(head(f_tr), y_tr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        scores = torch.sigmoid(head(f_te))
    return {"auc": _auc(y_te, scores, findings), "train_volumes": len(x_tr), "test_volumes": len(x_te),
            "final_train_loss": float(loss.detach())}


def _run_trainer(network: nn.Module, data: list[dict], loss: nn.Module, epochs: int, lr: float, batch_size: int,
                 weight_decay: float, seed: int) -> list[float]:
    from monai.data import DataLoader
    from monai.engines import SupervisedTrainer
    from ignite.engine import Events

    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=len(data) > batch_size, generator=gen, num_workers=0)
    params = [p for p in network.parameters() if p.requires_grad]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=int(epochs), train_data_loader=loader, network=network,
        optimizer=torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay), loss_function=loss, decollate=False,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"].detach())))
    trainer.run()
    return losses


def finetune_3d(
    encoder: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    findings: Sequence[str],
    epochs: int = 8,
    lr: float = 1e-4,
    batch_size: int = 4,
    weight_decay: float = 1e-6,
    seed: int = 0,
) -> dict:
    """Fine-tune ``encoder`` with a linear head on the CT labels (UniMedI App. 7.1: the whole network,
    AdamW), MONAI ``SupervisedTrainer``; macro AUC on ``test``. ``encoder`` is trained in place: pass a copy."""
    from monai_medunic.metrics.probe import LinearProbeNetwork

    x_tr, y_tr = _labelled(*train, "training")
    x_te, y_te = _labelled(*test, "test")
    torch.manual_seed(seed)
    net = LinearProbeNetwork(encoder, y_tr.shape[1], freeze_encoder=False)
    data = [{"image": x_tr[i], "label": y_tr[i]} for i in range(len(x_tr))]
    losses = _run_trainer(net, data, nn.BCEWithLogitsLoss(), epochs, lr, batch_size, weight_decay, seed)
    net.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(net(x_te[i : i + 8])) for i in range(0, len(x_te), 8)])
    return {"auc": _auc(y_te, scores, findings), "train_volumes": len(x_tr), "test_volumes": len(x_te),
            "final_train_loss": float(np.mean(losses[-max(1, len(losses) // max(1, epochs)):])) if losses else None}


def segment_3d_unetr(
    vit: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    class_names: Mapping[str, int],
    epochs: int = 4,
    lr: float = 1e-4,
    batch_size: int = 2,
    feature_size: int = 16,
    weight_decay: float = 1e-5,
    seed: int = 0,
) -> dict:
    """MONAI UNETR with ``vit`` as its encoder (UniMedI App. 7.2), trained whole with Dice + CE; Dice per class on ``test``.

    Args:
        vit: a :class:`~monai_medunic.networks.UnifiedViT` (trained in place: pass a copy).
        train, test: ``(volumes (N, 1, D, H, W), label maps (N, 1, D, H, W))``.
        class_names: ``{name: label value}`` of the lesion classes (0 is background).

    Returns:
        ``{"dice": {name: mean Dice over the test volumes that hold the class (None if none)},
        "mean_dice": mean over the defined classes, "train_volumes", "test_volumes", "final_train_loss"}``.
    """
    from monai.losses import DiceCELoss
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    from monai_medunic.networks.vit_unetr import unetr_with_unified_vit

    labels = sorted(int(v) for v in class_names.values())
    if not labels or labels[0] < 1:
        raise MetricInputError(f"class_names must map lesion classes to labels >= 1, got {dict(class_names)}")
    num_classes = labels[-1] + 1
    torch.manual_seed(seed)
    net = unetr_with_unified_vit(vit, num_classes, feature_size=feature_size)
    x_tr, m_tr = train
    x_te, m_te = test
    data = [{"image": x_tr[i], "label": m_tr[i]} for i in range(len(x_tr))]
    losses = _run_trainer(net, data, DiceCELoss(to_onehot_y=True, softmax=True), epochs, lr, batch_size, weight_decay, seed)
    net.eval()
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    with torch.no_grad():
        for i in range(0, len(x_te), 2):
            pred = net(x_te[i : i + 2]).argmax(dim=1, keepdim=True)
            metric(one_hot(pred, num_classes), one_hot(m_te[i : i + 2], num_classes))
    per_volume = metric.aggregate()  # (N, C-1), NaN where the truth holds no voxel of the class
    dice: dict[str, float | None] = {}
    for name, value in class_names.items():
        col = per_volume[:, int(value) - 1]
        col = col[~torch.isnan(col)]
        dice[name] = float(col.mean()) if col.numel() else None
    defined = [v for v in dice.values() if v is not None]
    return {"dice": dice, "mean_dice": float(np.mean(defined)) if defined else None, "train_volumes": len(x_tr),
            "test_volumes": len(x_te), "final_train_loss": float(np.mean(losses[-max(1, len(losses) // max(1, epochs)):])) if losses else None}

