"""Report corpora: real IU X-ray and PadChest reports, generic files, drop counting and bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from monai_medunic.data.corpora import (
    CSVCorpus,
    InMemoryCorpus,
    IUXRayCorpus,
    JSONLCorpus,
    PadChestCorpus,
    TextFileCorpus,
    load_report_records,
    torchxrayvision_data_dir,
)
from monai_medunic.errors import ConfigurationError, CorpusError


def test_iu_xray_reads_findings_then_impression_and_counts_drops():
    corpus = IUXRayCorpus()
    records = corpus.load()
    stats = corpus.stats
    assert stats.read == 3955  # every XML report in NLMCXR_reports.tgz
    assert stats.kept == len(records) == stats.read - sum(stats.dropped.values())
    assert stats.dropped["empty"] > 0  # reports without findings and impression are counted, not hidden
    first = records[0]
    assert first.report_id == "1" and first.language == "en"
    # report 1: FINDINGS ... "There is no evidence of pneumothorax." then IMPRESSION "Normal chest x-XXXX."
    assert first.text.startswith("The cardiac silhouette and mediastinum size are within normal limits.")
    assert first.text.endswith("There is no evidence of pneumothorax. Normal chest x-XXXX.")
    assert all(len(r.text.split()) >= 3 for r in records)


def test_iu_xray_sections_are_configurable():
    only_impression = IUXRayCorpus(sections=("IMPRESSION",), limit=5).load()
    assert only_impression[0].text == "Normal chest x-XXXX."


def test_padchest_slice_is_spanish_deduplicated_and_stemmed():
    corpus = PadChestCorpus(limit=300)
    records = corpus.load()
    assert len(records) == 300
    assert len({r.report_id for r in records}) == 300
    assert corpus.stats.dropped["duplicate_report"] > 0  # a PA + lateral pair shares one report
    assert corpus.stats.read == 300 + sum(corpus.stats.dropped.values())
    assert {r.language for r in records} == {"es"}
    assert records[0].text == "sin hallazg patolog edad pacient ."  # stemmed in the source
    assert all(len(r.text.split()) >= 3 for r in records)


def test_corpus_path_may_be_the_data_directory():
    d = torchxrayvision_data_dir()
    assert PadChestCorpus(path=d, limit=3).load()[0].text.startswith("sin hallazg")


def test_text_csv_jsonl_corpora_and_drop_reasons(tmp_path):
    txt = tmp_path / "r.txt"
    txt.write_text("derrame pleural izquierdo leve\n\nno\ncardiomegalia sin otros hallazgos\n", encoding="utf-8")
    c = TextFileCorpus(txt, language="es")
    assert [r.text for r in c.load()] == ["derrame pleural izquierdo leve", "cardiomegalia sin otros hallazgos"]
    assert c.stats.dropped == {"empty": 1, "too_short": 1} and c.stats.read == 4

    csv_path = tmp_path / "r.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8", newline="") as f:
        f.write('id,findings,impression\n1,"Heart size normal.",No effusion.\n2,,\n')
    c = CSVCorpus(csv_path, "en", text_column=["findings", "impression"], id_column="id")
    recs = c.load()
    assert [(r.report_id, r.text) for r in recs] == [("1", "Heart size normal. No effusion.")]
    assert c.stats.dropped == {"empty": 1}

    jl = tmp_path / "r.jsonl"
    lines = [{"report": "Small left pleural effusion.", "language": "en"},
             {"report": "Derrame pleural izquierdo.", "language": "es"}]
    jl.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    es = JSONLCorpus(jl, "es", language_key="language")
    assert [r.text for r in es.load()] == ["Derrame pleural izquierdo."]
    assert es.stats.dropped == {"other_language": 1} and es.stats.read == 2


def test_mixed_records_are_shuffled_deterministically():
    corpora = [InMemoryCorpus(["no acute disease seen"] * 5, "en"), InMemoryCorpus(["sin hallazgos patologicos"] * 5, "es")]
    a = load_report_records(corpora, seed=1)
    b = load_report_records(corpora, seed=1)
    assert a == b and len(a) == 10
    assert {r["language"] for r in a} == {"en", "es"}
    assert [r["language"] for r in a] != ["en"] * 5 + ["es"] * 5
    assert set(a[0]) == {"report", "language", "report_id", "source"}


def test_empty_corpus_names_the_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="empty.txt.*empty corpus"):
        TextFileCorpus(p, "en").load()
    short = tmp_path / "short.txt"
    short.write_text("normal\nok fine\n", encoding="utf-8")
    with pytest.raises(CorpusError, match="short.txt.*dropped"):
        TextFileCorpus(short, "en").load()


def test_wrong_column_names_file_and_column(tmp_path):
    p = tmp_path / "reports.csv"
    p.write_text("id,text\n1,heart size normal\n", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        CSVCorpus(p, "en", text_column="report").load()
    assert err.value.path.endswith("reports.csv") and err.value.field == "report"
    assert "columns: ['id', 'text']" in str(err.value)


def test_non_utf8_file_names_file_and_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("derrame pleural derecho\n".encode() + "cardiomegalia y neumotórax\n".encode("latin-1"))
    with pytest.raises(CorpusError) as err:
        TextFileCorpus(p, "es").load()
    assert err.value.path.endswith("latin1.txt") and err.value.line == 2
    assert "UTF-8" in str(err.value)
    c = tmp_path / "latin1.csv"
    c.write_bytes("report\n".encode() + "neumotórax a tensión\n".encode("latin-1"))
    with pytest.raises(CorpusError, match="latin1.csv.*UTF-8"):
        CSVCorpus(c, "es").load()


def test_bad_jsonl_and_unknown_language(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"report": "heart size normal"}\n{not json\n', encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        JSONLCorpus(p, "en").load()
    assert err.value.line == 2 and "bad.jsonl" in str(err.value)
    with pytest.raises(ConfigurationError, match="unknown language code 'xx1'"):
        JSONLCorpus(p, "xx1")
    with pytest.raises(CorpusError, match="file not found"):
        TextFileCorpus(tmp_path / "missing.txt", "en")
