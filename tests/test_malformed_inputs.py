"""The malformed-input table: every surface of the package against what hospitals and users really send.

One row per case: the surface, what is wrong, the call, and the expected outcome, which is either a
typed error of :mod:`monai_medunic.errors` (its class and a message fragment, with the file and the
field it must name) or a counted skip (the reason under which the record is counted). Nothing else is
acceptable: no bare library traceback, no silent loss, no patient identifier in a message.

Surfaces: DICOM files, manifests (JSONL and CSV), report corpora and report text (empty, 100k-character,
control-character and other-script reports), trained-bundle configs, training checkpoints (truncated,
from another architecture, a pickle payload that ``weights_only`` must refuse), tokenizer and
vocabulary folders, the ``medunic`` command line, and the Deploy app's inputs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from monai_medunic import errors as E

REPO = Path(__file__).resolve().parents[1]
PHI = ("Okonkwo^Adaeze", "Okonkwo", "HOSP-20931477", "19610417")
REPORT = "Heart size is normal. No pleural effusion. No pneumothorax."


@dataclass(frozen=True)
class Raises:
    """The call raises ``error`` whose message holds ``fragment``; ``file`` (a name) and ``field`` are named."""

    error: type[Exception]
    fragment: str
    file: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Skipped:
    """The call returns a summary in which the bad item is counted under ``reason`` (and nothing raises)."""

    reason: str


@dataclass(frozen=True)
class Case:
    surface: str
    what: str
    call: Callable[[Path], Any]
    expect: Raises | Skipped


# --------------------------------------------------------------------------------------------- helpers


def _dicom(tmp: Path, name: str = "image.dcm", seed: str = "CT_small.dcm", **changes: Any) -> str:
    ds = pydicom.dcmread(get_testdata_file(seed))
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Okonkwo^Adaeze", PHI[2], PHI[3]
    for kw, v in changes.items():
        if v is None:
            delattr(ds, kw)
        else:
            setattr(ds, kw, v)
    path = tmp / name
    ds.save_as(path, enforce_file_format=False)
    return str(path)


def _bytes(tmp: Path, name: str, data: bytes) -> str:
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def _text(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(text, encoding="utf-8")
    return str(tmp / name)


def _manifest(tmp: Path, *rows: Any, name: str = "manifest.jsonl") -> str:
    image = _dicom(tmp, "frontal.dcm", seed="RG3_UNCR.dcm")
    lines = []
    for r in rows:
        if isinstance(r, str):
            lines.append(r)
        else:
            lines.append(json.dumps({"image": os.path.basename(image), "language": "en", **r}, ensure_ascii=False))
    return _text(tmp, name, "\n".join(lines) + "\n")


def _load_manifest(path: str, **kw):
    from monai_medunic.data.manifest import load_manifest

    return load_manifest(path, **kw)


def _skip_summary(path: str, **kw):
    return _load_manifest(path, on_error="skip", **kw).summary.dropped


def _csv(tmp: Path, header: str, *rows: str) -> str:
    _dicom(tmp, "frontal.dcm", seed="RG3_UNCR.dcm")
    return _text(tmp, "manifest.csv", "\n".join([header, *rows]) + "\n")


def _corpus_stats(path: str, language: str = "en"):
    from monai_medunic.data.corpora import TextFileCorpus

    corpus = TextFileCorpus(path, language=language)
    corpus.load()
    return corpus.stats.dropped


def _series_with_gap(tmp: Path) -> str:
    folder = tmp / "series"
    folder.mkdir()
    for k in (0, 1, 3, 4):  # slice 2 is missing
        _dicom(folder, f"s{k}.dcm", ImagePositionPatient=[0, 0, 2.0 * k], InstanceNumber=k + 1,
               SOPInstanceUID=pydicom.uid.generate_uid())
    from monai_medunic.transforms import LoadDicomSeriesVolume

    return LoadDicomSeriesVolume()(str(folder))


def _sr_without_text(tmp: Path):
    from monai_medunic.transforms import read_report_from_sr

    ds = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    del ds.ContentSequence
    path = tmp / "empty_sr.dcm"
    ds.save_as(path, enforce_file_format=False)
    return read_report_from_sr(str(path))


def _screen(path: str):
    from monai_medunic.deploy.loader import screen_dicom_file

    return screen_dicom_file(path)


def _load(path: str):
    from monai_medunic.transforms import LoadDicomImage

    return LoadDicomImage()(path)


_BUNDLE: dict[str, Path] = {}  # the session's tiny trained bundle (conftest's tiny_bundle), set by the test


def _bundle_copy(tmp: Path, edit: Callable[[Path], None]) -> Path:
    dest = tmp / "bundle"
    shutil.copytree(_BUNDLE["src"], dest)
    edit(dest)
    from monai_medunic.pretrained import load_pretrained_bundle

    return load_pretrained_bundle(dest)


def _edit_inference(fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        cfg_path = root / "configs" / "inference.json"
        cfg = json.loads(cfg_path.read_text())
        fn(cfg)
        cfg_path.write_text(json.dumps(cfg))

    return edit


def _other_architecture_weights(root: Path) -> None:
    torch.save({"conv.weight": torch.zeros(3, 3)}, root / "models" / "model.pt")


class _Payload:
    """A pickle payload that, under plain pickle, would run a shell command creating a marker file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _resume(tmp: Path, write: Callable[[Path], None]):
    """Resume a tiny trainer from ``checkpoint_5.pt`` as written by ``write`` (the real handler and ignite Engine)."""
    from ignite.engine import Engine

    from monai_medunic.engines.handlers import ResumeFromLatestCheckpoint

    ckpt_dir = tmp / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    write(ckpt_dir / "checkpoint_5.pt")
    net = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs = 3
    ResumeFromLatestCheckpoint(str(ckpt_dir), {"network": net, "optimizer": opt})(engine)


