"""`medunic evaluate` / evaluate_bundle end to end on demo DICOM studies and the tiny trained bundle,
bad input (missing labels, single-class column, missing translation), and the CTR-ablation table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from monai_medunic.cli import main as medunic_main
from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.errors import MetricInputError, TranslationMissingError
from monai_medunic.metrics.report import ablation_table, evaluate_bundle, render_markdown, write_ablation_report
from monai_medunic.text.prompts import FINDING_NAMES

FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    info = generate_demo_dataset(tmp_path_factory.mktemp("eval_demo") / "demo", num_studies=16, seed=5, lateral_fraction=0.1)
    return Path(info.manifest_path)


def _rewrite(manifest: Path, out: Path, edit) -> Path:
    """Copy a manifest with absolute paths, applying edit(record, index) to every record."""
    recs = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    for i, rec in enumerate(recs):
        rec["image"] = str(manifest.parent / rec["image"])
        if rec.get("report_sr"):
            rec["report_sr"] = str(manifest.parent / rec["report_sr"])
        edit(rec, i)
    out.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    return out


@pytest.fixture(scope="module")
def report(tiny_bundle, demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    return out, evaluate_bundle(tiny_bundle, demo, out, split="all", gradcam_images=1, print_summary=False)


def test_report_files_and_structure(report) -> None:
    out, rep = report
    assert json.loads((out / "report.json").read_text()) == rep
    assert rep["bundle"]["name"] and rep["bundle"]["version"] == "0.1.0"
    n = rep["data"]["n_images"]
    assert n == sum(rep["data"]["by_language"].values()) and set(rep["data"]["by_language"]) == {"en", "es"}
    assert rep["data"]["skipped"].get("lateral_view", 0) >= 1  # lateral views are filtered with a counted reason
    for plang in ("en", "es"):
        assert set(rep["zero_shot"][plang]) == {"en", "es", "all"}
        assert rep["zero_shot"][plang]["all"]["n"] == n
        assert set(rep["zero_shot"][plang]["all"]["per_finding_auc"]) == set(FINDINGS)
    for lang in ("en", "es", "all"):
        assert set(rep["retrieval"][lang]["i2t"]) == {"R@1", "R@5", "R@10"}
    assert rep["retrieval"]["all"]["n"] == n
    gap = rep["language_gap"]
    # text set = reports + translations: every study once in each language
    assert gap["text"]["counts"] == {"en": n, "es": n} and gap["text"]["majority_baseline"] == 0.5
    assert 0.0 <= gap["image"]["probe_accuracy"] <= 1.0 and gap["image"]["centroid_gap"] > 0
    assert 0.0 <= gap["prompt_agreement"] <= 1.0
    for name in rep["plots"]:
        assert (out / name).stat().st_size > 1000
    assert "tsne.png" in rep["plots"] and any(p.startswith("gradcam_0") for p in rep["plots"])
    md = (out / "report.md").read_text()
    assert "| en | es |" in md and "Language gap" in md and "R@10" in md


def test_zero_shot_numbers_match_an_independent_computation(report, tiny_bundle, demo) -> None:
    """Re-load the same images with MONAI dictionary transforms, score with the classifier, check with sklearn."""
    from monai.transforms import Compose

    from monai_medunic.data.manifest import load_manifest
    from monai_medunic.metrics.zero_shot import ZeroShotClassifier
    from monai_medunic.pretrained import load_pretrained_bundle
    from monai_medunic.transforms import LoadDicomImaged
    from monai_medunic.transforms.pipelines import model_input_transformd

    _, rep = report
    b = load_pretrained_bundle(tiny_bundle)
    recs = load_manifest(demo).records
    t = Compose([LoadDicomImaged("image"), model_input_transformd("image", b.image_size)])
    images = torch.stack([t({"image": r.image_paths[0]})["image"] for r in recs])
    clf = ZeroShotClassifier(b.model, b.tokenizer, FINDINGS, ("en", "es"), max_length=b.max_length)
    probs = clf(images, "es").probs.numpy()
    y = np.array([[r.labels[f] for f in FINDINGS] for r in recs])
    for j, f in enumerate(FINDINGS):
        expected = roc_auc_score(y[:, j], probs[:, j]) if len(set(y[:, j])) == 2 else None
        got = rep["zero_shot"]["es"]["all"]["per_finding_auc"][f]
        assert got == pytest.approx(expected, abs=1e-6) if expected is not None else got is None


def test_single_class_label_column_is_undefined_not_half(tiny_bundle, demo, tmp_path) -> None:
    def no_edema(rec, i):
        rec["labels"]["Edema"] = 0

    manifest = _rewrite(demo, tmp_path / "no_edema.jsonl", no_edema)
    rep = evaluate_bundle(tiny_bundle, manifest, tmp_path / "out", split="all", plots=False, gradcam=False, print_summary=False)
    cell = rep["zero_shot"]["en"]["all"]
    assert cell["per_finding_auc"]["Edema"] is None and "Edema" in cell["undefined_auc"]
    defined = [v for v in cell["per_finding_auc"].values() if v is not None]
    assert cell["macro_auc"] == pytest.approx(float(np.mean(defined)))
    assert '"Edema": null' in (tmp_path / "out" / "report.json").read_text()
    md = (tmp_path / "out" / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| en | ") and line.count("|") == 8)
    assert row.rstrip(" |").endswith("n/a")  # Edema, the last column


def test_missing_labels_name_manifest_field_and_finding(tiny_bundle, demo, tmp_path) -> None:
    def drop(rec, i):
        if i == 2:
            rec["labels"].pop("Nodule")

    manifest = _rewrite(demo, tmp_path / "partial.jsonl", drop)
    with pytest.raises(MetricInputError, match=r"partial\.jsonl: line 3: field 'labels'.*Nodule"):
        evaluate_bundle(tiny_bundle, manifest, tmp_path / "out", split="all", plots=False, gradcam=False, print_summary=False)
    # metrics without labels still run
    rep = evaluate_bundle(tiny_bundle, manifest, tmp_path / "out2", split="all", zero_shot=False, plots=False, gradcam=False,
                          print_summary=False)
    assert rep["zero_shot"] is None and rep["language_gap"]["prompt_agreement"] is None and rep["retrieval"]["all"]["n"] > 0
    assert "n/a" in render_markdown(rep)


def test_missing_translation_and_empty_split_fail_clearly(tiny_bundle, demo, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(FINDING_NAMES, "Test Only Finding", {"en": "Test only finding"})
    with pytest.raises(TranslationMissingError, match=r"Test Only Finding.*'es'"):
        evaluate_bundle(tiny_bundle, demo, tmp_path / "o", findings=["Cardiomegaly", "Test Only Finding"], print_summary=False)
    code = medunic_main(["evaluate", "--bundle", str(tiny_bundle), "--manifest", str(demo), "--out", str(tmp_path / "o"),
                         "--findings", "Cardiomegaly", "Test Only Finding"])
    err = capsys.readouterr().err
    assert code == 1 and "Test Only Finding" in err and "Traceback" not in err
    only_train = _rewrite(demo, tmp_path / "train_only.jsonl", lambda rec, i: rec.update(split="train"))
    with pytest.raises(MetricInputError, match="no usable record in split 'test'"):
        evaluate_bundle(tiny_bundle, only_train, tmp_path / "o", split="test", print_summary=False)


def test_cli_writes_report_and_prints_summary(tiny_bundle, demo, tmp_path, capsys) -> None:
    code = medunic_main(["evaluate", "--bundle", str(tiny_bundle), "--manifest", str(demo), "--out", str(tmp_path / "cli"),
                         "--split", "all", "--no-plots", "--no-gradcam"])
    out = capsys.readouterr().out
    assert code == 0 and "zero-shot:" in out and "language gap:" in out and "prompt agreement" in out
    assert json.loads((tmp_path / "cli" / "report.json").read_text())["plots"] == []


def test_ablation_table_side_by_side(report, tmp_path) -> None:
    _, rep = report
    other = json.loads(json.dumps(rep))
    other["language_gap"]["text"]["probe_accuracy"] = 0.5
    other["language_gap"]["prompt_agreement"] = None
    table = write_ablation_report({"without CTR": rep, "with CTR": other}, tmp_path)
    rows = {r["metric"]: r for r in table["rows"]}
    assert rows["text language-ID probe accuracy"]["with CTR"] == 0.5
    assert rows["zero-shot macro AUC, es prompts, en data"]["without CTR"] == rep["zero_shot"]["es"]["en"]["macro_auc"]
    md = (tmp_path / "ctr_ablation.md").read_text()
    diff = 0.5 - rep["language_gap"]["text"]["probe_accuracy"]
    assert f"| text language-ID probe accuracy | {rep['language_gap']['text']['probe_accuracy']:.3f} | 0.500 | {diff:.3f} |" in md
    assert "| prompt agreement (en vs es) |" in md and md.count("n/a") >= 2
    assert json.loads((tmp_path / "ctr_ablation.json").read_text()) == table
    with pytest.raises(MetricInputError):
        ablation_table({})


def test_evaluate_bundle_from_a_bundle_config(tiny_bundle, demo, tmp_path) -> None:
    """A bundle's evaluate.json reaches evaluate_bundle through a plain `_target_` with plain arguments."""
    from monai.bundle import ConfigParser

    parser = ConfigParser({
        "bundle_root": str(tiny_bundle),
        "manifest": str(demo),
        "evaluate": {"_target_": "monai_medunic.metrics.report.evaluate_bundle", "bundle_dir": "@bundle_root",
                     "manifest": "@manifest", "out_dir": str(tmp_path / "cfg"), "split": "all", "plots": False,
                     "gradcam": False, "print_summary": False},
    })
    rep = parser.get_parsed_content("evaluate")
    assert rep["data"]["n_images"] > 0 and (tmp_path / "cfg" / "report.md").is_file()
