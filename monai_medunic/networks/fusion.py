"""Multimodal fusion transformer and Uni-Mlip's fused-modal masked language model (Sec. 3.4, Eq. 3).

"The visual and masked linguistic features obtained from the image and text encoder are fused by a
multimodal transformer-based fusion module. The fusion module generates the full caption by replacing
the [mask] token with the predicted text token" (Bawazir & Wu, Sec. 3.4); "our fusion module employs
four transformer layers to concatenate image and text embedding" (Sec. 4.2).

:class:`FusionTransformer` is that single-stream fusion: the report tokens and the image tokens are
projected to one width, tagged with a modality embedding (and the image tokens with a learned position
embedding; the text tokens carry the text encoder's positions), concatenated and passed through MONAI
``TransformerBlock`` s (pre-norm self-attention; the padding of the report is masked as keys).
Cross-attention blocks are not used: the paper concatenates. :class:`FusedMaskedLM` adds a BERT-style
MLM head over the text vocabulary; its logits go to :class:`monai_medunic.losses.MaskedLMLoss`, which
is Eq. 3: ``L_MLM = E[CE(y_mask, p_mask(V, C))]`` over the masked positions only.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import TransformerBlock
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.blocks import freeze_unused_cross_attention_norms
from monai_medunic.text.masking import IGNORE_INDEX

__all__ = ["FusionTransformer", "FusedMaskedLM"]


def _heads(hidden_size: int, num_heads: int | None) -> int:
    heads = num_heads or max(1, hidden_size // 64)
    if hidden_size % heads:
        raise ConfigurationError(f"fusion hidden_size {hidden_size} is not divisible by num_heads {heads}")
    return heads


class FusionTransformer(nn.Module):
    """Fuse text tokens ``(B, L, D_t)`` and image tokens ``(B, N, D_v)`` with ``num_layers`` transformer blocks.

    ``forward(image_tokens, text_tokens, text_mask=None)`` returns a dict:
        ``tokens``: ``(B, L + N, H)`` the fused sequence, text first;
        ``text_tokens``: ``(B, L, H)`` its text part; ``image_tokens``: ``(B, N, H)`` its image part;
        ``mask``: ``(B, L + N)`` 1 where a token is real (image tokens are always real).

    Args:
        image_dim: width of the image tokens (the encoder's ``tokens``, e.g. 2048 for ResNet-50).
        text_dim: width of the text tokens (the text encoder's hidden size).
        hidden_size: fusion width (default ``text_dim``).
        num_layers: transformer blocks (Uni-Mlip pre-training: 4; its VQA head: 1).
        num_heads: attention heads (default ``hidden_size // 64``, at least 1).
        mlp_dim: feed-forward width (default ``4 * hidden_size``).
        dropout_rate: dropout in the blocks.
        max_image_tokens: size of the learned image position table (a 7x7 ResNet grid needs 49).
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        hidden_size: int | None = None,
        num_layers: int = 4,
        num_heads: int | None = None,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.1,
        max_image_tokens: int = 256,
    ) -> None:
        super().__init__()
        hidden = int(hidden_size or text_dim)
        if num_layers < 1:
            raise ConfigurationError(f"the fusion transformer needs at least 1 layer, got {num_layers}")
        heads = _heads(hidden, num_heads)
        self.image_dim, self.text_dim, self.hidden_size = int(image_dim), int(text_dim), hidden
        self.image_proj = nn.Linear(image_dim, hidden)
        self.text_proj = nn.Linear(text_dim, hidden) if text_dim != hidden else nn.Identity()
        self.modality_embed = nn.Embedding(2, hidden)  # 0: text, 1: image
        self.image_pos_embed = nn.Parameter(torch.zeros(1, max_image_tokens, hidden))
        nn.init.trunc_normal_(self.image_pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden, mlp_dim or 4 * hidden, heads, dropout_rate, qkv_bias=True) for _ in range(num_layers)
        )
        freeze_unused_cross_attention_norms(self.blocks)
        self.norm = nn.LayerNorm(hidden)

    def forward(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, text_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        if image_tokens.ndim != 3 or text_tokens.ndim != 3 or image_tokens.shape[0] != text_tokens.shape[0]:
            raise ShapeMismatchError("fusion inputs (image tokens, text tokens)", tuple(image_tokens.shape),
                                     tuple(text_tokens.shape), "expected (B, N, D_v) and (B, L, D_t) with one batch size")
        if image_tokens.shape[-1] != self.image_dim or text_tokens.shape[-1] != self.text_dim:
            raise ShapeMismatchError("fusion token widths (image, text)", (image_tokens.shape[-1], text_tokens.shape[-1]),
                                     (self.image_dim, self.text_dim))
        b, n, length = image_tokens.shape[0], image_tokens.shape[1], text_tokens.shape[1]
        if n > self.image_pos_embed.shape[1]:
            raise ConfigurationError(f"{n} image tokens exceed max_image_tokens={self.image_pos_embed.shape[1]} of the fusion module")
        if text_mask is None:
            text_mask = torch.ones(b, length, dtype=torch.long, device=text_tokens.device)
        elif tuple(text_mask.shape) != (b, length):
            raise ShapeMismatchError("fusion text mask", tuple(text_mask.shape), (b, length))
        text = self.text_proj(text_tokens) + self.modality_embed.weight[0]
        image = self.image_proj(image_tokens) + self.image_pos_embed[:, :n] + self.modality_embed.weight[1]
        x = torch.cat([text, image.to(text.dtype)], dim=1)
        mask = torch.cat([text_mask.to(torch.long), text_mask.new_ones(b, n, dtype=torch.long)], dim=1)
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x)
        return {"tokens": x, "text_tokens": x[:, :length], "image_tokens": x[:, length:], "mask": mask}


class FusedMaskedLM(nn.Module):
    """Uni-Mlip's fused-modal MLM (Sec. 3.4): a :class:`FusionTransformer` over the image tokens and the
    *masked* report tokens, and a BERT MLM head (dense, GELU, LayerNorm, decoder) over the vocabulary.

    ``forward(image_tokens, text_tokens, attention_mask=None, labels=None)`` returns a dict:
        ``mlm_logits``: ``(B, L, V)`` token predictions for every text position; or, when ``labels``
        ``(B, L)`` are given, ``(M, V)`` for the ``M`` masked positions only (labels ``!= -100``),
        with ``mlm_labels`` ``(M,)`` their targets: the same loss at a fraction of the ``L x V`` memory;
        ``fused_text_tokens``: ``(B, L, H)``.

    Feed ``mlm_logits`` and the labels (``mlm_labels``, or the batch's ``labels`` written by
    :class:`~monai_medunic.text.masking.RandMaskTokensd`) to :class:`~monai_medunic.losses.MaskedLMLoss` (Eq. 3).

    Args:
        image_dim, text_dim, hidden_size, num_heads, mlp_dim, dropout_rate, max_image_tokens: see
            :class:`FusionTransformer`.
        vocab_size: size of the text vocabulary (``len(tokenizer)``).
        num_layers: fusion depth (Uni-Mlip: 4).
        ignore_index: label of the positions that are not predicted.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int,
        vocab_size: int,
        hidden_size: int | None = None,
        num_layers: int = 4,
        num_heads: int | None = None,
        mlp_dim: int | None = None,
        dropout_rate: float = 0.1,
        max_image_tokens: int = 256,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ConfigurationError(f"vocab_size must be >= 2, got {vocab_size}")
        self.fusion = FusionTransformer(image_dim, text_dim, hidden_size, num_layers, num_heads, mlp_dim, dropout_rate,
                                        max_image_tokens)
        hidden = self.fusion.hidden_size
        self.mlm_head = nn.Sequential(
            nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, vocab_size)
        )
        self.vocab_size = int(vocab_size)
        self.ignore_index = ignore_index

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        fused = self.fusion(image_tokens, text_tokens, attention_mask)["text_tokens"]
        out = {"fused_text_tokens": fused}
        if labels is None:
            out["mlm_logits"] = self.mlm_head(fused)
            return out
        if tuple(labels.shape) != tuple(fused.shape[:2]):
            raise ShapeMismatchError("MLM labels", tuple(labels.shape), tuple(fused.shape[:2]), "one label per text token")
        selected = labels != self.ignore_index
        out["mlm_logits"] = self.mlm_head(fused[selected])
        out["mlm_labels"] = labels[selected]
        return out
