"""Cross-lingual vocabulary extension of a WordPiece tokenizer and its BERT-style model (Med-UniC Sec. 3.2).

Med-UniC turns an English medical language model into a cross-lingual one in three steps:

1. **Cross-lingual vocabulary** :math:`\\mathcal{T} = \\{\\mathcal{T}_{en}, \\mathcal{T}_{sp}\\}`: tokenise the
   second-language reports with a general spaCy tokenizer and rank their words with TF-IDF; the top
   :math:`M` words not already in the vocabulary, :math:`\\mathcal{T}_{sp} = \\{t^1_{sp}, \\dots, t^M_{sp}\\}`,
   are appended to the English vocabulary :math:`\\mathcal{T}_{en}` (:func:`select_new_tokens`).
2. **New word embeddings** :math:`\\mathbf{W} = [\\mathbf{W}_{en}; \\mathbf{W}_{sp}]`: the word-embedding
   matrix grows by :math:`M` randomly initialised rows, :math:`\\mathcal{N}(0, \\sigma^2)` with the model's
   ``initializer_range`` as :math:`\\sigma` (:func:`extend_vocabulary`).
3. Masked cross-lingual modelling on mixed English + Spanish reports: the ``cxr_text_mlm`` bundle.

The new words become ordinary WordPiece vocabulary entries (not "added tokens"), so WordPiece's
longest-match-first rule uses them as whole words and as word prefixes (``derrame`` also helps
``derrames``). Candidate words are normalised with the base tokenizer's own normalizer (lower-casing,
accent stripping of uncased BERT), so that they match what WordPiece sees.

:func:`build_base_model` builds a tiny offline base model (a WordPiece vocabulary trained with HF
``tokenizers`` on an English corpus and a small ``BertForMaskedLM``) for tests and the demo.

Command line: ``medunic build-vocab --corpus FILE --language es --num-tokens M --base MODEL_DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monai_medunic.errors import ConfigurationError, CorpusError, ModelLoadError, VocabularyError
from monai_medunic.text.fertility import TokenizerStats, tokenizer_stats, tokenizer_stats_by_language
from monai_medunic.text.io_utils import atomic_directory, check_output_dir
from monai_medunic.text.languages import known_language_codes, validate_language_code

__all__ = [
    "SPECIAL_TOKENS",
    "build_base_model",
    "train_wordpiece_tokenizer",
    "load_spacy_tokenizer",
    "select_new_tokens",
    "extend_vocabulary",
    "VocabExtensionResult",
    "tokenizer_stats",
    "tokenizer_stats_by_language",
    "TokenizerStats",
    "cli_main",
    "EXTENSION_INFO_FILE",
]

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
EXTENSION_INFO_FILE = "medunic_vocab_extension.json"


# --------------------------------------------------------------------------------------------------
# base model (offline, tiny)
# --------------------------------------------------------------------------------------------------
def _as_texts(corpus: Any, what: str) -> list[str]:
    """Texts of a corpus object (``ReportCorpus``) or a list of strings."""
    from monai_medunic.data.corpora import ReportCorpus

    if isinstance(corpus, ReportCorpus):
        return corpus.texts()
    if isinstance(corpus, str):
        raise ConfigurationError(f"{what}: expected a list of texts or a corpus object, got a string")
    texts = [t for t in corpus if isinstance(t, str) and t.strip()]
    if not texts:
        raise CorpusError(f"{what}: empty corpus (no non-empty text)")
    return texts


def train_wordpiece_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 4000,
                              lowercase: bool = True, min_frequency: int = 2, model_max_length: int = 512) -> Any:
    """Train a BERT WordPiece vocabulary with HF ``tokenizers`` and save it as an HF tokenizer directory.

    Args:
        texts: the training texts (e.g. English reports only).
        out_dir: directory to write (``tokenizer.json``, ``tokenizer_config.json``, ``vocab.txt``).
        vocab_size: target vocabulary size (smaller if the corpus has fewer pieces).
        lowercase: uncased BERT normalisation (lower-case and strip accents).
        min_frequency: minimum count of a merged piece.
        model_max_length: the tokenizer's maximum sequence length.

    Returns:
        the loaded ``transformers`` tokenizer.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import AutoTokenizer, BertTokenizerFast

    texts = list(texts)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##")
    tok.train_from_iterator(texts, trainer, length=len(texts))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    os.makedirs(out_dir, exist_ok=True)
    _write_vocab_txt(os.path.join(out_dir, "vocab.txt"), [t for t, _ in vocab])
    # transformers 5: build from a vocab.txt directory (a bare vocab_file argument gives a 5-token vocab)
    hf_tok = BertTokenizerFast.from_pretrained(out_dir, do_lower_case=lowercase, model_max_length=model_max_length,
                                               local_files_only=True)
    hf_tok.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir, local_files_only=True)


