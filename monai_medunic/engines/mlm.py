"""What the cross-lingual masked-LM bundle (``bundles/cxr_text_mlm``) needs beyond the shared engine.

Med-UniC Sec. 3.2 step (3): after the vocabulary extension, the text encoder is trained with BERT's
masked language modelling on randomly mixed English and Spanish reports (15% masking). The training
iteration is the shared :class:`~monai_medunic.engines.step.TrainStep` with the objective
``{"mlm": MaskedLMLoss}`` (:mod:`monai_medunic.losses.mlm`); checkpoints, resume and the loss history
are the shared handlers of :mod:`monai_medunic.engines.handlers`. This module holds the HF-specific parts:

* :func:`load_masked_lm` (HF model from a directory, optional lower-layer freeze), :func:`freeze_lower_layers`;
* :class:`SaveHFPretrained` (the HF-format output directory that the vision-language bundle loads).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from typing import Any

from torch import nn

from monai_medunic.engines.distributed import get_rank
from monai_medunic.errors import ConfigurationError, ModelLoadError
from monai_medunic.text.io_utils import atomic_directory

__all__ = ["load_masked_lm", "freeze_lower_layers", "SaveHFPretrained"]

logger = logging.getLogger(__name__)


def freeze_lower_layers(model: nn.Module, num_layers: int, freeze_embeddings: bool = False) -> int:
    """Freeze the lower ``num_layers`` transformer layers (Med-UniC Sec. 4.5: update only the top layers).

    In the MLM stage the word embeddings stay trainable by default: the new second-language rows
    :math:`\\mathbf{W}_{sp}` are learned here.

    Returns:
        the number of frozen parameters.
    """
    from monai_medunic.networks.text import find_transformer_layers

    if num_layers < 0:
        raise ConfigurationError(f"freeze_layers must be >= 0, got {num_layers}")
    base = getattr(model, "base_model", model)
    layers = find_transformer_layers(base)
    if num_layers > len(layers):
        raise ConfigurationError(f"freeze_layers={num_layers} but the model has {len(layers)} layers")
    frozen = 0
    modules: list[nn.Module] = list(layers[:num_layers])
    if freeze_embeddings and hasattr(base, "embeddings"):
        modules.append(base.embeddings)
    for m in modules:
        for p in m.parameters():
            if p.requires_grad:
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen


def load_masked_lm(model_dir: str | os.PathLike, freeze_layers: int = 0, freeze_embeddings: bool = False,
                   local_files_only: bool = True) -> nn.Module:
    """Load an HF masked-LM (``AutoModelForMaskedLM``) from a directory, optionally freezing lower layers.

    Raises:
        ModelLoadError: the directory is missing or holds no loadable model.
    """
    from transformers import AutoModelForMaskedLM

    path = os.fspath(model_dir)
    if not os.path.isdir(path):
        raise ModelLoadError(f"{path}: model directory not found (build one with build_base_model / build-vocab)")
    try:
        model = AutoModelForMaskedLM.from_pretrained(path, local_files_only=local_files_only)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{path}: cannot load a masked-LM model: {err}") from err
    if freeze_layers or freeze_embeddings:
        n = freeze_lower_layers(model, int(freeze_layers), freeze_embeddings)
        logger.info("froze %d parameters (%d lower layers%s)", n, freeze_layers,
                    " and the embeddings" if freeze_embeddings else "")
    return model


class SaveHFPretrained:
    """At the end of training, save the model and its tokenizer as an HF directory (rank 0, atomically).

    The directory loads with ``AutoTokenizer`` / ``AutoModel(ForMaskedLM).from_pretrained``; it is the
    text encoder that the vision-language bundle consumes. Files in ``extra_files`` (e.g. the loss log)
    and the vocabulary-extension record of ``tokenizer_dir`` are copied along.

    Args:
        output_dir: the HF directory to write (replaced if it exists).
        network: the trained model (a DDP wrapper is unwrapped).
        tokenizer_dir: the directory of the tokenizer the model was trained with.
        extra_files: more files to copy into ``output_dir``.
        event: the Ignite event name to save on (``COMPLETED``).
    """

    def __init__(self, output_dir: str, network: nn.Module, tokenizer_dir: str,
                 extra_files: Iterable[str] = (), event: str = "COMPLETED") -> None:
        self.output_dir = output_dir
        self.network = network
        self.tokenizer_dir = tokenizer_dir
        self.extra_files = list(extra_files)
        self.event = event

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(getattr(Events, self.event), self)

    def __call__(self, engine: Any = None) -> None:
        if get_rank() != 0:
            return
        from monai_medunic.text.tokenize import load_tokenizer
        from monai_medunic.text.vocab import EXTENSION_INFO_FILE

        model = getattr(self.network, "module", self.network)
        tok = load_tokenizer(self.tokenizer_dir)
        with atomic_directory(self.output_dir, overwrite=True) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            for f in [os.path.join(self.tokenizer_dir, "vocab.txt"), os.path.join(self.tokenizer_dir,
                                                                                   EXTENSION_INFO_FILE),
                      *self.extra_files]:
                if os.path.isfile(f):
                    shutil.copy2(f, os.path.join(tmp, os.path.basename(f)))
        logger.info("saved the HF model and tokenizer to %s", self.output_dir)
