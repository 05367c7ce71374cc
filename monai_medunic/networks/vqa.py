"""Uni-Mlip's VQA head (Sec. 4.2, "Implementation Details of Downstream Tasks").

"We simplify the model framework with four components: a vision encoder, a text encoder, a one-layer
transformer to fuse vision and text features, and a two-layer MLP to serve as the classification head.
In addition, we append 20 learnable tokens in encoding questions [...]. The vision and text encoders
are initialized with our pre-trained models and then trained with a learning rate of 5e-5. Meanwhile,
the fusion and classification modules are randomly initialized and trained with a higher rate of 5e-4."

:class:`VQAHead` is the fusion and classification part, fed with the encoders' ``tokens``; answers are
the classes of a :class:`monai_medunic.text.answers.AnswerVocabulary`. :func:`encoder_head_param_groups`
gives the optimizer the two learning rates.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.fusion import FusionTransformer

__all__ = ["VQAHead", "encoder_head_param_groups"]


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


def encoder_head_param_groups(
    network: nn.Module,
    encoder_lr: float = 5e-5,
    head_lr: float = 5e-4,
    encoders: Sequence[str] = ("image_encoder", "text_encoder"),
    objective: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: the pre-trained encoders at ``encoder_lr``, everything else (fusion,
    question tokens, classifier, and the trainable parameters of ``objective``) at ``head_lr``.

    Uni-Mlip Sec. 4.2 (VQA): encoders 5e-5, fusion and classification 5e-4. Frozen parameters
    (``requires_grad=False``) are left out; a parameter shared between modules is listed once. Groups
    carry a ``name`` (``"encoders"``, ``"head"``) for logging; schedulers scale each group's rate.
    Use in a bundle config as ``"params": {"_target_": "monai_medunic.networks.vqa.encoder_head_param_groups",
    "network": "@network"}``.

    Args:
        network: the VQA model (DDP-wrapped or not).
        encoder_lr, head_lr: the two learning rates.
        encoders: dotted sub-module paths of the encoders in ``network``.
        objective: a loss module with trainable parameters, put in the head group.

    Raises:
        ConfigurationError: a negative rate, an encoder path the network does not have, or no
            trainable parameter at all.
    """
    if encoder_lr < 0 or head_lr < 0:
        raise ConfigurationError(f"learning rates must be >= 0, got encoder_lr={encoder_lr}, head_lr={head_lr}")
    net = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    seen: set[int] = set()
    encoder_params: list[nn.Parameter] = []
    for path in encoders:
        try:
            module = net.get_submodule(path)
        except AttributeError as err:
            children = [n for n, _ in net.named_children()]
            raise ConfigurationError(f"the network has no encoder '{path}'; its sub-modules are {children}") from err
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                encoder_params.append(p)
    head_params: list[nn.Parameter] = []
    for module in (net, objective):
        for p in module.parameters() if module is not None else ():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                head_params.append(p)
    groups = [
        {"params": encoder_params, "lr": float(encoder_lr), "name": "encoders"},
        {"params": head_params, "lr": float(head_lr), "name": "head"},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigurationError("no trainable parameter: every parameter of the network is frozen")
    return groups
