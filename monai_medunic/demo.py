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

Run again into the same folder, the demo reuses every step an earlier run finished with the same inputs
(:class:`StepCache`: a JSON stamp in each step's output folder) and prints ``reused <step> (finished <time>,
<wall> s)``; a changed input reruns that step and everything downstream of it, ``--force`` reruns everything.
The summary lists each step's wall time (and whether it was reused) and the precision the training used.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from monai_medunic.errors import ConfigurationError, MedUniCError

__all__ = ["run_demo", "cli_main", "repo_root", "run_bundle", "StepCache", "StepRecord", "STAMP_NAME", "precision_choice",
           "build_parser"]

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


STAMP_NAME = "medunic_step.json"


@dataclass
class StepRecord:
    """One step of a demo run: ``status`` is ``"ran"`` or ``"reused"``; ``wall_s`` is this run's wall time (about 0
    when reused), ``built_wall_s`` the wall time of the run that built the step's outputs, ``finished`` when that run
    ended; ``fingerprint`` changes whenever the step's inputs or outputs do (its downstream steps hash it)."""

    name: str
    folder: Path
    status: str
    wall_s: float
    built_wall_s: float
    finished: str
    fingerprint: str
    result: Any = None

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.name, "folder": str(self.folder), "status": self.status, "wall_s": self.wall_s,
                "built_wall_s": self.built_wall_s, "finished": self.finished}


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(_jsonable(obj), sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _config_digests(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Content digest of each config file; a folder stands for every file under it (sorted, relative names)."""
    digests: dict[str, str] = {}
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if p.is_dir() else [p]
        for f in files:
            digests[str(f)] = _file_digest(f) if f.is_file() else "missing"
    return digests


def _outputs_digest(folder: Path) -> str:
    """Every file under ``folder`` but the stamp, as (relative path, size, mtime): a deleted, truncated, added or
    rewritten output changes it. ``"missing"`` for a folder that is not there."""
    if not folder.is_dir():
        return "missing"
    rows = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.name.startswith(STAMP_NAME):
            st = f.stat()
            rows.append([str(f.relative_to(folder)), st.st_size, st.st_mtime_ns])
    return _sha256_json(rows)


def _read_stamp(path: Path) -> dict[str, Any] | None:
    """A step's stamp, or None when there is none or it is not a whole stamp (then the step reruns)."""
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = ("inputs", "outputs", "version", "finished", "wall_s", "fingerprint")
    if not isinstance(stamp, dict) or any(k not in stamp for k in keys) or not isinstance(stamp["wall_s"], (int, float)):
        return None
    return stamp


class StepCache:
    """Reuse of the finished steps of a demo: run ``make demo`` twice and pay once.

    :meth:`run` runs a step into its own output folder and, on success only, writes a small JSON stamp there
    (``medunic_step.json``) with a digest of the step's inputs: its settings/arguments, the package version, the
    fingerprints of its upstream steps and the content of its config files. The next run skips a step whose stamp
    matches (same inputs, and the outputs listed then are all there, unchanged) and prints
    ``reused <step> (finished <time>, <wall> s)``. A changed input, a missing or partial output, or a missing stamp
    (an interrupted step writes none: the stamp is removed before a step starts) reruns the step; a rerun step has a
    new fingerprint, so every step downstream of it reruns too. ``force=True`` reruns everything.

    Not covered: code edits in a checkout that keep the package version; use ``--force`` after those.
    Thread-safe: steps may run side by side (the UniMedI / Uni-Mlip demos' pre-training runs).
    """

    def __init__(self, force: bool = False, version: str | None = None) -> None:
        if version is None:
            from monai_medunic import __version__ as version
        self.force = bool(force)
        self.version = str(version)
        self.records: list[StepRecord] = []
        self._lock = threading.Lock()

    def input_digest(self, name: str, settings: Any = None, upstream: Sequence[StepRecord] = (),
                     config_files: Sequence[str | os.PathLike] = ()) -> str:
        return _sha256_json({"step": name, "settings": settings, "version": self.version,
                             "upstream": {u.name: u.fingerprint for u in upstream}, "configs": _config_digests(config_files)})

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def _add(self, record: StepRecord) -> StepRecord:
        with self._lock:
            self.records.append(record)
        return record

    def run(self, name: str, folder: str | os.PathLike, fn: Callable[[], Any], settings: Any = None,
            upstream: Sequence[StepRecord] = (), config_files: Sequence[str | os.PathLike] = (), label: str | None = None) -> StepRecord:
        """Run ``fn()`` (which writes the step's outputs into ``folder``, emptied first) unless the stamp in
        ``folder`` matches; ``fn``'s JSON-able return value is kept in the stamp and returned as ``record.result``
        on reuse."""
        folder = Path(folder)
        stamp_path = folder / STAMP_NAME
        inputs = self.input_digest(name, settings, upstream, config_files)
        self._print(f"==> {label or name}")
        t0 = time.perf_counter()
        stamp = None if self.force else _read_stamp(stamp_path)
        if (stamp is not None and stamp.get("inputs") == inputs and stamp.get("outputs") == _outputs_digest(folder)
                and stamp.get("version") == self.version):
            self._print(f"    reused {name} (finished {stamp['finished']}, {stamp['wall_s']:.1f} s)")
            return self._add(StepRecord(name, folder, "reused", round(time.perf_counter() - t0, 1), float(stamp["wall_s"]),
                                        stamp["finished"], stamp["fingerprint"], stamp.get("result")))
        if folder.exists():  # a stale, partial or forced output: start from an empty folder, with no stamp
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        result = _jsonable(fn())
        wall = round(time.perf_counter() - t0, 1)
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        outputs = _outputs_digest(folder)
        fingerprint = _sha256_json([inputs, outputs, finished, time.time_ns()])
        tmp = stamp_path.with_name(stamp_path.name + ".tmp")  # the stamp appears whole or not at all
        _write_json(tmp, {"step": name, "inputs": inputs, "outputs": outputs, "version": self.version,
                          "finished": finished, "wall_s": wall, "fingerprint": fingerprint, "result": result})
        os.replace(tmp, stamp_path)
        self._print(f"    done in {wall:.1f} s")
        return self._add(StepRecord(name, folder, "ran", wall, wall, finished, fingerprint, result))

    def timed(self, name: str, label: str | None = None):
        """A step that always runs and keeps no stamp (summary, report): timed and listed with the others."""
        cache = self

        class _Ctx:
            def __enter__(self_inner):
                self_inner.t0 = time.perf_counter()
                cache._print(f"==> {label or name}")

            def __exit__(self_inner, *exc):
                wall = round(time.perf_counter() - self_inner.t0, 1)
                if exc[0] is None:
                    cache._print(f"    done in {wall:.1f} s")
                    cache._add(StepRecord(name, Path("."), "ran", wall, wall, time.strftime("%Y-%m-%d %H:%M:%S"), ""))

        return _Ctx()

    def timings(self) -> dict[str, float]:
        return {r.name: r.wall_s for r in self.records}

    def table(self) -> str:
        """Markdown: each step, whether it ran or was reused, its wall time in this run and when it was built."""
        lines = ["| step | status | wall time this run (s) | wall time when built (s) | finished |", "| --- | --- | --- | --- | --- |"]
        for r in self.records:
            lines.append(f"| {r.name} | {r.status} | {r.wall_s:.1f} | {r.built_wall_s:.1f} | {r.finished} |")
        return "\n".join(lines)


def precision_choice(requested: str = "auto", device: str = "cpu") -> dict[str, Any]:
    """The precision a training with ``requested`` precision uses on this machine, and why
    (:func:`~monai_medunic.engines.precision.resolve_precision`), e.g. ``fp32 (this CPU has no native bf16: AVX2)``."""
    import torch

    from monai_medunic.engines.precision import cpu_supports_bf16, resolve_precision

    resolved = resolve_precision(requested, device)
    capability = str(torch.backends.cpu.get_cpu_capability())
    native = cpu_supports_bf16()
    if str(requested).lower() == "auto":
        why = f"this CPU has native bf16: {capability}" if resolved == "bf16" else f"this CPU has no native bf16: {capability}"
    else:
        why = f"set to '{requested}' by the settings; this CPU: {capability}, native bf16 {'yes' if native else 'no'}"
    return {"requested": requested, "resolved": resolved, "cpu_capability": capability, "native_bf16": native,
            "text": f"{resolved} ({why})"}


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
    force: bool = False,
    pretrain_overrides: dict[str, Any] | None = None,
) -> dict:
    """Run the demo end to end and return the report dict (also written to ``out_dir/report.json``).

    Steps finished by an earlier run into the same ``out_dir`` with the same inputs are reused (:class:`StepCache`);
    ``force=True`` reruns every step. ``pretrain_overrides`` are extra settings of both pre-training runs (e.g. a
    smaller batch for a tiny data set)."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    root = repo_root()
    steps = StepCache(force=force)
    t_start = time.perf_counter()
    report: dict[str, Any] = {"settings": {"num_studies": num_studies, "seed": seed}, "out_dir": str(out)}
    data_dir, text_dir = out / "data", out / "text"
    manifest = data_dir / "manifest.jsonl"

    def generate() -> Any:
        from monai_medunic.data.demo import generate_demo_dataset

        return generate_demo_dataset(data_dir, num_studies=num_studies, seed=seed)

    data = steps.run("demo data", data_dir, generate, settings={"num_studies": num_studies, "seed": seed},
                     label=f"1/8 generate {num_studies} demo studies")
    report["dataset"] = data.result

    vocab_settings = {"base": {"vocab_size": 400, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128},
                      "extension": {"num_tokens": 150, "language": "es"}, "seed": seed}

    def vocabulary() -> Any:
        from monai_medunic.text.vocab import build_base_model, extend_vocabulary

        texts = _texts_by_language(manifest)
        base_dir = build_base_model(text_dir / "base_en", texts["en"], **vocab_settings["base"], seed=seed, overwrite=True)
        return extend_vocabulary(base_dir, texts["es"], text_dir / "extended", **vocab_settings["extension"], seed=seed, overwrite=True)

    vocab = steps.run("vocabulary", text_dir, vocabulary, settings=vocab_settings, upstream=[data],
                      label="2/8 English base vocabulary + Spanish vocabulary extension")
    report["vocabulary"] = vocab.result

    mlm = out / "bundles" / "cxr_text_mlm"
    mlm_settings = dict(MLM_DEMO_SETTINGS, base_model_dir=str(text_dir / "extended"), seed=seed)

    def post_pretrain() -> Any:
        _copy_bundle("cxr_text_mlm", mlm)
        corpora = []
        for lang, lang_texts in _texts_by_language(manifest).items():
            path = mlm / "corpora" / f"train_reports_{lang}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"report": t}, ensure_ascii=False) + "\n" for t in lang_texts), encoding="utf-8")
            corpora.append({"_target_": "monai_medunic.data.corpora.JSONLCorpus", "path": str(path), "language": lang})
        _write_json(mlm / "configs" / "demo_overrides.json", dict(mlm_settings, corpora=corpora))
        run_bundle(mlm, ["configs/train.json", "configs/demo_overrides.json"])
        return _read_json(mlm / "logs" / "mlm_loss.json")

    mlm_step = steps.run("mlm post-pre-training", mlm, post_pretrain, settings=mlm_settings, upstream=[data, vocab],
                         config_files=[root / "bundles" / "cxr_text_mlm" / "configs"],
                         label="3/8 cross-lingual MLM post-pre-training (bundle cxr_text_mlm)")
    report["mlm"] = mlm_step.result
    text_model = mlm / "models" / "hf_model"

    variants = [("medunic", 1.0)] + ([("medunic_no_ctr", 0.0)] if ablation else [])
    evaluations: dict[str, Any] = {}
    pretrained: dict[str, StepRecord] = {}
    precision = "auto"
    for variant, ctr_weight in variants:
        bundle = out / "bundles" / f"cxr_{variant}"
        settings = dict(PRETRAIN_DEMO_SETTINGS, text_model_dir=str(text_model), dataset_dir=str(data_dir),
                        seed=seed, ctr_weight=ctr_weight, resume=False)
        if pretrain_epochs is not None:
            settings["max_epochs"] = int(pretrain_epochs)
        settings.update(pretrain_overrides or {})
        precision = str(settings.get("precision", _bundle_default("cxr_medunic_pretrain", "precision", "auto")))

        def pretrain(bundle: Path = bundle, settings: dict = settings) -> None:
            _copy_bundle("cxr_medunic_pretrain", bundle)
            _write_json(bundle / "configs" / "demo_overrides.json", settings)
            run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"])

        pretrained[variant] = steps.run(f"pre-training {variant}", bundle, pretrain, settings=settings, upstream=[data, mlm_step],
                                        config_files=[root / "bundles" / "cxr_medunic_pretrain" / "configs"],
                                        label=f"4/8 Med-UniC pre-training, {variant} (bundle cxr_medunic_pretrain)")

        def evaluate(bundle: Path = bundle, variant: str = variant) -> Any:
            from monai_medunic.metrics.report import evaluate_bundle

            return evaluate_bundle(bundle, manifest, out / "eval" / variant, split="test")

        ev = steps.run(f"evaluation {variant}", out / "eval" / variant, evaluate, settings={"split": "test"},
                       upstream=[data, pretrained[variant]], label=f"5/8 zero-shot evaluation (en, es), {variant}")
        evaluations[variant] = dict(ev.result or {}, history=str(bundle / "logs" / "history.json"))
    report["evaluation"] = evaluations

    with steps.timed("summary", "6/8 summary"):
        summary = _summary_table(evaluations)
        print(summary, flush=True)
        report["summary_markdown"] = summary

    with steps.timed("report", "7/8 report (JSON, Markdown, PNG)"):
        report["plots"] = _plots(out, evaluations)
        if len(evaluations) == 2:
            from monai_medunic.metrics.report import write_ablation_report

            runs = {"without CTR": evaluations["medunic_no_ctr"], "with CTR": evaluations["medunic"]}
            report["ctr_ablation"] = write_ablation_report(runs, out)

    if run_app:
        deploy_dir = out / "deploy"
        app = steps.run("Deploy app", deploy_dir, lambda: _run_app_on_held_out(deploy_dir, manifest, out / "bundles" / "cxr_medunic"),
                        upstream=[data, pretrained["medunic"]], config_files=[root / "apps" / "cxr_findings"],
                        label="8/8 MONAI Deploy app on a held-out study")
        report["deploy"] = app.result
        if app.status == "reused" and app.result:
            from monai_medunic.deploy.launch import format_findings

            print(format_findings(app.result["results"]), flush=True)

    report["precision"] = precision_choice(precision, "cpu")
    report["steps"] = [r.as_dict() for r in steps.records]
    report["timings_s"] = steps.timings()
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    report["steps_markdown"] = steps.table()
    print(f"\nSteps (wall time; a reused step took its 'when built' time in the run that built it)\n{report['steps_markdown']}", flush=True)
    print(f"Training precision: {report['precision']['text']}", flush=True)
    _write_json(out / "report.json", report)
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    reused = sum(r.status == "reused" for r in steps.records)
    print(f"\nDemo finished in {report['total_s']:.0f} s ({reused} of {len(steps.records)} steps reused). "
          f"Report: {out / 'report.md'} (and report.json, *.png)", flush=True)
    return report


def _bundle_default(bundle: str, key: str, default: Any) -> Any:
    """A top-level setting of a bundle's ``configs/train.json``."""
    path = repo_root() / "bundles" / bundle / "configs" / "train.json"
    return (_read_json(path) or {}).get(key, default)


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


def _run_app_on_held_out(folder: Path, manifest: Path, bundle: Path) -> dict:
    """Run the Deploy app on the first held-out study: its copy in ``folder/input``, the SR and results in
    ``folder/output``, the app's log in ``folder/app.log``."""
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.deploy.launch import format_findings, run_cxr_findings_app

    from monai_medunic.data.demo import DEMO_FINDINGS

    test = manifest_datalist(manifest, split="test", findings=list(DEMO_FINDINGS))
    study_dir = Path(test[0]["image"]).parent
    app_in, app_out, log = folder / "input", folder / "output", folder / "app.log"
    for d in (app_in, app_out):
        if d.exists():
            shutil.rmtree(d)
    shutil.copytree(study_dir, app_in)
    language = test[0].get("language", "en")
    run = run_cxr_findings_app(app_in, app_out, bundle, language=language)
    log.write_text(run.stdout + run.stderr, encoding="utf-8")
    if run.returncode != 0:
        raise MedUniCError(f"the Deploy app failed (exit {run.returncode}); log: {log}")
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
    lines += ["## Steps and wall times", "",
              "A reused step was finished by an earlier run with the same inputs (`medunic demo --force` reruns all); "
              "its wall time when built is the one of that run.", "", report.get("steps_markdown", ""), ""]
    if report.get("precision"):
        lines += [f"Training precision: {report['precision']['text']}.", ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in report.get("plots", [])] + [""]
    ablation = Path(report.get("out_dir", ".")) / "ctr_ablation.md"
    if ablation.is_file():
        lines += ["## CTR ablation (same seed and budget)", "", ablation.read_text(encoding="utf-8"), ""]
    if report.get("deploy"):
        from monai_medunic.deploy.launch import format_findings

        lines += ["## Deploy app on a held-out study", "", "```", format_findings(report["deploy"]["results"]), "```", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``medunic demo``."""
    parser = argparse.ArgumentParser(prog="medunic demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    parser.add_argument("--studies", type=int, default=800, help="number of synthetic studies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs (default: the demo setting)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the pre-training without CTR")
    parser.add_argument("--no-app", action="store_true", help="skip the Deploy app step")
    parser.add_argument("--force", action="store_true",
                        help="rerun every step (default: reuse the steps an earlier run into --out finished with the same inputs)")
    return parser


def cli_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    run_demo(args.out, args.studies, args.seed, args.epochs, ablation=not args.no_ablation, run_app=not args.no_app,
             force=args.force)
    return 0
