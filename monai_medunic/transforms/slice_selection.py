"""Attentive slice selection of UniMedI as pure tensor functions, and a transform that cuts slices out of a volume.

He et al., "Unified Medical Image Pre-training in Language-Guided Common Semantic Space" (UniMedI),
Sec. 3.2 (``shared/papers/unimedi.txt``):

* Eq. 1: the attention of the ``[CLS]`` token to the image patch tokens,
  ``a = mean_{l in last L layers} mean_h softmax(q^{l,h}_cls K^{l,h T}_patch / sqrt(d))``. The softmax
  runs over the patch tokens only (the CLS column is left out and the row renormalised, which is
  exactly a softmax over the patches). **L**: the paper names the layer index ``l`` of its ``L``
  layers, so the default here is *every* layer of the encoder (``last_layers=None``); a smaller ``L``
  (e.g. 1, the last layer only, as DINO's attention maps) is one argument away.
* Eq. 2: the relevance of slice ``i`` is the mean of ``a`` over the ``N`` tokens of that slice; the
  top-``k`` slices become pseudo-2D images paired with the volume's report.

Slices and slabs. The network input is ``(B, C, D, H, W)`` with ``D`` the slice axis, and the 3D
tokenizer groups ``patch_depth`` consecutive slices into one token layer (a *slab*; token order is
depth-major ``(d, h, w)``, as MONAI's ``PatchEmbeddingBlock`` flattens its convolution output). Eq. 2's
"slice" is therefore a slab of ``patch_depth`` voxel slices: scores and top-k are per slab, and
:func:`slab_to_voxel_slices` / :func:`voxel_slice_scores` map them back to voxel slices. MONAI's
volume loaders give ``(C, X, Y, Z)`` with slices on the last axis; move that axis to the front first.

Nothing here imports the networks: running a network on a volume is
:func:`monai_medunic.networks.unimedi.select_slices`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_medunic.errors import ConfigurationError, DataError, ShapeMismatchError

__all__ = [
    "SLICE_SELECTION_MODES",
    "cls_patch_attention",
    "slice_relevance",
    "top_k_slices",
    "middle_slices",
    "random_slices",
    "choose_slices",
    "slab_to_voxel_slices",
    "voxel_slice_scores",
    "extract_slices",
    "SelectSlices",
    "SelectSlicesd",
    "RequireSlices",
    "RequireSlicesd",
]

SLICE_SELECTION_MODES = ("attention", "random", "middle")


def cls_patch_attention(attention: torch.Tensor, last_layers: int | None = None) -> torch.Tensor:
    """UniMedI Eq. 1: CLS-to-patch attention averaged over heads and over the last ``last_layers`` layers.

    Args:
        attention: ``(B, layers, heads, N)`` CLS-to-patch attention rows (each row sums to 1 over ``N``).
        last_layers: ``L``; ``None`` averages every layer.

    Returns:
        ``(B, N)`` float32, rows summing to 1.
    """
    if attention.ndim != 4:
        raise ShapeMismatchError("CLS attention", tuple(attention.shape), ("B", "layers", "heads", "N"))
    layers = attention.shape[1]
    if last_layers is not None and not 1 <= last_layers <= layers:
        raise ConfigurationError(f"last_layers must be in [1, {layers}] (the encoder's layers), got {last_layers}")
    used = attention if last_layers is None else attention[:, layers - last_layers :]
    return used.float().mean(dim=(1, 2))


def slice_relevance(token_scores: torch.Tensor, grid: Sequence[int], offset: int = 0) -> torch.Tensor:
    """UniMedI Eq. 2: the mean token score of each slab of a 3D token grid.

    Args:
        token_scores: ``(B, N)`` per-token scores (e.g. :func:`cls_patch_attention`).
        grid: ``(d, h, w)`` token grid of the volume.
        offset: index of the volume's first token in ``token_scores`` (0 when the volume comes first).

    Returns:
        ``(B, d)`` slab relevance scores.
    """
    if len(grid) != 3:
        raise ConfigurationError(f"slice_relevance needs a 3D token grid (d, h, w), got {tuple(grid)}")
    d, h, w = (int(g) for g in grid)
    n = d * h * w
    if token_scores.ndim != 2 or token_scores.shape[1] < offset + n:
        raise ShapeMismatchError(
            "slice_relevance token scores", tuple(token_scores.shape), ("B", f">={offset + n}"), f"grid {tuple(grid)} at offset {offset}"
        )
    return token_scores[:, offset : offset + n].reshape(-1, d, h * w).mean(dim=-1)


def _check_depth(num_slices: int, k: int, names: Sequence[str] | None, batch: int) -> None:
    if k < 1:
        raise ConfigurationError(f"the number of selected slices k must be >= 1, got {k}")
    if num_slices < k:
        name = names[0] if names else None
        raise DataError(
            f"volume has {num_slices} slices (token slabs) but k={k} slices are to be selected; "
            "use a thicker volume or a smaller k",
            path=name if name else "volume",
            field="slices",
        )
    if names is not None and len(names) != batch:
        raise ConfigurationError(f"{len(names)} volume names for a batch of {batch}")


def top_k_slices(scores: torch.Tensor, k: int, names: Sequence[str] | None = None) -> torch.Tensor:
    """The ``k`` highest-scoring slices of each volume, best first.

    Args:
        scores: ``(B, S)`` per-slice (slab) scores.
        k: slices to keep.
        names: one name per volume (its file), used in the error message.

    Raises:
        DataError: a volume has fewer than ``k`` slices (names the volume).
    """
    if scores.ndim != 2:
        raise ShapeMismatchError("slice scores", tuple(scores.shape), ("B", "S"))
    _check_depth(scores.shape[1], k, names, scores.shape[0])
    return scores.topk(k, dim=1).indices


def middle_slices(batch: int, num_slices: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The ``k`` central slices of a ``num_slices`` volume (a baseline for slice selection), ``(batch, k)``."""
    _check_depth(num_slices, k, None, batch)
    start = (num_slices - k) // 2
    return torch.arange(start, start + k, device=device).expand(batch, k).clone()


