"""``medunic demo``: the whole Med-UniC pipeline on the embedded synthetic dataset, on a CPU.

1. generate the demo dataset (synthetic bilingual chest radiograph studies as DICOM),
2. build an English-only base text model and extend its vocabulary with Spanish (spaCy + TF-IDF),
3. run a short cross-lingual MLM post-pre-training (bundle ``cxr_text_mlm``),
4. pre-train Med-UniC with the bundle ``cxr_medunic_pretrain`` (and, for the CTR ablation, once more
   without CTR, same seed and budget),
5. evaluate zero-shot in English and Spanish on held-out studies, with retrieval and language-gap numbers,
6. print a summary table,
7. write ``report.json``, ``report.md`` and PNG plots into the output folder,
8. run the MONAI Deploy app on a held-out study and print the findings it wrote.

Every bundle runs as a user would run it: ``python -m monai.bundle run`` in a subprocess, with the demo's
settings in a generated override config file next to the bundle (``configs/demo_overrides.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from monai_medunic.errors import ConfigurationError, MedUniCError

__all__ = ["run_demo", "cli_main", "repo_root", "run_bundle"]

logger = logging.getLogger("monai_medunic.demo")

DEMO_FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]

def _bundle_demo_settings(bundle: str) -> dict[str, Any]:
    """A bundle's named demo config (``bundles/<bundle>/configs/demo.json``): the demo-scale settings a user
    appends to ``configs/train.json`` to train small (the bundle's defaults stay at the paper's sizes)."""
    path = Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs" / "demo.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# Demo-scale settings of the pre-training bundle (bundles/cxr_medunic_pretrain/configs/demo.json; e.g. the
# demo's 2-layer text model is trained by MLM only, which leaves its [CLS] vector untrained: mean pooling
# learns the image-report alignment far faster here, while the bundle default stays "cls").
PRETRAIN_DEMO_SETTINGS: dict[str, Any] = _bundle_demo_settings("cxr_medunic_pretrain")
MLM_DEMO_SETTINGS: dict[str, Any] = _bundle_demo_settings("cxr_text_mlm")


def repo_root() -> Path:
    """The project checkout holding ``bundles/`` and ``apps/`` (override with ``MEDUNIC_HOME``)."""
    env = os.environ.get("MEDUNIC_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[1]
    if not (root / "bundles").is_dir():
        raise ConfigurationError(f"{root}: no 'bundles' folder; set MEDUNIC_HOME to the monai-medunic checkout")
    return root


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False), encoding="utf-8")


def run_bundle(bundle_root: Path, config_files: Sequence[str | Path], log_file: Path | None = None,
               env: dict[str, str] | None = None) -> None:
    """Run ``python -m monai.bundle run`` on ``bundle_root`` with the given config files (later ones override).

    Output goes to ``log_file`` (and its tail to the error on failure); ``env`` adds environment variables
    (e.g. ``OMP_NUM_THREADS`` for runs side by side)."""
    configs = [str(Path(c) if Path(c).is_absolute() else bundle_root / c) for c in config_files]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]",
        "--bundle_root", str(bundle_root),
        "--logging_file", str(bundle_root / "configs" / "logging.conf"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    log = log_file or bundle_root / "logs" / "run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    progress = _BundleProgress(bundle_root.name)
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            f.write(chunk)
            progress.feed(chunk)
        proc.wait()
    progress.close()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        raise MedUniCError(f"bundle run failed ({bundle_root.name}, exit {proc.returncode}); log: {log}\n{tail}")


_ITERATION_LINE = re.compile(rb"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- loss: ([-0-9.eE+naif]+)")


class _BundleProgress:
    """One live terminal line per bundle run, from the StatsHandler lines of its output: epoch, iteration,
    loss, elapsed time and an ETA from the mean time per iteration so far (refreshed every few seconds)."""

    def __init__(self, name: str, every_s: float = 5.0) -> None:
        self.name, self.every_s = name, every_s
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.tail = b""
        self.shown = False
        self.interactive = sys.stdout.isatty()

    def feed(self, chunk: bytes) -> None:
        data = self.tail + chunk
        lines = re.split(rb"[\r\n]", data)
        self.tail = lines.pop()
        for line in lines:
            m = _ITERATION_LINE.search(line)
            if m:
                self._show(*(int(x) for x in m.groups()[:4]), m.group(5).decode())

    def _show(self, epoch: int, epochs: int, it: int, its: int, loss: str) -> None:
        now = time.perf_counter()
        done, total = (epoch - 1) * its + it, epochs * its
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / max(done, 1) * (total - done)
        text = (f"    [{self.name}] epoch {epoch}/{epochs}, iteration {it}/{its}, loss {loss}; "
                f"{elapsed / 60:.1f} min elapsed, ETA {eta / 60:.1f} min")
        if self.interactive:
            print("\r" + text.ljust(100), end="", flush=True)
        elif epoch != getattr(self, "_epoch", None) or done == total:  # a log: one line per epoch
            print(text, flush=True)
        self._epoch = epoch
        self.shown = True

    def close(self) -> None:
        if self.shown and self.interactive:
            print(flush=True)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (bundle runs, worker pools): the
    work a demo did, whatever the machine's load."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def step(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()
                print(f"==> {name}", flush=True)

            def __exit__(self_inner, *exc):
                timer.times[name] = round(time.perf_counter() - self_inner.t0, 1)
                if exc[0] is None:
                    print(f"    done in {timer.times[name]:.1f} s", flush=True)

        return _Ctx()


def _texts_by_language(manifest: Path) -> dict[str, list[str]]:
    from monai_medunic.data.datalist import manifest_datalist

    texts: dict[str, list[str]] = {}
    for rec in manifest_datalist(manifest, split="train"):
        texts.setdefault(rec["language"], []).append(rec["report"])
    return texts


def _copy_bundle(name: str, dest: Path) -> Path:
    src = repo_root() / "bundles" / name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("models", "logs", "eval", "__pycache__"))
    return dest


def run_demo(
    out_dir: str | os.PathLike = "demo_output",
    num_studies: int = 800,
    seed: int = 0,
    pretrain_epochs: int | None = None,
    ablation: bool = True,
    run_app: bool = True,
) -> dict:
    """Run the demo end to end and return the report dict (also written to ``out_dir/report.json``)."""
    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.text.vocab import build_base_model, extend_vocabulary

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    t_start = time.perf_counter()
    report: dict[str, Any] = {"settings": {"num_studies": num_studies, "seed": seed}, "out_dir": str(out)}

    with timer.step(f"1/8 generate {num_studies} demo studies"):
        data_dir = out / "data"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        info = generate_demo_dataset(data_dir, num_studies=num_studies, seed=seed)
        manifest = data_dir / "manifest.jsonl"
        report["dataset"] = _jsonable(info)

    with timer.step("2/8 English base vocabulary + Spanish vocabulary extension"):
        texts = _texts_by_language(manifest)
        text_dir = out / "text"
        base_dir = build_base_model(text_dir / "base_en", texts["en"], vocab_size=400, hidden_size=64, num_layers=2,
                                    num_heads=2, max_position_embeddings=128, seed=seed, overwrite=True)
        ext = extend_vocabulary(base_dir, texts["es"], text_dir / "extended", num_tokens=150, language="es",
                                seed=seed, overwrite=True)
        report["vocabulary"] = _jsonable(ext)

    with timer.step("3/8 cross-lingual MLM post-pre-training (bundle cxr_text_mlm)"):
        mlm = _copy_bundle("cxr_text_mlm", out / "bundles" / "cxr_text_mlm")
        corpora = []
        for lang, lang_texts in texts.items():
            path = text_dir / f"train_reports_{lang}.jsonl"
            path.write_text("".join(json.dumps({"report": t}, ensure_ascii=False) + "\n" for t in lang_texts), encoding="utf-8")
            corpora.append({"_target_": "monai_medunic.data.corpora.JSONLCorpus", "path": str(path), "language": lang})
        overrides = dict(MLM_DEMO_SETTINGS, base_model_dir=str(text_dir / "extended"), corpora=corpora, seed=seed)
        _write_json(mlm / "configs" / "demo_overrides.json", overrides)
        run_bundle(mlm, ["configs/train.json", "configs/demo_overrides.json"])
        text_model = mlm / "models" / "hf_model"
        report["mlm"] = _read_json(mlm / "logs" / "mlm_loss.json")

    variants = [("medunic", 1.0)] + ([("medunic_no_ctr", 0.0)] if ablation else [])
    evaluations: dict[str, Any] = {}
    for i, (variant, ctr_weight) in enumerate(variants):
        with timer.step(f"4/8 Med-UniC pre-training, {variant} (bundle cxr_medunic_pretrain)"):
            bundle = _copy_bundle("cxr_medunic_pretrain", out / "bundles" / f"cxr_{variant}")
            settings = dict(PRETRAIN_DEMO_SETTINGS, text_model_dir=str(text_model), dataset_dir=str(data_dir),
                            seed=seed, ctr_weight=ctr_weight, resume=False)
            if pretrain_epochs is not None:
                settings["max_epochs"] = int(pretrain_epochs)
            _write_json(bundle / "configs" / "demo_overrides.json", settings)
            run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"])
        with timer.step(f"5/8 zero-shot evaluation (en, es), {variant}"):
            from monai_medunic.metrics.report import evaluate_bundle

            evaluations[variant] = evaluate_bundle(bundle, manifest, out / "eval" / variant, split="test")
            evaluations[variant]["history"] = str(bundle / "logs" / "history.json")
    report["evaluation"] = evaluations

    with timer.step("6/8 summary"):
        summary = _summary_table(evaluations)
        print(summary, flush=True)
        report["summary_markdown"] = summary

    with timer.step("7/8 report (JSON, Markdown, PNG)"):
        report["plots"] = _plots(out, evaluations)
        if len(evaluations) == 2:
            from monai_medunic.metrics.report import write_ablation_report

            runs = {"without CTR": evaluations["medunic_no_ctr"], "with CTR": evaluations["medunic"]}
            report["ctr_ablation"] = write_ablation_report(runs, out)

    if run_app:
        with timer.step("8/8 MONAI Deploy app on a held-out study"):
            report["deploy"] = _run_app_on_held_out(out, manifest, out / "bundles" / "cxr_medunic")

    report["timings_s"] = timer.times
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    _write_json(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    print(f"\nDemo finished in {report['total_s']:.0f} s. Report: {out / 'report.md'} (and report.json, *.png)", flush=True)
    return report


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "as_dict"):
        return _jsonable(obj.as_dict())
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _summary_table(evaluations: dict[str, Any]) -> str:
    lines = [
        "| model | prompts | data: en | data: es | all | retrieval R@5 i2t | language-ID probe (text) | centroid gap (text) | prompt agreement en/es |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, ev in evaluations.items():
        zs = ev.get("zero_shot", {})
        gap = ev.get("language_gap", {})
        r5 = ev.get("retrieval", {}).get("all", {}).get("i2t", {}).get("R@5")
        for lang in ("en", "es"):
            cell = zs.get(lang, {})
            lines.append(
                f"| {variant} | {lang} | {_fmt(cell.get('en', {}).get('macro_auc'))} | {_fmt(cell.get('es', {}).get('macro_auc'))} "
                f"| {_fmt(cell.get('all', {}).get('macro_auc'))} | {_fmt(r5)} | {_fmt(gap.get('text', {}).get('probe_accuracy'))} "
                f"| {_fmt(gap.get('text', {}).get('centroid_gap'))} | {_fmt(gap.get('prompt_agreement'))} |"
            )
    return "\n".join(lines)


def _plots(out: Path, evaluations: dict[str, Any]) -> list[str]:
    from monai_medunic.metrics.plots import plot_loss_curves

    names = []
    for variant, ev in evaluations.items():
        history = _read_json(Path(ev["history"]))
        if history:
            path = out / f"loss_curves_{variant}.png"
            plot_loss_curves(history, path)
            names.append(path.name)
        for png in ev.get("plots", []):
            src = out / "eval" / variant / png
            if src.is_file():
                dst = out / f"{variant}_{png}"
                shutil.copy(src, dst)
                names.append(dst.name)
    return names


def _run_app_on_held_out(out: Path, manifest: Path, bundle: Path) -> dict:
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.deploy.launch import format_findings, run_cxr_findings_app

    from monai_medunic.data.demo import DEMO_FINDINGS

    test = manifest_datalist(manifest, split="test", findings=list(DEMO_FINDINGS))
    study_dir = Path(test[0]["image"]).parent
    app_in = out / "app_input"
    if app_in.exists():
        shutil.rmtree(app_in)
    shutil.copytree(study_dir, app_in)
    app_out = out / "app_output"
    if app_out.exists():
        shutil.rmtree(app_out)
    language = test[0].get("language", "en")
    run = run_cxr_findings_app(app_in, app_out, bundle, language=language)
    (out / "app.log").write_text(run.stdout + run.stderr, encoding="utf-8")
    if run.returncode != 0:
        raise MedUniCError(f"the Deploy app failed (exit {run.returncode}); log: {out / 'app.log'}")
    print(f"    Deploy app ({language}) wrote {len(run.srs)} DICOM SR file(s) under {app_out}", flush=True)
    print(format_findings(run.results), flush=True)
    truth = test[0].get("labels")
    if truth is not None:  # the demo knows the phantom's findings: show them next to the model's
        present = [n for n, v in zip(DEMO_FINDINGS, truth) if v == 1] or ["none (normal)"]
        print(f"    ground truth of this synthetic study: {', '.join(present)}", flush=True)
    return {"study": study_dir.name, "language": language, "sr_files": [str(p) for p in run.srs], "results": run.results}


def _markdown(report: dict) -> str:
    lines = ["# monai-medunic demo report", ""]
    lines += [f"Studies: {report['settings']['num_studies']}, seed {report['settings']['seed']}, "
              f"total time {report.get('total_s', 0):.0f} s.", ""]
    lines += ["## Zero-shot macro AUC (prompt language x data language) and language gap", "", report.get("summary_markdown", ""), ""]
    lines += ["CTR ablation: `medunic` is the full objective (CVL + SSV + CTR), `medunic_no_ctr` drops CTR, same seed and budget.", ""]
    lines += ["## Timings (s)", ""] + [f"- {k}: {v}" for k, v in report.get("timings_s", {}).items()] + [""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report.get("plots", [])] + [""]
    ablation = Path(report.get("out_dir", ".")) / "ctr_ablation.md"
    if ablation.is_file():
        lines += ["## CTR ablation (same seed and budget)", "", ablation.read_text(encoding="utf-8"), ""]
    if report.get("deploy"):
        from monai_medunic.deploy.launch import format_findings

        lines += ["## Deploy app on a held-out study", "", "```", format_findings(report["deploy"]["results"]), "```", ""]
    return "\n".join(lines)


def cli_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="medunic demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--studies", type=int, default=800, help="number of synthetic studies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs (default: the demo setting)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the pre-training without CTR")
    parser.add_argument("--no-app", action="store_true", help="skip the Deploy app step")
    args = parser.parse_args(argv)
    run_demo(args.out, args.studies, args.seed, args.epochs, ablation=not args.no_ablation, run_app=not args.no_app)
    return 0