def _write_vocab_txt(path: str, tokens: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for t in tokens:
            f.write(t + "\n")


def build_base_model(out_dir: str | os.PathLike, corpus_texts: Any, vocab_size: int = 4000, hidden_size: int = 64,
                     num_layers: int = 2, num_heads: int = 2, intermediate_size: int | None = None,
                     max_position_embeddings: int = 512, lowercase: bool = True, seed: int = 0,
                     overwrite: bool = False) -> str:
    """Build a tiny BERT masked-LM base model with a WordPiece vocabulary trained on ``corpus_texts``.

    This stands in, offline, for the English CXR-BERT that Med-UniC starts from: train the vocabulary on
    English reports only, and the Spanish fertility of the result is that of an English-only vocabulary.

    Args:
        out_dir: the HF model directory to write (atomically).
        corpus_texts: a list of texts or a ``ReportCorpus``.
        vocab_size: WordPiece vocabulary size.
        hidden_size, num_layers, num_heads, intermediate_size, max_position_embeddings: ``BertConfig``.
        lowercase: uncased tokenizer.
        seed: seed of the random weights.
        overwrite: replace an existing ``out_dir``.

    Returns:
        ``out_dir`` (absolute), loadable with ``AutoTokenizer`` / ``AutoModelForMaskedLM.from_pretrained``.
    """
    import torch
    from transformers import BertConfig, BertForMaskedLM

    texts = _as_texts(corpus_texts, "build_base_model")
    if hidden_size % num_heads:
        raise ConfigurationError(f"hidden_size ({hidden_size}) must be a multiple of num_heads ({num_heads})")
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        tok = train_wordpiece_tokenizer(texts, tmp, vocab_size=vocab_size, lowercase=lowercase,
                                        model_max_length=max_position_embeddings)
        config = BertConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=num_heads, intermediate_size=intermediate_size or 4 * hidden_size,
                            max_position_embeddings=max_position_embeddings, pad_token_id=tok.pad_token_id)
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
        model.save_pretrained(tmp)
        logger.info("base model: vocabulary %d (trained on %d texts), %d parameters", len(tok), len(texts),
                    sum(p.numel() for p in model.parameters()))
    return os.path.abspath(os.fspath(out_dir))


# --------------------------------------------------------------------------------------------------
# step 1: rank second-language words with spaCy + TF-IDF
# --------------------------------------------------------------------------------------------------
def load_spacy_tokenizer(language: str = "es", pipeline: str | None = None) -> Any:
    """spaCy's tokenizer for ``language``: the rule-based ``spacy.blank(language)`` (offline) or an installed pipeline.

    Args:
        language: ISO 639 code (``es``, ``fr``, ``de``, ...).
        pipeline: name of an installed spaCy pipeline (e.g. ``es_core_news_sm``) to use instead of ``blank``.

    Raises:
        ConfigurationError: unknown language code, or the pipeline is not installed.
    """
    import spacy

    lang = validate_language_code(language)
    if pipeline:
        if pipeline in known_language_codes():
            return spacy.blank(pipeline).tokenizer
        try:
            nlp = spacy.load(pipeline, exclude=["parser", "ner", "lemmatizer", "tagger", "attribute_ruler"])
        except (OSError, ImportError) as err:
            raise ConfigurationError(f"spaCy pipeline '{pipeline}' is not installed: {err}") from err
        if nlp.lang != lang:
            logger.warning("spaCy pipeline %s is for language '%s', not '%s'", pipeline, nlp.lang, lang)
        return nlp.tokenizer
    return spacy.blank(lang).tokenizer


def _identity(doc: list[str]) -> list[str]:
    return doc


def _wordpiece_json(tokenizer: Any, where: str) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "is_fast", False):
        raise VocabularyError(f"{where}: the tokenizer ({type(tokenizer).__name__}) has no fast WordPiece backend")
    state = json.loads(backend.to_str())
    model_type = state.get("model", {}).get("type")
    if model_type != "WordPiece":
        raise VocabularyError(
            f"{where}: the base tokenizer's model is {model_type}, not WordPiece; Med-UniC's vocabulary "
            "extension needs a BERT-style WordPiece vocabulary"
        )
    return state