def random_slices(
    batch: int, num_slices: int, k: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """``k`` distinct uniformly random slices per volume (the "no slice selection" ablation), ``(batch, k)``."""
    _check_depth(num_slices, k, None, batch)
    noise = torch.rand(batch, num_slices, generator=generator)
    return noise.topk(k, dim=1).indices.to(device)


def choose_slices(mode: str, scores: torch.Tensor | None, batch: int, num_slices: int, k: int,
                  names: Sequence[str] | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Dispatch on ``mode`` (:data:`SLICE_SELECTION_MODES`): ``attention`` (top-k of ``scores``), ``random``, ``middle``."""
    if mode == "attention":
        if scores is None:
            raise ConfigurationError("slice selection mode 'attention' needs slice scores")
        return top_k_slices(scores, k, names)
    if mode == "random":
        return random_slices(batch, num_slices, k, device=device)
    if mode == "middle":
        return middle_slices(batch, num_slices, k, device=device)
    raise ConfigurationError(f"slice selection mode must be one of {SLICE_SELECTION_MODES}, got '{mode}'")


def slab_to_voxel_slices(indices: torch.Tensor, patch_depth: int) -> torch.Tensor:
    """The central voxel slice of each slab index: ``i * patch_depth + patch_depth // 2``."""
    return indices * patch_depth + patch_depth // 2


def voxel_slice_scores(slab_scores: torch.Tensor, patch_depth: int) -> torch.Tensor:
    """Per-voxel-slice scores ``(B, S * patch_depth)``: each slice gets its slab's score."""
    return slab_scores.repeat_interleave(patch_depth, dim=-1)


def extract_slices(
    volumes: torch.Tensor,
    indices: torch.Tensor,
    patch_depth: int = 1,
    size: Sequence[int] | int | None = None,
    reduce: str = "center",
) -> torch.Tensor:
    """Cut the selected slabs out of ``volumes`` as 2D images.

    Args:
        volumes: ``(B, C, D, H, W)``.
        indices: ``(B, k)`` slab indices (slices when ``patch_depth == 1``).
        patch_depth: voxel slices per slab.
        size: resize each slice to this ``(h, w)`` (bilinear, antialiased when shrinking), e.g. the
            2D tokenizer's input size; ``None`` keeps ``(H, W)``.
        reduce: ``center``: the slab's central voxel slice (a CT slice, the paper's "2D slice");
            ``mean``: the mean over the slab's slices (a thin-slab average).

    Returns:
        ``(B, k, C, h, w)``.
    """
    if volumes.ndim != 5:
        raise ShapeMismatchError("extract_slices volumes", tuple(volumes.shape), ("B", "C", "D", "H", "W"))
    if indices.ndim != 2 or indices.shape[0] != volumes.shape[0]:
        raise ShapeMismatchError("extract_slices indices", tuple(indices.shape), (volumes.shape[0], "k"))
    b, c, depth, hh, ww = volumes.shape
    k = indices.shape[1]
    idx = indices.to(volumes.device).long()
    if int(idx.min()) < 0 or int(idx.max()) * patch_depth + patch_depth > depth:
        raise ShapeMismatchError("extract_slices indices", (int(idx.min()), int(idx.max())), (0, depth // patch_depth - 1),
                                 f"slab indices out of range for depth {depth} and patch_depth {patch_depth}")
    if reduce == "center":
        vox = slab_to_voxel_slices(idx, patch_depth)
        out = volumes.gather(2, vox.view(b, 1, k, 1, 1).expand(b, c, k, hh, ww))
    elif reduce == "mean":
        offs = torch.arange(patch_depth, device=idx.device)
        vox = (idx.unsqueeze(-1) * patch_depth + offs).reshape(b, k * patch_depth)
        out = volumes.gather(2, vox.view(b, 1, -1, 1, 1).expand(b, c, k * patch_depth, hh, ww))
        out = out.view(b, c, k, patch_depth, hh, ww).mean(dim=3)
    else:
        raise ConfigurationError(f"reduce must be 'center' or 'mean', got '{reduce}'")
    out = out.transpose(1, 2)  # (B, k, C, H, W)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(size) != (hh, ww):
            flat = out.reshape(b * k, c, hh, ww)
            shrink = size[0] < hh or size[1] < ww
            flat = F.interpolate(flat.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
            out = flat.to(volumes.dtype).reshape(b, k, c, *size)
    return out


_GEOMETRY_KEYS = ("affine", "original_affine", "spatial_shape", "original_channel_dim")


def _volume_name(img: Any) -> str:
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return str(name) if name else "volume"


class SelectSlices(Transform):
    """Cut ``k`` slices out of one channel-first volume: the top-``k`` by given scores, random, or middle.

    Input ``(C, *spatial)`` with the slice axis ``slice_axis`` among the spatial axes (``-1``: the last,
    ``Z`` for MONAI's loaders); output ``(k, C, *in-plane)`` with the chosen slice indices (ascending
    score rank) in ``meta["selected_slices"]``, and the scores, if given, in ``meta["slice_scores"]``.

    Args:
        k: slices to select.
        mode: ``attention`` (needs ``scores``), ``random`` or ``middle`` (see :data:`SLICE_SELECTION_MODES`).
        slice_axis: spatial axis of the slices.

    Raises:
        DataError: the volume has fewer than ``k`` slices (names its file).
    """

    def __init__(self, k: int, mode: str = "attention", slice_axis: int = -1) -> None:
        if mode not in SLICE_SELECTION_MODES:
            raise ConfigurationError(f"mode must be one of {SLICE_SELECTION_MODES}, got '{mode}'")
        self.k, self.mode, self.slice_axis = int(k), mode, int(slice_axis)

    def __call__(self, img: torch.Tensor, scores: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:  # type: ignore[override]
        name = _volume_name(img)
        if img.ndim != 4:
            raise DataError(f"expected a channel-first 3D volume (C, X, Y, Z), got shape {tuple(img.shape)}", path=name)
        axis = 1 + (self.slice_axis % 3)
        depth = img.shape[axis]
        if scores is not None:
            scores = torch.as_tensor(scores, dtype=torch.float32).flatten()
            if scores.numel() != depth:
                raise DataError(f"{scores.numel()} slice scores for a volume of {depth} slices", path=name, field="slice_scores")
        _check_depth(depth, self.k, [name], 1)
        idx = choose_slices(self.mode, None if scores is None else scores[None], 1, depth, self.k, [name])[0]
        arr = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
        out = torch.movedim(arr, axis, 0)[idx.to(arr.device)]  # (k, C, ...)
        # the 3D geometry does not describe a stack of slices: keep the rest of the meta, drop the affine
        meta = {m: v for m, v in (getattr(img, "meta", None) or {}).items() if m not in _GEOMETRY_KEYS}
        meta.update(filename_or_obj=name, selected_slices=idx.tolist(), slice_axis=self.slice_axis)
        if scores is not None:
            meta["slice_scores"] = scores.tolist()
        return MetaTensor(out, meta=meta)


class SelectSlicesd(MapTransform):
    """Dictionary form of :class:`SelectSlices`: reads the volume at each key and the scores at ``scores_key``,
    writes the slices at ``output_key`` (default: the key itself) and the indices at ``indices_key``."""

    def __init__(self, keys: KeysCollection, k: int, mode: str = "attention", slice_axis: int = -1,
                 scores_key: str | None = "slice_scores", output_key: str | None = None,
                 indices_key: str = "selected_slices", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.selector = SelectSlices(k, mode, slice_axis)
        self.scores_key, self.output_key, self.indices_key = scores_key, output_key, indices_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        scores = d.get(self.scores_key) if self.scores_key else None
        for key in self.key_iterator(d):
            out = self.selector(d[key], scores)
            d[self.output_key or key] = out
            d[self.indices_key] = out.meta["selected_slices"]
        return d


class RequireSlices(Transform):
    """Refuse a volume with fewer than ``min_slices`` slices, before it is resampled to the network's size.

    A volume thinner than the ``k`` slices to select (or a 2D image given where a volume is expected:
    a single slice) would otherwise be interpolated into a full-depth volume of invented slices.
    Input: a channel-first ``(C, *spatial)`` volume (MONAI's loaders: ``(C, X, Y, Z)``), the slices
    along ``slice_axis``; returned unchanged.

    Args:
        min_slices: the fewest slices accepted (e.g. ``max(2, k)``).
        slice_axis: spatial axis of the slices (``-1``: ``Z``).

    Raises:
        DataError: too few slices, or not a channel-first 3D volume (names the file and ``field="slices"``).
    """

    def __init__(self, min_slices: int, slice_axis: int = -1) -> None:
        if int(min_slices) < 1:
            raise ConfigurationError(f"min_slices must be >= 1, got {min_slices}")
        self.min_slices, self.slice_axis = int(min_slices), int(slice_axis)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        name = _volume_name(img)
        if img.ndim != 4:
            raise DataError(f"expected a channel-first 3D volume (C, X, Y, Z), got shape {tuple(img.shape)} "
                            "(a 2D image given as a volume?)", path=name, field="slices")
        depth = int(img.shape[1 + self.slice_axis % 3])
        if depth < self.min_slices:
            hint = " (a single 2D image given as a volume?)" if depth == 1 else ""
            raise DataError(f"the volume has {depth} slice(s), fewer than the {self.min_slices} needed "
                            f"(k slices are selected from it){hint}", path=name, field="slices")
        return img


class RequireSlicesd(MapTransform):
    """Dictionary form of :class:`RequireSlices`."""

    def __init__(self, keys: KeysCollection, min_slices: int, slice_axis: int = -1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = RequireSlices(min_slices, slice_axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
