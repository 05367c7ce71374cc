"""No patient identifier anywhere the package writes or says.

The demo data carry synthetic but realistic patient names, IDs and birth dates
(:func:`monai_medunic.data.demo.dicom_io.synthetic_identity`). This test runs the whole demo pipeline as a
user does (``medunic demo`` at a small size: data, vocabulary, MLM bundle, pre-training bundle, evaluation,
report), then the Deploy app with the trained bundle and the DICOM loaders on broken copies of demo files (so
that error messages are produced), and greps every log, report, JSON, Markdown, CSV, text file, PNG text
chunk, printed line and error message for every patient's name, ID and birth date. None may appear.

DICOM outputs keep patient identity only where the standard requires it: the SR written by the Deploy app
carries the Patient Module's name and ID (type 2: they file the SR with its study in a PACS) and an empty
birth date.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pydicom
import pytest

from monai_medunic.deploy.launch import _raise_stack_limit  # the 32 MiB stack holoscan wants

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
TEXT_SUFFIXES = {".log", ".json", ".jsonl", ".md", ".txt", ".csv", ".yaml", ".yml", ".conf", ".html"}


def png_text_chunks(path: Path) -> str:
    """The text of a PNG's tEXt, zTXt and iTXt chunks."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    out, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            out.append(body.replace(b"\0", b" ").decode("latin-1"))
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            out.append(key.decode("latin-1") + " " + zlib.decompress(rest[1:]).decode("latin-1"))
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")  # language tag
            _, _, text = rest.partition(b"\0")  # translated keyword
            out.append(key.decode("latin-1") + " " + (zlib.decompress(text) if compressed else text).decode("utf-8"))
        pos += 12 + length
    return "\n".join(out)


def identities(dicom_root: Path) -> list[tuple[str, re.Pattern]]:
    """(description, pattern) for every patient's name (as stored and as a person would write it), ID and birth
    date (YYYYMMDD and YYYY-MM-DD, not inside a longer number)."""
    seen: dict[str, re.Pattern] = {}
    for p in dicom_root.rglob("*.dcm"):
        h = pydicom.dcmread(p, stop_before_pixels=True)
        name, pid, birth = str(h.get("PatientName", "")), str(h.get("PatientID", "")), str(h.get("PatientBirthDate", ""))
        if name:
            family, _, given = name.partition("^")
            for form in {name, f"{given} {family}", f"{family}, {given}", f"{family} {given}"}:
                seen[f"name {form}"] = re.compile(re.escape(form), re.IGNORECASE)
        if pid:
            seen[f"id {pid}"] = re.compile(rf"(?<![A-Za-z0-9]){re.escape(pid)}(?![A-Za-z0-9])")
        if len(birth) == 8:
            seen[f"birth {birth}"] = re.compile(rf"(?<!\d)({birth}|{birth[:4]}-{birth[4:6]}-{birth[6:]})(?!\d)")
    return sorted(seen.items())


def leaks(text: str, patterns: list[tuple[str, re.Pattern]]) -> list[str]:
    return [what for what, pat in patterns if pat.search(text)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("phi") / "demo_output"
    proc = subprocess.run(
        [sys.executable, "-m", "monai_medunic.cli", "demo", "--out", str(out), "--studies", "60", "--epochs", "1",
         "--no-ablation", "--no-app"],  # the app runs below, on a demo study with broken copies
        capture_output=True, text=True, env=ENV, timeout=3000, cwd=out.parent, preexec_fn=_raise_stack_limit,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


@pytest.mark.slow
def test_no_patient_identifier_in_any_output_of_the_demo_pipeline(demo_run, tmp_path) -> None:
    out, printed = demo_run
    data = out / "data"
    patterns = identities(data / "dicom") + identities(data / "ct")
    assert len(patterns) > 100, "the demo data carry patient identities to look for"
    # the values are really in the inputs (so the grep below can find them)
    some_id = next(what for what, _ in patterns if what.startswith("id "))[3:]
    assert any(some_id in pydicom.dcmread(p, stop_before_pixels=True).PatientID for p in (data / "dicom").rglob("*.dcm"))

    # error messages: the Deploy app on a demo study with broken copies, and the DICOM loaders on them
    from monai_medunic.errors import MedUniCError
    from monai_medunic.transforms import LoadDicomImage, read_report_from_sr

    study = sorted(p for p in (data / "dicom").iterdir() if p.is_dir())[0]
    broken = tmp_path / "broken"
    shutil.copytree(study, broken)
    messages = []
    for i, f in enumerate(sorted(broken.rglob("*.dcm"))):
        raw = f.read_bytes()
        cut = broken / f"cut_{i}.dcm"
        cut.write_bytes(raw[: len(raw) // 2])
        for fn in (LoadDicomImage(), read_report_from_sr):
            for target in (f, cut):
                try:
                    fn(str(target))
                except MedUniCError as err:
                    messages.append(str(err))
    assert messages, "no error message was produced to check"
    from monai_medunic.deploy.launch import run_cxr_findings_app

    trained = sorted(p.parents[1] for p in (out / "bundles").glob("*/models/model.pt"))  # the pre-trained bundle(s)
    assert trained, "the demo wrote no trained bundle"
    app = run_cxr_findings_app(broken, tmp_path / "app_out", trained[0], language="es")
    assert app.returncode == 0, app.stderr[-3000:]
    printed += app.stdout + app.stderr + "\n".join(messages)

    checked = {"printed": leaks(printed, patterns)}
    counts = {"text": 0, "png": 0}
    for root in (out, tmp_path / "app_out"):
        for p in root.rglob("*"):
            if not p.is_file() or data in p.parents:
                continue  # the input dataset (DICOM with identities by design) is not an output
            if p.suffix in TEXT_SUFFIXES:
                checked[str(p)] = leaks(p.read_text(encoding="utf-8", errors="replace"), patterns)
                counts["text"] += 1
            elif p.suffix == ".png":
                checked[str(p)] = leaks(png_text_chunks(p), patterns)
                counts["png"] += 1
            elif p.name.startswith("events.out.tfevents"):
                checked[str(p)] = leaks(p.read_bytes().decode("latin-1"), patterns)
    assert counts["text"] >= 10 and counts["png"] >= 2, counts
    assert {k: v for k, v in checked.items() if v} == {}

    # DICOM outputs: the SRs keep the name and ID the Patient Module requires, and no birth date
    srs = list((tmp_path / "app_out").rglob("*.dcm"))
    assert srs
    for p in srs:
        sr = pydicom.dcmread(p)
        assert sr.Modality == "SR" and sr.PatientBirthDate == "" and sr.PatientID