def _good_state(tmp_net: torch.nn.Module | None = None) -> dict:
    from ignite.engine import Engine

    net = tmp_net or torch.nn.Linear(4, 2)
    engine = Engine(lambda e, b: None)
    engine.state.max_epochs, engine.state.epoch, engine.state.iteration, engine.state.epoch_length = 3, 1, 5, 5
    return {"network": net.state_dict(), "optimizer": torch.optim.SGD(net.parameters(), lr=0.1).state_dict(),
            "trainer": engine.state_dict()}


def _truncated_checkpoint(path: Path) -> None:
    torch.save(_good_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickle_checkpoint(path: Path) -> None:
    _Payload.marker = str(path.parent / "PWNED")
    with open(path, "wb") as fh:
        pickle.dump({"network": _Payload()}, fh)


def _tokenizer(path: str):
    from monai_medunic.text.tokenize import load_tokenizer

    return load_tokenizer(path)


class CLIFailed(Exception):
    """A command line exited non-zero: the exit code and what it printed to stderr."""


def _cli_error(*argv: str) -> None:
    """``medunic ARGV`` in-process (the entry point the console script calls): a non-zero exit becomes
    :class:`CLIFailed` with stderr; a traceback there (an exception escaping ``main``) fails the row."""
    from contextlib import redirect_stderr
    from io import StringIO

    from monai_medunic.cli import main

    err = StringIO()
    with redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    if code != 0:
        assert "Traceback" not in err.getvalue(), err.getvalue()[-2000:]
        raise CLIFailed(f"exit {code}: {err.getvalue().strip()}")


def _app_error(*argv: str) -> None:
    """The cxr_findings app's command line (path checks run before the SDK is imported)."""
    sys.path.insert(0, str(REPO / "apps" / "cxr_findings"))
    try:
        import app as cxr_app
    finally:
        sys.path.pop(0)
    from contextlib import redirect_stderr
    from io import StringIO

    err = StringIO()
    with redirect_stderr(err):
        code = cxr_app.main(["app.py", *argv])
    if code != 0:
        raise CLIFailed(f"exit {code}: {err.getvalue().strip()}")


def _extend(tmp: Path, base: str, out: str | None = None):
    from monai_medunic.text.vocab import extend_vocabulary

    return extend_vocabulary(base, ["Sin derrame pleural. Cardiomegalia leve. Neumotórax."] * 3, out or str(tmp / "out"),
                             num_tokens=2, min_df=1)


def _vocab_garbage(tmp: Path) -> str:
    d = tmp / "tok"
    d.mkdir()
    (d / "tokenizer.json").write_text("{ not json")
    (d / "tokenizer_config.json").write_text("{}")
    return str(d)


def _tokenize(text: Any):
    from monai_medunic.text.tokenize import TokenizeReport

    return TokenizeReport(_BUNDLE["src"] / "models" / "text", max_length=16)(text)


LONG = "Heart size is normal. " * 5000  # 110,000 characters
CHINESE = "双肺纹理清晰，未见明显实变。心影大小正常。双侧胸腔未见积液。"

# ----------------------------------------------------------------------------------------------- table

CASES: list[Case] = [
    # DICOM --------------------------------------------------------------------------------------
    Case("dicom", "missing file", lambda t: _load(str(t / "nope.dcm")), Raises(E.DicomReadError, "does not exist", "nope.dcm")),
    Case("dicom", "empty file", lambda t: _load(_bytes(t, "empty.dcm", b"")), Raises(E.DicomReadError, "file is empty", "empty.dcm")),
    Case("dicom", "a PNG named .dcm", lambda t: _load(_bytes(t, "png.dcm", b"\x89PNG\r\n\x1a\n" + b"\0" * 300)),
         Raises(E.DicomReadError, "not a DICOM file", "png.dcm")),
    Case("dicom", "Rows x Columns of 65535 x 65535", lambda t: _load(_dicom(t, Rows=65535, Columns=65535)),
         Raises(E.DicomReadError, "pixel budget", "image.dcm", "Rows")),
    Case("dicom", "pixel data shorter than the header says", lambda t: _load(_dicom(t, Rows=256)),
         Raises(E.DicomReadError, "needs 65,536", "image.dcm", "PixelData")),
    Case("dicom", "unknown Photometric Interpretation", lambda t: _load(_dicom(t, PhotometricInterpretation="HSV")),
         Raises(E.DicomReadError, "PhotometricInterpretation is 'HSV'", "image.dcm", "PhotometricInterpretation")),
    Case("dicom", "Bits Stored above Bits Allocated", lambda t: _load(_dicom(t, BitsStored=24)),
         Raises(E.DicomReadError, "BitsStored is 24", "image.dcm", "BitsStored")),
    Case("dicom", "an SR where an image is expected", lambda t: _load(get_testdata_file("test-SR.dcm")),
         Raises(E.NotAnImageError, "is not an image", "test-SR.dcm", "SOPClassUID")),
    Case("dicom", "an SR without report text", _sr_without_text, Raises(E.ReportTextError, "", "empty_sr.dcm")),
    Case("dicom", "a CT series with a missing slice", _series_with_gap,
         Raises(E.VolumeReadError, "missing slices", "series", "ImagePositionPatient")),
    Case("deploy", "header screen: no StudyInstanceUID", lambda t: _screen(_dicom(t, StudyInstanceUID=None)),
         Raises(E.DicomReadError, "missing or unreadable StudyInstanceUID", "image.dcm", "StudyInstanceUID")),
    Case("deploy", "header screen: ImagePositionPatient of two values", lambda t: _screen(_dicom(t, ImagePositionPatient=[1, 2])),
         Raises(E.DicomReadError, "three finite numbers", "image.dcm", "ImagePositionPatient")),
    # manifests, JSONL ----------------------------------------------------------------------------
    Case("manifest", "JSONL: a line that is not JSON", lambda t: _load_manifest(_manifest(t, {"report": REPORT}, "{oops"))
         , Raises(E.ManifestError, "line 2", "manifest.jsonl")),
    Case("manifest", "JSONL: no image", lambda t: _load_manifest(_manifest(t, {"report": REPORT, "image": ""})),
         Raises(E.ManifestError, "'image' must be", "manifest.jsonl", "image")),
    Case("manifest", "JSONL: an image file that does not exist", lambda t: _load_manifest(_manifest(t, {"report": REPORT, "image": "gone.dcm"})),
         Raises(E.ManifestError, "does not exist", "manifest.jsonl", "image")),
    Case("manifest", "JSONL: a label of 2", lambda t: _load_manifest(_manifest(t, {"report": REPORT, "labels": {"Edema": 2}})),
         Raises(E.ManifestError, "Edema", "manifest.jsonl", "labels")),
    Case("manifest", "JSONL: unknown split", lambda t: _load_manifest(_manifest(t, {"report": REPORT, "split": "holdout"})),
         Raises(E.ManifestError, "split must be one of", "manifest.jsonl", "split")),
    Case("manifest", "JSONL: unknown language code", lambda t: _load_manifest(_manifest(t, {"report": REPORT, "language": "klingon"})),
         Raises(E.ManifestError, "unknown language code", "manifest.jsonl", "language")),
    Case("manifest", "JSONL: not UTF-8", lambda t: _load_manifest(_bytes(t, "latin1.jsonl", json.dumps(
        {"image": "x.dcm", "report": "Tamaño"}, ensure_ascii=False).encode("latin-1"))), Raises(E.ManifestError, "not UTF-8", "latin1.jsonl")),
    Case("manifest", "JSONL: a report with NUL bytes (binary data)", lambda t: _load_manifest(_manifest(t, {"report": REPORT + "\x00\x00"})),
         Raises(E.ManifestError, "binary data", "manifest.jsonl", "report")),
    Case("manifest", "JSONL: a Chinese report tagged 'en'", lambda t: _load_manifest(_manifest(t, {"report": CHINESE})),
         Raises(E.ManifestError, "CJK", "manifest.jsonl", "language")),
    Case("manifest", "JSONL, skip mode: an invalid record is counted", lambda t: _skip_summary(
        _manifest(t, {"report": REPORT}, {"report": REPORT, "split": "holdout"})), Skipped("invalid_split")),
    Case("manifest", "JSONL: a 110,000-character report", lambda t: _skip_summary(_manifest(t, {"report": REPORT}, {"report": LONG})),
         Skipped("long_report")),
    Case("manifest", "JSONL: a two-word report", lambda t: _skip_summary(_manifest(t, {"report": REPORT}, {"report": "Normal study."})),
         Skipped("short_report")),
    Case("manifest", "JSONL: stray control characters are replaced and counted",
         lambda t: _load_manifest(_manifest(t, {"report": "Heart\x0csize is\x1b normal. No effusion."})).summary.cleaned,
         Skipped("control_characters")),
    # manifests, CSV -----------------------------------------------------------------------------
    Case("manifest", "CSV: no image column", lambda t: _load_manifest(_csv(t, "report,language", f"{REPORT},en")),
         Raises(E.ManifestError, "no 'image' column", "manifest.csv", "image")),
    Case("manifest", "CSV: a label 'yes'", lambda t: _load_manifest(_csv(t, "image,report,language,label:Edema",
                                                                       f"frontal.dcm,{REPORT},en,yes")),
         Raises(E.ManifestError, "Edema", "manifest.csv", "labels")),
    Case("manifest", "CSV: a header and no record", lambda t: _load_manifest(_csv(t, "image,report,language")),
         Raises(E.ManifestError, "no records", "manifest.csv")),
    Case("manifest", "a .txt manifest", lambda t: _load_manifest(_text(t, "manifest.txt", "image report\n")),
         Raises(E.ManifestError, "unknown manifest format", "manifest.txt")),
    # report corpora and text ---------------------------------------------------------------------
    Case("corpus", "an empty corpus file", lambda t: _corpus_stats(_text(t, "empty.txt", "\n\n  \n")),
         Raises(E.CorpusError, "empty corpus", "empty.txt")),
    Case("corpus", "a corpus that is not UTF-8", lambda t: _corpus_stats(_bytes(t, "latin1.txt", "Tamaño normal del corazón\n".encode("latin-1"))),
         Raises(E.CorpusError, "UTF-8", "latin1.txt")),
    Case("corpus", "JSONL corpus: a line that is not an object", lambda t: __import__("monai_medunic.data.corpora", fromlist=["x"])
         .JSONLCorpus(_text(t, "c.jsonl", json.dumps({"report": REPORT}) + "\n[1, 2]\n"), language="en").load(),
         Raises(E.CorpusError, "JSON object", "c.jsonl")),
    Case("corpus", "a 110,000-character report", lambda t: _corpus_stats(_text(t, "c.txt", f"{REPORT}\n{LONG}\n")),
         Skipped("long_report")),
    Case("corpus", "a control-character report (binary)", lambda t: _corpus_stats(_text(t, "c.txt", f"{REPORT}\nab\x01\x02\x03\x04 cd\x05\x06 ef\n")),
         Skipped("binary_report")),
    Case("corpus", "a Chinese report in an English corpus", lambda t: _corpus_stats(_text(t, "c.txt", f"{REPORT}\n{CHINESE} 心 影 大\n")),
         Skipped("script_mismatch")),
    Case("corpus", "an empty report among good ones", lambda t: _corpus_stats(_text(t, "c.txt", f"{REPORT}\n\x0b\x0c\n")), Skipped("empty")),
    Case("text", "a report that is not a string", lambda t: _tokenize(None), Raises(E.ReportTextError, "must be a string")),
    # trained-bundle configs ----------------------------------------------------------------------
    Case("bundle", "models/model.pt missing", lambda t: _bundle_copy(t, lambda r: (r / "models" / "model.pt").unlink()),
         Raises(E.ModelLoadError, "'models/model.pt' is missing", "bundle")),
    Case("bundle", "configs/inference.json not JSON", lambda t: _bundle_copy(t, lambda r: (r / "configs" / "inference.json").write_text("{")),
         Raises(E.ModelLoadError, "not valid JSON", "inference.json")),
    Case("bundle", "network_def with an unknown key", lambda t: _bundle_copy(t, _edit_inference(
        lambda c: c["network_def"]["model"].update(embed_dimm=16))), Raises(E.ModelLoadError, "embed_dimm", "inference.json")),
    Case("bundle", "network_def with a wrong type", lambda t: _bundle_copy(t, _edit_inference(
        lambda c: c["network_def"]["model"].update(embed_dim="sixteen"))), Raises(E.ModelLoadError, "cannot build network_def", "inference.json")),
    Case("bundle", "no 'pretrained' section (an untrained bundle)", lambda t: _bundle_copy(t, _edit_inference(lambda c: c.pop("pretrained"))),
         Raises(E.ModelLoadError, "not a trained bundle", "bundle")),
    Case("bundle", "model.pt from another architecture", lambda t: _bundle_copy(t, _other_architecture_weights),
         Raises(E.ModelLoadError, "cannot load the weights", "model.pt")),
    # checkpoints ----------------------------------------------------------------------------------
    Case("checkpoint", "truncated", lambda t: _resume(t, _truncated_checkpoint), Raises(E.CheckpointError, "cannot read the checkpoint", "checkpoint_5.pt")),
    Case("checkpoint", "from another architecture", lambda t: _resume(t, lambda p: torch.save(_good_state(torch.nn.Linear(8, 3)), p)),
         Raises(E.CheckpointError, "does not fit the configured network", "checkpoint_5.pt")),
    Case("checkpoint", "a pickle payload that would run code", lambda t: _resume(t, _pickle_checkpoint),
         Raises(E.CheckpointError, "cannot read the checkpoint", "checkpoint_5.pt")),
    Case("checkpoint", "without the optimizer state", lambda t: _resume(t, lambda p: torch.save(
        {k: v for k, v in _good_state().items() if k != "optimizer"}, p)), Raises(E.CheckpointError, "but not ['optimizer']", "checkpoint_5.pt")),
    # tokenizer and vocabulary folders ---------------------------------------------------------------
    Case("tokenizer", "folder does not exist", lambda t: _tokenizer(str(t / "none")), Raises(E.ModelLoadError, "not found", "none")),
    Case("tokenizer", "an empty folder", lambda t: _tokenizer(str((t / "emptytok").mkdir() or t / "emptytok")),
         Raises(E.ModelLoadError, "cannot load", "emptytok")),
    Case("tokenizer", "a tokenizer.json that is not JSON", lambda t: _tokenizer(_vocab_garbage(t)), Raises(E.ModelLoadError, "cannot load", "tok")),
    Case("vocabulary", "extend: base folder without a model", lambda t: _extend(t, str((t / "base").mkdir() or t / "base")),
         Raises(E.VocabularyError, "no loadable tokenizer", "base")),
    Case("vocabulary", "extend: output folder not empty", lambda t: _extend(t, str(_BUNDLE["src"] / "models" / "text"),
                                                                       _text(t, "x", "") and str(t)),
         Raises(E.ConfigurationError, "not empty")),
    # command line -----------------------------------------------------------------------------------
    Case("cli", "medunic: unknown command", lambda t: _cli_error("frobnicate"), Raises(CLIFailed, "unknown command 'frobnicate'")),
    Case("cli", "medunic evaluate: --bundle missing", lambda t: _cli_error("evaluate", "--manifest", "m.jsonl", "--out", str(t)),
         Raises(CLIFailed, "the following arguments are required: --bundle")),
    Case("cli", "medunic evaluate: a bundle path that does not exist", lambda t: _cli_error(
        "evaluate", "--bundle", str(t / "nobundle"), "--manifest", str(t / "m.jsonl"), "--out", str(t / "o")),
         Raises(CLIFailed, "nobundle")),
    Case("cli", "medunic build-vocab: --num-tokens not a number", lambda t: _cli_error(
        "build-vocab", "--corpus", "c.txt", "--num-tokens", "many", "--base", "b", "--out", "o"), Raises(CLIFailed, "invalid int value: 'many'")),
    Case("cli", "medunic demo-data: an output path that is a file", lambda t: _cli_error(
        "demo-data", "--out", _text(t, "afile", "x"), "--studies", "2"), Raises(CLIFailed, "afile")),
    # Deploy app inputs ------------------------------------------------------------------------------
    Case("deploy", "app: input folder does not exist", lambda t: _app_error("-i", str(t / "noin"), "-o", str(t / "o"), "-m", str(_BUNDLE["src"])),
         Raises(CLIFailed, "input folder does not exist")),
    Case("deploy", "app: input is a file", lambda t: _app_error("-i", _text(t, "f.dcm", "x"), "-o", str(t / "o"), "-m", str(_BUNDLE["src"])),
         Raises(CLIFailed, "input must be a folder")),
    Case("deploy", "app: model path is not a trained bundle", lambda t: _app_error(
        "-i", str(Path(_dicom(t)).parent), "-o", str(t / "o"), "-m", str(t)), Raises(CLIFailed, "not a trained bundle")),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.surface}: {c.what}" for c in CASES])
def test_malformed_input(case: Case, tmp_path: Path, tiny_bundle: Path, caplog) -> None:
    _BUNDLE["src"] = tiny_bundle
    work = tmp_path / "w"
    work.mkdir()
    caplog.set_level("INFO")
    if isinstance(case.expect, Raises):
        with pytest.raises(case.expect.error) as info:
            case.call(work)
        err = info.value
        message = str(err)
        assert case.expect.fragment in message, message
        if case.expect.file is not None:
            assert case.expect.file in message, message
        if case.expect.field is not None:
            assert getattr(err, "field", None) == case.expect.field, (err, getattr(err, "field", None))
        if isinstance(err, E.MedUniCError):
            assert err.__cause__ is None or isinstance(err, (E.ModelLoadError,)) or err.__suppress_context__, "a library traceback leaks"
    else:
        counts = case.call(work)
        assert counts.get(case.expect.reason, 0) == 1, dict(counts)
        message = ""
    for value in PHI:
        assert value not in message and value not in caplog.text


def test_the_table_covers_every_surface() -> None:
    surfaces = {c.surface for c in CASES}
    assert surfaces >= {"dicom", "manifest", "corpus", "text", "bundle", "checkpoint", "tokenizer", "vocabulary", "cli", "deploy"}
    assert len(CASES) >= 40


def test_weights_only_refuses_the_pickle_payload_that_plain_pickle_would_run(tmp_path) -> None:
    """The checkpoint row's payload is real: plain ``pickle.load`` runs it (the marker appears); the
    checkpoint loader (``torch.load(weights_only=True)``) refuses it and the marker does not appear."""
    path = tmp_path / "checkpoints" / "checkpoint_5.pt"
    path.parent.mkdir()
    _pickle_checkpoint(path)
    marker = path.parent / "PWNED"
    with pytest.raises(E.CheckpointError):
        _resume(tmp_path / "again", lambda p: shutil.copy(path, p))
    assert not marker.exists() and not (tmp_path / "again" / "checkpoints" / "PWNED").exists()
    with open(path, "rb") as fh:
        pickle.load(fh)  # what weights_only=True prevents
    assert marker.exists()
