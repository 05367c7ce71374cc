"""Uni-Mlip's VQA head (Sec. 4.2, "Implementation Details of Downstream Tasks").

"We simplify the model framework with four components: a vision encoder, a text encoder, a one-layer
transformer to fuse vision and text features, and a two-layer MLP to serve as the classification head.
In addition, we append 20 learnable tokens in encoding questions [...]. The vision and text encoders
are initialized with our pre-trained models and then trained with a learning rate of 5e-5. Meanwhile,
the fusion and classification modules are randomly initialized and trained with a higher rate of 5e-4."

:class:`VQAHead` is the fusion and classification part, fed with the encoders' ``tokens``; answers are
the classes of a :class:`monai_medunic.text.answers.AnswerVocabulary`. :class:`VQAModel` assembles it
with the two pre-trained encoders (of any method's network: ``image_encoder`` and ``text_encoder``).
:func:`monai_medunic.engines.optim.encoder_head_param_groups` gives the optimizer the two learning rates.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.fusion import FusionTransformer

__all__ = ["VQAHead", "VQAModel"]


class VQAHead(nn.Module):
    """Answer classification from image tokens and question tokens.

    The question's token features (the text encoder's ``tokens``) get ``num_question_tokens`` learnable
    tokens appended (after the question, unmasked); the image tokens and this extended question are
    fused by a 1-layer :class:`~monai_medunic.networks.fusion.FusionTransformer`; the mean of the
    fused tokens (padding excluded) goes through a 2-layer MLP to one logit per answer.

    Where the 20 tokens enter is our reading of "we append 20 learnable tokens in encoding questions":
    they are appended to the encoded question at the fusion input, so the text encoder stays an
    unmodified HF model; prepending them to the text encoder's input embeddings (prompt tuning) would
    need the text encoder to accept ``inputs_embeds``.

    ``forward(image_tokens (B, N, D_v), question_tokens (B, L, D_t), question_mask (B, L) = None)``
    returns ``{"vqa_logits": (B, num_answers)}``; train with ``torch.nn.CrossEntropyLoss`` on the answer classes.

    Args:
        image_dim, text_dim: token widths of the encoders.
        num_answers: number of answer classes (``len(vocabulary)``).
        num_question_tokens: learnable tokens appended to the question (Uni-Mlip: 20; 0 disables).
        hidden_size, num_heads, mlp_dim, dropout_rate, max_image_tokens: of the fusion layer
            (see :class:`~monai_medunic.networks.fusion.FusionTransformer`).
        num_layers: fusion layers (Uni-Mlip: 1).
        classifier_hidden: hidden width of the 2-layer MLP (default: the fusion width).
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        num_answers: int,
        num_question_tokens: int = 20,
        hidden_size: int | None = None,
        num_layers: int = 1,
        num_heads: int | None = None,
        mlp_dim: int | None = None,
        classifier_hidden: int | None = None,
        dropout_rate: float = 0.1,
        max_image_tokens: int = 256,
    ) -> None:
        super().__init__()
        if num_answers < 2:
            raise ConfigurationError(f"a VQA head needs at least 2 answer classes, got {num_answers}")
        if num_question_tokens < 0:
            raise ConfigurationError(f"num_question_tokens must be >= 0, got {num_question_tokens}")
        self.fusion = FusionTransformer(image_dim, text_dim, hidden_size, num_layers, num_heads, mlp_dim, dropout_rate,
                                        max_image_tokens)
        hidden = self.fusion.hidden_size
        self.question_tokens = nn.Parameter(torch.zeros(1, num_question_tokens, text_dim))
        nn.init.trunc_normal_(self.question_tokens, std=0.02)
        inner = classifier_hidden or hidden
        self.classifier = nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Dropout(dropout_rate), nn.Linear(inner, num_answers))
        self.num_answers = int(num_answers)

    def forward(
        self, image_tokens: torch.Tensor, question_tokens: torch.Tensor, question_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if question_tokens.ndim != 3:
            raise ShapeMismatchError("VQA question tokens", tuple(question_tokens.shape), ("B", "L", "D_t"))
        b, length = question_tokens.shape[:2]
        if question_mask is None:
            question_mask = torch.ones(b, length, dtype=torch.long, device=question_tokens.device)
        elif tuple(question_mask.shape) != (b, length):
            raise ShapeMismatchError("VQA question mask", tuple(question_mask.shape), (b, length))
        learned = self.question_tokens.expand(b, -1, -1).to(question_tokens.dtype)
        text = torch.cat([question_tokens, learned], dim=1)
        mask = torch.cat([question_mask.to(torch.long), question_mask.new_ones(b, learned.shape[1], dtype=torch.long)], dim=1)
        fused = self.fusion(image_tokens, text, mask)
        weights = fused["mask"].unsqueeze(-1).to(fused["tokens"].dtype)
        pooled = (fused["tokens"] * weights).sum(1) / weights.sum(1)
        return {"vqa_logits": self.classifier(pooled)}


class VQAModel(nn.Module):
    """A VQA network: a pre-trained image encoder and text encoder and a :class:`VQAHead` (Uni-Mlip Sec. 4.2).

    ``forward(images (B, C, *spatial), question_ids (B, L), question_mask (B, L) = None)`` returns
    ``{"vqa_logits": (B, num_answers)}``: the image encoder's ``tokens`` and the question's token
    features (the text encoder's ``tokens``) fused by the head.

    Build it from a trained bundle's method network (``load_pretrained_bundle(dir).model``), whose
    ``image_encoder`` and ``text_encoder`` it takes over; fine-tune with the encoders at a lower learning
    rate than the head (:func:`monai_medunic.engines.optim.encoder_head_param_groups`).

    Args:
        image_encoder: returns ``{"tokens": (B, N, D_v)}`` and has ``out_dim`` (:class:`~monai_medunic.networks.ImageEncoder`).
        text_encoder: returns ``{"tokens": (B, L, D_t)}`` and has ``out_dim`` (:class:`~monai_medunic.networks.HFTextEncoder`).
        num_answers, num_question_tokens, hidden_size, num_layers, num_heads, classifier_hidden,
            dropout_rate, max_image_tokens: see :class:`VQAHead`.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        num_answers: int,
        num_question_tokens: int = 20,
        hidden_size: int | None = None,
        num_layers: int = 1,
        num_heads: int | None = None,
        classifier_hidden: int | None = None,
        dropout_rate: float = 0.1,
        max_image_tokens: int = 256,
    ) -> None:
        super().__init__()
        dims = [getattr(image_encoder, "out_dim", None), getattr(text_encoder, "out_dim", None)]
        if None in dims:
            raise ConfigurationError("VQAModel needs encoders that expose their token width as `out_dim`")
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.head = VQAHead(int(dims[0]), int(dims[1]), num_answers, num_question_tokens, hidden_size, num_layers, num_heads,
                            classifier_hidden=classifier_hidden, dropout_rate=dropout_rate, max_image_tokens=max_image_tokens)

    def forward(self, images: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        if images.shape[0] != question_ids.shape[0]:
            raise ShapeMismatchError("VQA images and questions", (images.shape[0],), (question_ids.shape[0],), "one question per image")
        if question_mask is None:
            question_mask = torch.ones_like(question_ids)
        image_tokens = self.image_encoder(images)["tokens"]
        question_tokens = self.text_encoder(question_ids, question_mask)["tokens"]
        return self.head(image_tokens, question_tokens, question_mask)
