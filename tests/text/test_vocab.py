"""Vocabulary extension (Med-UniC Sec. 3.2): real IU (English) base vocabulary, real PadChest (Spanish) extension."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedTokenizerFast

from monai_medunic.cli import main as medunic_main
from monai_medunic.data.corpora import InMemoryCorpus, IUXRayCorpus, PadChestCorpus
from monai_medunic.errors import ConfigurationError, CorpusError, ModelLoadError, VocabularyError
from monai_medunic.text.vocab import (
    EXTENSION_INFO_FILE,
    build_base_model,
    cli_main,
    extend_vocabulary,
    select_new_tokens,
    tokenizer_stats,
)


@pytest.fixture(scope="module")
def corpora():
    en = IUXRayCorpus(limit=1200).texts()
    es = PadChestCorpus(limit=1600).texts()
    return {"en_train": en[:1000], "en_test": en[1000:], "es_train": es[:1200], "es_test": es[1200:]}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, corpora):
    out = tmp_path_factory.mktemp("vocab") / "base_en"
    build_base_model(out, corpora["en_train"], vocab_size=1500, hidden_size=32, num_layers=2, num_heads=2)
    return out


@pytest.fixture(scope="module")
def extended(tmp_path_factory, base_dir, corpora):
    out = tmp_path_factory.mktemp("vocab") / "ext_es"
    result = extend_vocabulary(base_dir, corpora["es_train"], out, num_tokens=200, language="es")
    return out, result


def test_base_model_is_english_only_and_loads(base_dir):
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForMaskedLM.from_pretrained(base_dir)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert tok.model_max_length == 512 and model.config.max_position_embeddings >= 256
    vocab = tok.get_vocab()
    assert "effusion" in vocab and "pneumothorax" in vocab
    assert "derrame" not in vocab and "hallazg" not in vocab
    assert tok.tokenize("pleural effusion") == ["pleural", "effusion"]


def test_extension_appends_ranked_spanish_words(base_dir, extended):
    out, result = extended
    base_tok = AutoTokenizer.from_pretrained(base_dir)
    tok = AutoTokenizer.from_pretrained(out)
    assert len(result.added_tokens) == 200
    assert len(tok) == len(base_tok) + 200 == result.new_vocab_size
    # appended at the end, in TF-IDF order, as whole-word WordPiece entries
    ids = tok.convert_tokens_to_ids(result.added_tokens)
    assert ids == list(range(len(base_tok), len(base_tok) + 200))
    assert result.scores == sorted(result.scores, reverse=True)
    assert not set(result.added_tokens) & set(base_tok.get_vocab())
    assert "hallazg" in result.added_tokens[:20]  # the most frequent stem of PadChest ("sin hallazg patolog")
    # the base vocabulary is unchanged
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in base_tok.get_vocab().items())
    assert tok.tokenize("sin hallazg patolog") == ["sin", "hallazg", "patolog"]
    # vocab.txt agrees with tokenizer.json
    with open(os.path.join(out, "vocab.txt"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[len(base_tok):] == result.added_tokens
    info = json.load(open(os.path.join(out, EXTENSION_INFO_FILE), encoding="utf-8"))
    assert info["language"] == "es" and info["num_added"] == 200


def test_embeddings_grow_with_random_new_rows(base_dir, extended):
    out, result = extended
    base = AutoModelForMaskedLM.from_pretrained(base_dir)
    model = AutoModelForMaskedLM.from_pretrained(out)
    w0 = base.get_input_embeddings().weight
    w = model.get_input_embeddings().weight
    n0 = w0.shape[0]
    assert w.shape == (n0 + 200, w0.shape[1]) and model.config.vocab_size == n0 + 200
    assert torch.equal(w[:n0], w0)  # W = [W_en; W_sp]: W_en kept
    new = w[n0:].detach()
    std = model.config.initializer_range
    assert abs(float(new.std()) - std) < 0.2 * std and abs(float(new.mean())) < 0.1 * std
    assert model.get_output_embeddings().weight.shape[0] == n0 + 200
    assert model.cls.predictions.bias.shape[0] == n0 + 200 if hasattr(model.cls.predictions, "bias") else True


def test_extension_lowers_spanish_fertility_on_held_out_reports(base_dir, extended, corpora):
    out, _ = extended
    before_es = tokenizer_stats(str(base_dir), corpora["es_test"])
    after_es = tokenizer_stats(str(out), corpora["es_test"])
    assert before_es.words == after_es.words
    assert after_es.fertility < 0.75 * before_es.fertility
    assert after_es.split_word_rate < before_es.split_word_rate
    before_en = tokenizer_stats(str(base_dir), corpora["en_test"])
    after_en = tokenizer_stats(str(out), corpora["en_test"])
    assert after_en.fertility <= before_en.fertility + 1e-9  # English is not made worse


def test_other_language_and_accent_normalisation(tmp_path, base_dir):
    fr = ["épanchement pleural gauche modéré", "pas d'épanchement pleural ni pneumothorax",
          "cardiomégalie modérée sans épanchement"] * 3
    res = extend_vocabulary(base_dir, InMemoryCorpus(fr, "fr"), tmp_path / "fr", num_tokens=5, language="fr",
                            tokenizer_only=True)
    # the uncased BERT normalizer strips accents: entries are stored as WordPiece sees them
    assert "epanchement" in res.added_tokens and "épanchement" not in res.added_tokens
    tok = AutoTokenizer.from_pretrained(tmp_path / "fr")
    assert tok.tokenize("Épanchement") == ["epanchement"]
    assert not os.path.exists(tmp_path / "fr" / "model.safetensors")


def test_select_new_tokens_is_tfidf_ranked(base_dir):
    tok = AutoTokenizer.from_pretrained(base_dir)
    texts = ["derrame derrame derrame pleural", "derrame pleural leve", "nodulo pulmonar", "nodulo calcificado"]
    ranked = select_new_tokens(texts, tok, num_tokens=3, language="es", min_df=2)
    words = [w for w, _ in ranked]
    # "pleural" is already in the English vocabulary; "leve", "pulmonar", "calcificado" occur in one report only
    assert sorted(words) == ["derrame", "nodulo"]
    # each is the only remaining feature of two l2-normalised reports (nodulo) or shares them with "pleural"
    scores = dict(ranked)
    assert scores["nodulo"] == pytest.approx(2.0)
    assert 1.0 < scores["derrame"] < 2.0


def test_bad_inputs_raise_typed_errors_and_write_nothing(tmp_path, base_dir):
    texts = ["derrame pleural izquierdo"] * 3
    with pytest.raises(ConfigurationError, match="unknown language code 'zz'"):
        extend_vocabulary(base_dir, texts, tmp_path / "a", num_tokens=5, language="zz")
    with pytest.raises(CorpusError, match="empty corpus"):
        extend_vocabulary(base_dir, [], tmp_path / "b", num_tokens=5)
    with pytest.raises(ModelLoadError, match="not found"):
        extend_vocabulary(tmp_path / "nope", texts, tmp_path / "c", num_tokens=5)
    # a byte-level BPE tokenizer: no WordPiece vocabulary
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(texts * 5, trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "[MASK]"]))
    bpe_dir = tmp_path / "bpe_base"
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", mask_token="[MASK]").save_pretrained(bpe_dir)
    with pytest.raises(VocabularyError, match=r"bpe_base.*BPE, not WordPiece"):
        extend_vocabulary(bpe_dir, texts, tmp_path / "d", num_tokens=5, tokenizer_only=True)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("bpe_base",)]
    assert leftovers == []  # no partial output, no temporary directory
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "keep.txt").write_text("x")
    with pytest.raises(ConfigurationError, match="not empty"):
        extend_vocabulary(base_dir, texts, tmp_path / "exists", num_tokens=5)
    assert os.listdir(tmp_path / "exists") == ["keep.txt"]


def test_cli_build_vocab(tmp_path, base_dir, capsys):
    corpus = tmp_path / "es.txt"
    corpus.write_text("\n".join(PadChestCorpus(limit=300).texts()) + "\n", encoding="utf-8")
    rc = cli_main(["--corpus", str(corpus), "--language", "es", "--num-tokens", "50", "--base", str(base_dir),
                   "--out", str(tmp_path / "out")])
    assert rc == 0 and "+50 'es' tokens" in capsys.readouterr().out
    assert len(AutoTokenizer.from_pretrained(tmp_path / "out")) == len(AutoTokenizer.from_pretrained(base_dir)) + 50
    # through the `medunic` dispatcher: a non-UTF-8 corpus gives a one-line error naming the file
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("neumotórax a tensión\n".encode("latin-1"))
    rc = medunic_main(["build-vocab", "--corpus", str(bad), "--num-tokens", "5", "--base", str(base_dir),
                       "--out", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert rc == 1 and "latin1.txt: line 1" in err and "UTF-8" in err
    assert not (tmp_path / "out2").exists()
