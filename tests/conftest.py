"""Shared fixtures: tiny offline models and deterministic seeds."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_BERT = dict(
    model_type="bert",
    vocab_size=120,
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
)


@pytest.fixture
def tiny_bert_config() -> dict:
    return dict(TINY_BERT)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