def select_new_tokens(texts: Sequence[str], tokenizer: Any, num_tokens: int, language: str = "es",
                      spacy_pipeline: str | None = None, min_df: int = 2, min_length: int = 2
                      ) -> list[tuple[str, float]]:
    """The top ``num_tokens`` words of ``texts`` by TF-IDF that the tokenizer's vocabulary does not hold.

    Words come from spaCy's tokenizer (alphabetic tokens only), normalised by the base tokenizer's
    normalizer (e.g. lower-case, no accents) and kept only if they stay one pre-token. A word's score
    is the sum over reports of its TF-IDF weight (scikit-learn ``TfidfVectorizer``, l2-normalised rows),
    i.e. its importance across many reports (Med-UniC Sec. 3.2, step 1).

    Args:
        texts: second-language reports.
        tokenizer: the base HF tokenizer (fast, WordPiece).
        num_tokens: :math:`M`, the number of words to return (fewer if the corpus has fewer candidates).
        language: language code for ``spacy.blank``.
        spacy_pipeline: optional installed spaCy pipeline name.
        min_df: a word must occur in at least this many reports (drops typos).
        min_length: minimum characters of a word.

    Returns:
        ``(word, score)`` sorted by decreasing score.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if num_tokens < 1:
        raise ConfigurationError(f"num_tokens must be >= 1, got {num_tokens}")
    state = _wordpiece_json(tokenizer, "base tokenizer")
    vocab = state["model"]["vocab"]
    backend = tokenizer.backend_tokenizer
    normalizer, pre_tok = backend.normalizer, backend.pre_tokenizer
    nlp_tok = load_spacy_tokenizer(language, spacy_pipeline)

    cache: dict[str, str | None] = {}

    def norm(word: str) -> str | None:
        if word not in cache:
            w = normalizer.normalize_str(word) if normalizer is not None else word
            pieces = pre_tok.pre_tokenize_str(w) if pre_tok is not None else [(w, (0, len(w)))]
            cache[word] = w if len(pieces) == 1 and len(w) >= min_length else None
        return cache[word]

    docs = []
    for doc in nlp_tok.pipe(texts, batch_size=1000):
        words = [norm(t.text) for t in doc if t.is_alpha]
        docs.append([w for w in words if w])
    n_docs = len(docs)
    if not any(docs):
        raise CorpusError("no alphabetic word in the corpus: nothing to add to the vocabulary")
    vectorizer = TfidfVectorizer(analyzer=_identity, lowercase=False, min_df=min(min_df, n_docs), norm="l2")
    matrix = vectorizer.fit_transform(docs)
    scores = matrix.sum(axis=0).A1
    terms = vectorizer.get_feature_names_out()
    ranked = sorted(zip(terms, scores), key=lambda ts: (-ts[1], ts[0]))
    new = [(str(t), float(s)) for t, s in ranked if t not in vocab]
    logger.info("vocabulary candidates: %d words in %d reports, %d not in the base vocabulary; keeping %d",
                len(terms), n_docs, len(new), min(num_tokens, len(new)))
    return new[:num_tokens]


# --------------------------------------------------------------------------------------------------
# step 2: append to the WordPiece vocabulary and grow the word embeddings
# --------------------------------------------------------------------------------------------------
@dataclass
class VocabExtensionResult:
    """What :func:`extend_vocabulary` did."""

    out_dir: str
    language: str
    base_vocab_size: int
    new_vocab_size: int
    added_tokens: list[str]
    scores: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "language": self.language,
            "base_vocab_size": self.base_vocab_size,
            "new_vocab_size": self.new_vocab_size,
            "num_added": len(self.added_tokens),
            "added_tokens": self.added_tokens,
            "tfidf_scores": [round(s, 6) for s in self.scores],
        }


def _load_base(base: str, tokenizer_only: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    if not os.path.isdir(base):
        raise ModelLoadError(f"{base}: base model directory not found")
    try:
        tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise VocabularyError(f"{base}: no loadable tokenizer (WordPiece vocab.txt / tokenizer.json): {err}") from err
    if tokenizer_only:
        return tok, None
    try:
        model = AutoModelForMaskedLM.from_pretrained(base, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{base}: no loadable masked-LM model (config.json + weights): {err}") from err
    return tok, model


def _extended_tokenizer(tok: Any, state: dict[str, Any], new_tokens: Sequence[str], tmp: str) -> Any:
    """Write the base tokenizer with ``new_tokens`` appended to its WordPiece vocabulary into ``tmp`` and reload it."""
    from transformers import AutoTokenizer

    vocab: dict[str, int] = state["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in state.get("added_tokens", [])}
    next_id = max(used) + 1
    for t in new_tokens:
        vocab[t] = next_id
        next_id += 1
    tok.save_pretrained(tmp)
    with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(state, f, ensure_ascii=False)
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] == list(range(len(ordered))):  # vocab.txt needs contiguous ids
        _write_vocab_txt(os.path.join(tmp, "vocab.txt"), [t for t, _ in ordered])
    elif os.path.exists(os.path.join(tmp, "vocab.txt")):
        os.remove(os.path.join(tmp, "vocab.txt"))
    return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def extend_vocabulary(base: str | os.PathLike, corpus: Any, out_dir: str | os.PathLike, num_tokens: int,
                      language: str = "es", spacy_pipeline: str | None = None, min_df: int = 2, seed: int = 0,
                      tokenizer_only: bool = False, overwrite: bool = False) -> VocabExtensionResult:
    """Extend a BERT-style tokenizer + masked-LM with the top ``num_tokens`` second-language words (Sec. 3.2).

    Args:
        base: HF directory of the base tokenizer and model (WordPiece vocabulary required).
        corpus: second-language reports: a ``ReportCorpus`` or a list of texts.
        out_dir: the HF directory to write (atomically; ``save_pretrained`` format plus
            ``medunic_vocab_extension.json`` listing the added words).
        num_tokens: :math:`M`.
        language: language code of the corpus (spaCy tokenizer).
        spacy_pipeline: optional installed spaCy pipeline name instead of ``spacy.blank(language)``.
        min_df: minimum number of reports a word must occur in.
        seed: seed of the new embedding rows.
        tokenizer_only: extend only the tokenizer (the base directory may hold no model).
        overwrite: replace an existing ``out_dir``.

    Raises:
        VocabularyError: the base has no WordPiece vocabulary.
        ModelLoadError: the base directory or its model cannot be loaded.
        CorpusError: the corpus is empty.
        ConfigurationError: unknown language, bad ``num_tokens``, or ``out_dir`` exists.
    """
    import torch

    lang = validate_language_code(language)
    if int(num_tokens) < 1:
        raise ConfigurationError(f"num_tokens must be >= 1, got {num_tokens}")
    out = check_output_dir(out_dir, overwrite)
    base = os.path.abspath(os.fspath(base))
    tok, model = _load_base(base, tokenizer_only)
    state = _wordpiece_json(tok, base)
    texts = _as_texts(corpus, f"corpus for {base}")
    selected = select_new_tokens(texts, tok, int(num_tokens), language=lang, spacy_pipeline=spacy_pipeline,
                                 min_df=min_df)
    if not selected:
        raise VocabularyError(f"{base}: every candidate word of the corpus is already in the vocabulary")
    new_tokens = [t for t, _ in selected]
    base_size = len(tok)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        new_tok = _extended_tokenizer(tok, state, new_tokens, tmp)
        new_size = len(new_tok)
        if new_size != base_size + len(new_tokens):
            raise VocabularyError(f"{base}: extended vocabulary has {new_size} entries, expected "
                                  f"{base_size} + {len(new_tokens)}")
        if model is not None:
            old_rows = model.get_input_embeddings().weight.shape[0]
            model.resize_token_embeddings(max(new_size, old_rows), mean_resizing=False)
            emb = model.get_input_embeddings().weight
            std = float(getattr(model.config, "initializer_range", 0.02))
            gen = torch.Generator().manual_seed(seed)
            new_ids = torch.as_tensor(new_tok.convert_tokens_to_ids(new_tokens), dtype=torch.long)
            with torch.no_grad():  # W = [W_en; W_sp], W_sp ~ N(0, initializer_range^2)
                emb[new_ids] = torch.randn(len(new_ids), emb.shape[1], generator=gen).to(emb.dtype) * std
            out_emb = model.get_output_embeddings()
            if out_emb is not None and out_emb.weight.shape[0] != emb.shape[0]:
                raise VocabularyError(f"{base}: output embeddings were not resized with the input embeddings")
            model.save_pretrained(tmp)
        result = VocabExtensionResult(out, lang, base_size, new_size, new_tokens, [s for _, s in selected])
        info = {"base": base, "spacy": spacy_pipeline or f"spacy.blank('{lang}')", "min_df": min_df, "seed": seed,
                "num_requested": int(num_tokens), **result.as_dict()}
        with open(os.path.join(tmp, EXTENSION_INFO_FILE), "w", encoding="utf-8") as f:
            json.dump(info, f, ensure_ascii=False, indent=1)
    logger.info("vocabulary %d -> %d (+%d '%s' words): %s", base_size, new_size, len(new_tokens), lang, out)
    return result


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _corpus_from_args(args: argparse.Namespace) -> Any:
    from monai_medunic.data import corpora as c

    path = args.corpus
    common = {"language": args.language, "limit": args.limit}
    if path in ("padchest", "iu_xray"):
        return c.PadChestCorpus(**common) if path == "padchest" else c.IUXRayCorpus(**common)
    lower = path.lower()
    if lower.endswith((".csv", ".csv.gz")):
        return c.CSVCorpus(path, text_column=args.text_field or "report", **common)
    if lower.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return c.JSONLCorpus(path, text_key=args.text_field or "report", language_key=args.language_field, **common)
    return c.TextFileCorpus(path, **common)


def _add_corpus_arguments(p: argparse.ArgumentParser, language: str) -> None:
    """The corpus options of ``build-vocab`` and ``build-base-model`` (read by :func:`_corpus_from_args`)."""
    p.add_argument("--corpus", required=True,
                   help="CSV (.csv[.gz]), JSONL (.jsonl[.gz]) or text file (one report per line); or 'padchest' / "
                   "'iu_xray' for the reports in the torchxrayvision wheel")
    p.add_argument("--language", default=language, help=f"language code of the corpus (spaCy tokenizer), default {language}")
    p.add_argument("--text-field", default=None, help="CSV column / JSONL key of the report text (default: report)")
    p.add_argument("--language-field", default=None, help="JSONL key of a per-record language tag to filter on")
    p.add_argument("--limit", type=int, default=None, help="use at most this many reports")


def cli_main(argv: Sequence[str]) -> int:
    """``medunic build-vocab``: extend a base model's WordPiece vocabulary with a second language."""
    p = argparse.ArgumentParser(
        prog="medunic build-vocab",
        description="Extend a BERT-style WordPiece vocabulary with the top-M TF-IDF words of a second-language "
        "report corpus and grow the model's word embeddings (Med-UniC Sec. 3.2).",
    )
    _add_corpus_arguments(p, "es")
    p.add_argument("--num-tokens", type=int, required=True, help="M, the number of new vocabulary entries")
    p.add_argument("--base", required=True, help="HF directory of the base tokenizer + masked-LM model")
    p.add_argument("--out", required=True, help="output HF directory (written atomically)")
    p.add_argument("--spacy-pipeline", default=None, help="installed spaCy pipeline instead of spacy.blank(language)")
    p.add_argument("--min-df", type=int, default=2, help="minimum number of reports a word must occur in")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer-only", action="store_true", help="extend only the tokenizer")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = p.parse_args(list(argv))
    result = extend_vocabulary(args.base, _corpus_from_args(args), args.out, args.num_tokens, language=args.language,
                               spacy_pipeline=args.spacy_pipeline, min_df=args.min_df, seed=args.seed,
                               tokenizer_only=args.tokenizer_only, overwrite=args.overwrite)
    print(f"vocabulary {result.base_vocab_size} -> {result.new_vocab_size} "
          f"(+{len(result.added_tokens)} '{result.language}' tokens) written to {result.out_dir}")
    return 0


def base_model_cli_main(argv: Sequence[str]) -> int:
    """``medunic build-base-model``: an offline BERT masked-LM base model (:func:`build_base_model`), the
    stand-in for the English CXR-BERT where no model hub is reachable."""
    p = argparse.ArgumentParser(
        prog="medunic build-base-model",
        description="Build a small BERT masked-LM with a WordPiece vocabulary trained on a report corpus (offline), "
        "as the English base model that build-vocab extends and the cxr_text_mlm bundle post-pre-trains.",
    )
    _add_corpus_arguments(p, "en")
    p.add_argument("--out", required=True, help="output HF directory (written atomically)")
    p.add_argument("--vocab-size", type=int, default=4000)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512, help="max_position_embeddings: the longest tokenised report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    args = p.parse_args(list(argv))
    out = build_base_model(args.out, _corpus_from_args(args), vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                           num_layers=args.layers, num_heads=args.heads, max_position_embeddings=args.max_length,
                           seed=args.seed, overwrite=args.overwrite)
    print(f"base model written to {out} (use it as --base of `medunic build-vocab` or as text_model_dir)")
    return 0
