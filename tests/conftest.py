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


REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
DEMO_FINDING_KEYS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]
_TOKENIZER_TEXTS = [
    "No pleural effusion. Heart size is normal. No pneumothorax.",
    "Cardiomegaly with bilateral edema. Small nodule in the right lung. Consolidation.",
    "Sin derrame pleural. No hay neumotórax. Cardiomegalia. Nódulo. Consolidación. Edema.",
    "No hay derrame pleural ni consolidación. Silueta cardiaca normal.",
]


def make_tiny_tokenizer(out_dir) -> "object":
    """A real WordPiece tokenizer trained with HF tokenizers on a few bilingual report lines."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    out_dir = __import__("pathlib").Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wp.train_from_iterator(_TOKENIZER_TEXTS * 5, vocab_size=200, min_frequency=1)
    wp.save_model(str(out_dir))
    return BertTokenizerFast.from_pretrained(str(out_dir), local_files_only=True)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> "object":
    """An (untrained) tiny Med-UniC exported in the real trained-bundle layout of cxr_medunic_pretrain."""
    import shutil

    from monai_medunic.networks import MedUniC
    from monai_medunic.pretrained import export_pretrained_bundle

    root = tmp_path_factory.mktemp("bundle") / "cxr_medunic_pretrain"
    src = REPO_ROOT / "bundles" / "cxr_medunic_pretrain"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    tok = make_tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    cfg = dict(TINY_BERT, vocab_size=len(tok))
    model = MedUniC("resnet18", text_config=cfg, img_size=64, embed_dim=32, ctr_dim=64).eval()
    export_pretrained_bundle(model, tok, root, findings=DEMO_FINDING_KEYS, max_length=32)
    shutil.rmtree(root / "tok_src")
    return root
