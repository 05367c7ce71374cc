"""Evaluation plots (PNG, matplotlib's non-interactive Agg backend).

* :func:`plot_tsne` -- t-SNE of text and image embeddings coloured by language and by finding; the
  picture Med-UniC uses for community bias (Fig. 1), next to the numbers of
  :mod:`monai_medunic.metrics.language_gap`.
* :func:`plot_roc_curves` -- one ROC panel per finding, one curve per prompt language.
* :func:`plot_loss_curves` -- training-loss curves from per-iteration dicts, for one or several runs.
* :func:`plot_similarity_overlay` -- a grounding map (similarity map, Grad-CAM) over its radiograph,
  with the lesion mask's outline when there is one.
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from monai_medunic.errors import MetricInputError

__all__ = ["plot_tsne", "plot_roc_curves", "plot_loss_curves", "plot_similarity_overlay", "finding_names_for_plot"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def finding_names_for_plot(labels, findings: Sequence[str]) -> list[str]:
    """Colour key of each row of ``(N, F)`` binary labels: its single positive finding, ``"No finding"``
    or ``"Several findings"``."""
    y = _np(labels)
    out = []
    for row in y:
        pos = [findings[j] for j in range(len(findings)) if row[j] == 1]
        out.append(pos[0] if len(pos) == 1 else ("No finding" if not pos else "Several findings"))
    return out


def _scatter_by(ax, xy: np.ndarray, keys: Sequence[str], markers: Sequence[str], title: str) -> None:
    cmap = _pyplot().get_cmap("tab10" if len(set(keys)) <= 10 else "tab20")
    for i, key in enumerate(sorted(set(keys))):
        for marker, modality in (("o", "image"), ("^", "text")):
            idx = [j for j, (k, m) in enumerate(zip(keys, markers)) if k == key and m == modality]
            if idx:
                ax.scatter(xy[idx, 0], xy[idx, 1], s=18, marker=marker, color=cmap(i % cmap.N), alpha=0.8,
                           label=f"{key} ({modality})")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=6, loc="best", markerscale=0.8)


def plot_tsne(
    path: str | os.PathLike,
    image_emb,
    image_languages: Sequence[str],
    text_emb=None,
    text_languages: Sequence[str] | None = None,
    image_findings: Sequence[str] | None = None,
    text_findings: Sequence[str] | None = None,
    seed: int = 0,
    title: str = "",
) -> str:
    """t-SNE of image (circles) and text (triangles) embeddings in one map, coloured by language (left)
    and by finding (right, when finding keys are given).

    The perplexity is ``min(30, (n - 1) / 3)`` so that small evaluation sets work.
    """
    from sklearn.manifold import TSNE

    parts, langs, modality, finds = [_np(image_emb)], list(map(str, image_languages)), ["image"] * len(image_languages), []
    if image_findings is not None:
        finds += list(image_findings)
    if text_emb is not None:
        parts.append(_np(text_emb))
        langs += list(map(str, text_languages or []))
        modality += ["text"] * parts[-1].shape[0]
        if text_findings is not None:
            finds += list(text_findings)
    x = np.vstack(parts)
    if len(langs) != x.shape[0]:
        raise MetricInputError(f"t-SNE: {len(langs)} language tags for {x.shape[0]} embeddings")
    if x.shape[0] < 4:
        raise MetricInputError(f"t-SNE needs at least 4 embeddings, got {x.shape[0]}")
    perplexity = float(min(30.0, (x.shape[0] - 1) / 3.0))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    plt = _pyplot()
    by_finding = len(finds) == x.shape[0]
    fig, axes = plt.subplots(1, 2 if by_finding else 1, figsize=(11 if by_finding else 5.5, 5), squeeze=False)
    _scatter_by(axes[0, 0], xy, langs, modality, "coloured by language")
    if by_finding:
        _scatter_by(axes[0, 1], xy, finds, modality, "coloured by finding")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_roc_curves(path: str | os.PathLike, labels, scores: Mapping[str, object], findings: Sequence[str], title: str = "") -> str:
    """ROC curves, one panel per finding and one curve per key of ``scores`` (e.g. prompt language).

    A finding whose labels hold a single class has no ROC curve; its panel says so.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    y = _np(labels)
    if y.ndim != 2 or y.shape[1] != len(findings):
        raise MetricInputError(f"labels must be (samples, {len(findings)}), got {y.shape}")
    plt = _pyplot()
    cols = min(3, len(findings))
    rows = math.ceil(len(findings) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for j, name in enumerate(findings):
        ax = axes[j // cols, j % cols]
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        if len(np.unique(y[:, j])) < 2:
            ax.text(0.5, 0.5, "AUC undefined\n(single class)", ha="center", va="center", fontsize=9)
        else:
            for key, s in scores.items():
                sj = _np(s)[:, j]
                fpr, tpr, _ = roc_curve(y[:, j], sj)
                ax.plot(fpr, tpr, lw=1.4, label=f"{key} (AUC {roc_auc_score(y[:, j], sj):.2f})")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
    for j in range(len(findings), rows * cols):
        axes[j // cols, j % cols].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


_X_KEYS = ("iteration", "step", "epoch")
_RECORDER_KEYS = {"iterations", "validation"}


def _rows_of(run: Sequence[Mapping[str, float]] | Mapping[str, Sequence[Mapping[str, float]]]) -> list:
    """A run's rows: a list of dicts, or the recorder layout ``{"iterations": [...], "validation": [...]}`` merged."""
    if isinstance(run, Mapping):
        rows: list = []
        for part in run.values():
            rows += list(part)
        return rows
    return list(run)


def _x_of(row: Mapping[str, float], i: int) -> tuple[float, str]:
    for key in ("iteration", "step", "epoch"):
        if isinstance(row.get(key), (int, float)):
            return float(row[key]), key
    return float(i + 1), "entry"


def plot_loss_curves(
    history: Sequence[Mapping[str, float]] | Mapping[str, Any],
    path: str | os.PathLike,
    title: str = "training losses",
) -> str:
    """Loss curves from per-iteration dicts such as ``{"iteration": 3, "loss": 2.1, "cvl": 1.3, "ctr": 0.4}``.

    Every numeric key other than ``iteration`` / ``step`` / ``epoch`` gets its own panel, plotted against
    ``iteration`` (else ``step``, else ``epoch``, else the position in the list). Accepted layouts:

    * a list of dicts (one run);
    * the layout of :class:`~monai_medunic.engines.handlers.LossHistoryRecorder`,
      ``{"iterations": [...], "validation": [...]}`` (one run; validation metrics against the epoch);
    * run name -> either of the above (e.g. ``{"with CTR": ..., "without CTR": ...}``): runs are overlaid.
    """
    if isinstance(history, Mapping) and history and set(history) <= _RECORDER_KEYS:
        runs = {"": _rows_of(history)}
    elif isinstance(history, Mapping):
        runs = {str(k): _rows_of(v) for k, v in history.items()}
    else:
        runs = {"": list(history)}
    if not runs or all(len(h) == 0 for h in runs.values()):
        raise MetricInputError("plot_loss_curves: the history is empty")
    keys: list[str] = []
    for h in runs.values():
        for row in h:
            if not isinstance(row, Mapping):
                raise MetricInputError(f"plot_loss_curves: every history entry must be a dict, got {type(row).__name__}")
            for k, v in row.items():
                if k not in _X_KEYS and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys.append(k)
    if not keys:
        raise MetricInputError("plot_loss_curves: no numeric loss values in the history")
    plt = _pyplot()
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for j, key in enumerate(keys):
        ax = axes[j // cols, j % cols]
        x_label = "iteration"
        for run, h in runs.items():
            pts = []
            for i, row in enumerate(h):
                v = row.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
                    x, x_label = _x_of(row, i)
                    pts.append((x, float(v)))
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, lw=1.2, marker="o" if len(pts) < 30 else None, ms=3, label=run or None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x_label, fontsize=8)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    for j in range(len(keys), rows * cols):
        axes[j // cols, j % cols].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.fspath(path)


def plot_similarity_overlay(
    path: str | os.PathLike,
    image,
    saliency,
    mask=None,
    title: str = "",
    alpha: float = 0.45,
    cmap: str = "jet",
) -> str:
    """The radiograph, then one panel per map over it, each in its own value range with a colour bar (so a
    signed similarity map shows its real scale) and a cross at its maximum; the outline of ``mask`` on every panel.

    Args:
        image: ``(H, W)`` display values (e.g. :attr:`~monai_medunic.pretrained.SimilarityMap.image`).
        saliency: an ``(H, W)`` map at the image's size (e.g. :attr:`~monai_medunic.pretrained.SimilarityMap.map`),
            or ``{panel title: map}`` for several maps side by side.
        mask: optional ``(H, W)`` lesion mask, drawn as a white outline.
    """
    img = _np(image)
    maps = {"": saliency} if not isinstance(saliency, Mapping) else dict(saliency)
    if img.ndim != 2 or not maps:
        raise MetricInputError(f"plot_similarity_overlay: the image must be 2D (got {img.shape}) and at least one map given")
    arrays = {}
    for name, sal in maps.items():
        sal = _np(sal)
        if sal.shape != img.shape:
            raise MetricInputError(f"plot_similarity_overlay: the map {name!r} {sal.shape} must have the image's shape {img.shape}")
        if not np.isfinite(sal).all():
            raise MetricInputError(f"plot_similarity_overlay: the map {name!r} holds NaN or infinite values")
        arrays[name] = sal
    m = None
    if mask is not None:
        m = _np(mask) > 0.5
        if m.shape != img.shape:
            raise MetricInputError(f"plot_similarity_overlay: the mask {m.shape} must have the image's shape {img.shape}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1 + len(arrays), figsize=(3.8 * (1 + len(arrays)), 3.8), squeeze=False)
    axes = axes[0]
    axes[0].imshow(img, cmap="gray")
    for ax, (name, sal) in zip(axes[1:], arrays.items()):
        ax.imshow(img, cmap="gray")
        lo, hi = float(sal.min()), float(sal.max())
        shown = ax.imshow(sal, cmap=cmap, alpha=alpha, vmin=lo, vmax=hi if hi > lo else lo + 1e-6)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
        if hi > lo:
            peak = np.unravel_index(int(np.argmax(sal)), sal.shape)
            ax.plot([peak[1]], [peak[0]], marker="+", color="white", markersize=12, mew=2)
        ax.set_title(name if hi > lo else f"{name} (flat map)".strip(), fontsize=8)
    for ax in axes:
        if m is not None and m.any():
            ax.contour(m, levels=[0.5], colors="white", linewidths=1.0)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.fspath(path)
