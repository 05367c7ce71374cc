"""Language gap ("community bias") of embeddings, as numbers instead of t-SNE pictures.

Med-UniC (Wan et al., NeurIPS 2023, Sec. 1 and Fig. 1) argues that cross-lingual vision-language
pre-training lets embeddings cluster by language instead of by meaning, and that its CTR term
(Eq. 5-7) removes that bias. The paper only shows t-SNE plots; this module measures it:

1. :func:`language_id_probe` -- cross-validated accuracy of a logistic regression that predicts the
   language from the embedding. With two balanced languages 0.5 means "no language signal" and 1.0
   means the languages are linearly separable. The majority-class baseline is reported next to it,
   because with unbalanced languages the chance level is the majority share, not 0.5.
2. :func:`centroid_gap` -- distance between the language centroids divided by the mean
   within-language spread (0 means the communities are centred at the same place; values above ~2
   mean the centroids are further apart than a typical embedding is from its own centroid).
3. :func:`prompt_agreement` -- the fraction of zero-shot decisions (image x finding) that agree when
   the same images are classified with English and with Spanish prompts (1.0 = the prompt language
   does not change a single decision).

For image embeddings the "language" is the report language of the study (the data community).
"""

from __future__ import annotations

import itertools
import logging
from typing import Mapping, Sequence

import numpy as np
import torch

from monai_medunic.errors import MetricInputError

__all__ = ["language_id_probe", "centroid_gap", "prompt_agreement", "embedding_gap", "language_gap_report"]

logger = logging.getLogger(__name__)


def _as_array(name: str, x) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise MetricInputError(f"{name} must be (samples, dim), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetricInputError(f"{name} contains NaN or infinite values")
    return arr


def _languages(languages: Sequence[str], n: int, name: str) -> np.ndarray:
    langs = np.asarray([str(x) for x in languages])
    if len(langs) != n:
        raise MetricInputError(f"{name}: {len(langs)} language tags for {n} embeddings")
    if len(np.unique(langs)) < 2:
        raise MetricInputError(
            f"{name}: a language gap needs embeddings of at least two languages, got only {sorted(set(langs.tolist()))}"
        )
    return langs


def language_id_probe(embeddings, languages: Sequence[str], max_folds: int = 5, seed: int = 0, name: str = "embeddings") -> dict:
    """Cross-validated language-identification accuracy of a linear probe.

    A ``StandardScaler`` + ``LogisticRegression`` pipeline (scikit-learn) is evaluated with stratified
    k-fold cross-validation, ``k = min(max_folds, smallest language count)``; the scaler is fitted on
    the training folds only.

    Returns:
        ``{"probe_accuracy", "probe_accuracy_std", "majority_baseline", "folds", "n", "counts"}``.

    Raises:
        MetricInputError: fewer than two languages, or a language with fewer than two embeddings
            (no fold can hold it out).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _as_array(name, embeddings)
    y = _languages(languages, x.shape[0], name)
    values, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        rare = [str(v) for v, c in zip(values, counts) if c < 2]
        raise MetricInputError(f"{name}: the language-ID probe needs at least 2 embeddings per language; too few for {rare}")
    k = int(min(max_folds, counts.min()))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, x, y, cv=cv, scoring="accuracy")
    return {
        "probe_accuracy": float(scores.mean()),
        "probe_accuracy_std": float(scores.std()),
        "majority_baseline": float(counts.max() / counts.sum()),
        "folds": k,
        "n": int(x.shape[0]),
        "counts": {str(v): int(c) for v, c in zip(values, counts)},
    }


def centroid_gap(embeddings, languages: Sequence[str], name: str = "embeddings") -> float | None:
    """Distance between language centroids over the mean within-language spread.

    ``spread_l`` is the mean Euclidean distance of language ``l``'s embeddings to their centroid
    ``mu_l``; the gap is ``mean_{a<b} ||mu_a - mu_b|| / mean_l spread_l`` (languages weighted equally,
    whatever their size). Embeddings are used as given (the joint-space embeddings are already
    L2-normalised).

    Returns:
        the gap, or ``None`` when it is undefined (every language collapsed to a single point).
    """
    x = _as_array(name, embeddings)
    y = _languages(languages, x.shape[0], name)
    langs = sorted(set(y.tolist()))
    centroids = {lang: x[y == lang].mean(axis=0) for lang in langs}
    spread = float(np.mean([np.linalg.norm(x[y == lang] - centroids[lang], axis=1).mean() for lang in langs]))
    dist = float(np.mean([np.linalg.norm(centroids[a] - centroids[b]) for a, b in itertools.combinations(langs, 2)]))
    if spread <= 1e-12:
        logger.warning("%s: centroid gap undefined: every language collapsed to one point (spread 0)", name)
        return None
    return dist / spread


def prompt_agreement(decisions_a, decisions_b) -> float:
    """Fraction of equal binary decisions (e.g. English-prompt vs Spanish-prompt zero-shot decisions
    for the same images and findings)."""
    a = decisions_a.detach().cpu().numpy() if isinstance(decisions_a, torch.Tensor) else np.asarray(decisions_a)
    b = decisions_b.detach().cpu().numpy() if isinstance(decisions_b, torch.Tensor) else np.asarray(decisions_b)
    if a.shape != b.shape:
        raise MetricInputError(f"prompt agreement needs decisions of the same shape, got {a.shape} and {b.shape}")
    if a.size == 0:
        raise MetricInputError("prompt agreement needs at least one decision")
    return float((a.astype(bool) == b.astype(bool)).mean())


def embedding_gap(embeddings, languages: Sequence[str], name: str = "embeddings", max_folds: int = 5, seed: int = 0) -> dict:
    """The language-ID probe and the centroid gap of one set of embeddings.

    Undefined values (one language only, too few samples) are reported as ``None`` with the reason in
    ``"note"`` instead of raising, so that an evaluation report is still written.
    """
    try:
        out = language_id_probe(embeddings, languages, max_folds=max_folds, seed=seed, name=name)
    except MetricInputError as err:
        logger.warning("language-ID probe undefined: %s", err)
        out = {"probe_accuracy": None, "majority_baseline": None, "note": str(err)}
    try:
        out["centroid_gap"] = centroid_gap(embeddings, languages, name=name)
    except MetricInputError as err:
        out["centroid_gap"] = None
        out.setdefault("note", str(err))
    return out


def language_gap_report(
    text_emb,
    text_languages: Sequence[str],
    image_emb,
    image_languages: Sequence[str],
    decisions: Mapping[str, torch.Tensor | np.ndarray] | None = None,
    pair: tuple[str, str] = ("en", "es"),
    max_folds: int = 5,
    seed: int = 0,
) -> dict:
    """All three gap numbers: ``{"text": {...}, "image": {...}, "prompt_agreement": float | None}``.

    Args:
        text_emb, text_languages: report embeddings and the report languages.
        image_emb, image_languages: image embeddings and the report language of each study.
        decisions: zero-shot decisions ``(N, F)`` per prompt language (same images in every language).
        pair: the two prompt languages compared by the agreement.
    """
    out = {
        "text": embedding_gap(text_emb, text_languages, "text embeddings", max_folds, seed),
        "image": embedding_gap(image_emb, image_languages, "image embeddings", max_folds, seed),
        "prompt_agreement": None,
    }
    if decisions is not None:
        if all(p in decisions for p in pair):
            out["prompt_agreement"] = prompt_agreement(decisions[pair[0]], decisions[pair[1]])
        else:
            out["prompt_agreement_note"] = f"needs zero-shot decisions in both prompt languages {list(pair)}"
    return out

