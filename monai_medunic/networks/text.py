"""A text encoder that wraps any Hugging Face BERT-style model.

Med-UniC (Sec. 3.2, 4.5 and Table 6) starts from CXR-BERT, extends its vocabulary, post-pre-trains it
with cross-lingual MLM and then, during vision-language pre-training, freezes the lower 9 of its 12
layers ("updating the last three layers offers better results").
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, ModelLoadError

__all__ = ["HFTextEncoder", "find_transformer_layers"]

logger = logging.getLogger(__name__)

# where BERT-style models keep their stack of transformer layers
_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")


def find_transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of transformer layers of a BERT-style model (BERT, RoBERTa, DistilBERT, ...)."""
    for path in _LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigurationError(f"cannot find the transformer layers of {type(model).__name__} (looked at {_LAYER_PATHS})")


class HFTextEncoder(nn.Module):
    """Encode tokenised reports with a Hugging Face BERT-style model and pool one vector per report.

    The model comes from, in order of preference:

    * ``model_name_or_path``: a local directory in HF format (for example the output of the
      ``cxr_text_mlm`` bundle) or a hub id, loaded with ``AutoModel.from_pretrained``. With
      ``local_files_only=True`` (the default) nothing is downloaded.
    * ``config``: a dict for ``transformers.AutoConfig.for_model`` (``{"model_type": "bert", ...}``),
      built with random weights, for offline runs and tests.

    The model's own pooler (BERT's NSP ``pooler``) is removed: it is not trained by MLM and would
    leave parameters without gradients under DDP.

    Args:
        model_name_or_path: HF directory or hub id.
        config: model config dict (used when ``model_name_or_path`` is None).
        freeze_layers: freeze the lower ``N`` transformer layers (Med-UniC's best: 9 of 12).
        freeze_embeddings: freeze the embedding layer (word, position, type embeddings and their
            LayerNorm). Default ``None`` means "frozen whenever ``freeze_layers > 0``": the lower
            layers were trained on those embeddings, and the cross-lingual word embeddings (the new
            Spanish rows included) are learned in the MLM stage, before vision-language pre-training.
            Frozen layers keep their dropout active in train mode, which CTR's dropout view relies on.
        pooling: ``"cls"`` (first token) or ``"mean"`` (attention-masked mean of the last layer).
        local_files_only: never contact a hub.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        config: Mapping[str, Any] | None = None,
        freeze_layers: int = 0,
        freeze_embeddings: bool | None = None,
        pooling: str = "cls",
        local_files_only: bool = True,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("cls", "mean"):
            raise ConfigurationError(f"pooling must be 'cls' or 'mean', got '{pooling}'")
        if model_name_or_path is not None:
            path = os.fspath(model_name_or_path)
            try:
                try:  # BERT-style models: skip the NSP pooler, which this encoder does not use
                    self.model = AutoModel.from_pretrained(path, local_files_only=local_files_only, add_pooling_layer=False)
                except TypeError:  # a model class without that option
                    self.model = AutoModel.from_pretrained(path, local_files_only=local_files_only)
            except (OSError, ValueError) as err:
                raise ModelLoadError(
                    f"cannot load a text model from '{model_name_or_path}': {err.__class__.__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}"
                ) from err
        elif config is not None:
            cfg = dict(config)
            model_type = cfg.pop("model_type", "bert")
            self.model = AutoModel.from_config(AutoConfig.for_model(model_type, **cfg))
        else:
            raise ConfigurationError("HFTextEncoder needs model_name_or_path or config")
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.pooling = pooling
        self.out_dim = int(self.model.config.hidden_size)
        self.layers = find_transformer_layers(self.model)
        self.num_layers = len(self.layers)
        if not 0 <= freeze_layers <= self.num_layers:
            raise ConfigurationError(f"freeze_layers must be in [0, {self.num_layers}], got {freeze_layers}")
        self.freeze_layers = freeze_layers
        self.freeze_embeddings = freeze_layers > 0 if freeze_embeddings is None else bool(freeze_embeddings)
        if self.freeze_embeddings:
            for p in self.model.get_input_embeddings().parameters():
                p.requires_grad_(False)
            embeddings = getattr(self.model, "embeddings", None)
            if embeddings is not None:
                for p in embeddings.parameters():
                    p.requires_grad_(False)
        for layer in self.layers[:freeze_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Returns ``pooled`` ``(B, D_l)`` and ``tokens`` ``(B, L, D_l)`` (last hidden states)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return {"pooled": pooled, "tokens": hidden}
