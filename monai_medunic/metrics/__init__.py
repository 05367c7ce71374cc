"""Evaluation of vision-language models: bilingual zero-shot classification, image-text retrieval,
the language gap (community bias), linear probing, plots and the ``medunic evaluate`` report.

Heavy modules (:mod:`.report`, :mod:`.probe`, :mod:`.plots`, :mod:`.gradcam`) are imported on use.
"""

from monai_medunic.metrics.language_gap import (
    centroid_gap,
    embedding_gap,
    language_gap_report,
    language_id_probe,
    prompt_agreement,
)
from monai_medunic.metrics.retrieval import paired_ranks, recall_at_k, retrieval_by_language, retrieval_recall
from monai_medunic.metrics.zero_shot import (
    ZeroShotAUC,
    ZeroShotClassifier,
    ZeroShotEvaluation,
    ZeroShotF1,
    ZeroShotPrediction,
    evaluate_zero_shot,
    multilabel_auc,
    multilabel_f1,
    zero_shot_table,
)

__all__ = [
    "ZeroShotAUC",
    "ZeroShotClassifier",
    "ZeroShotEvaluation",
    "ZeroShotF1",
    "ZeroShotPrediction",
    "centroid_gap",
    "embedding_gap",
    "evaluate_zero_shot",
    "language_gap_report",
    "language_id_probe",
    "multilabel_auc",
    "multilabel_f1",
    "paired_ranks",
    "prompt_agreement",
    "recall_at_k",
    "retrieval_by_language",
    "retrieval_recall",
    "zero_shot_table",
]
