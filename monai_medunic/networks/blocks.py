"""Small helpers shared by the transformer-based networks."""

from __future__ import annotations

from torch import nn

__all__ = ["freeze_unused_cross_attention_norms"]


def freeze_unused_cross_attention_norms(module: nn.Module) -> int:
    """Stop training the ``norm_cross_attn`` LayerNorm of MONAI ``TransformerBlock``s built without cross-attention.

    MONAI builds that LayerNorm in every block but only runs it with ``with_cross_attention=True``; its
    parameters would never get a gradient, which stalls DDP (``find_unused_parameters=False``) and
    leaves them out of every update anyway. Returns the number of blocks changed.
    """
    from monai.networks.blocks import TransformerBlock

    n = 0
    for block in module.modules():
        if isinstance(block, TransformerBlock) and not getattr(block, "with_cross_attention", False):
            block.norm_cross_attn.requires_grad_(False)
            n += 1
    return n
