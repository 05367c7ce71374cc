"""The Deploy app on a folder of many demo studies: one result per study, a corrupt study in the middle, peak RSS.

Shared by ``tests/apps/test_cxr_findings_load.py`` (a few studies) and ``benchmarks/bench_deploy_load.py``
(10 and 200 studies, the RSS figures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pydicom

from monai_medunic.deploy.launch import _raise_stack_limit  # the 32 MiB stack holoscan wants

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "apps" / "cxr_findings" / "app.py"


@dataclass
class LoadRun:
    studies: list[str]  # StudyInstanceUIDs in the input
    corrupt: str | None  # the study whose frontal image was truncated
    returncode: int
    peak_rss_mb: float
    seconds: float
    stdout: str
    stderr: str
    output: Path

    @property
    def log(self) -> str:
        f = self.output / "cxr_findings.log"
        return f.read_text(encoding="utf-8") if f.exists() else ""

    def results(self) -> dict[str, list[Path]]:
        """StudyInstanceUID -> the JSON results written for it."""
        out: dict[str, list[Path]] = {}
        for p in self.output.rglob("cxr_findings.json"):
            uid = json.loads(p.read_text(encoding="utf-8"))["study_instance_uid"]
            out.setdefault(uid, []).append(p)
        return out


def demo_studies(root: Path, n: int, seed: int = 17, image_size: int = 128) -> Path:
    """``n`` demo radiograph studies (frontal + some laterals and SR reports), no CT, no truth."""
    from monai_medunic.data.demo import generate_demo_dataset

    if not (root / "dicom").is_dir():
        generate_demo_dataset(root, num_studies=n, seed=seed, image_size=image_size, num_ct_studies=0, radiograph_truth=False)
    return root / "dicom"


def make_input(dicom_root: Path, dest: Path, n: int, corrupt_index: int | None) -> tuple[list[str], str | None]:
    """Symlink the first ``n`` study folders into ``dest``; the frontal image of study ``corrupt_index`` is
    copied with its pixel data cut in half (its header reads, its pixels do not decode)."""
    dest.mkdir(parents=True)
    studies, corrupt = [], None
    for i, study in enumerate(sorted(p for p in dicom_root.iterdir() if p.is_dir())[:n]):
        uid = str(pydicom.dcmread(next(study.glob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
        studies.append(uid)
        if i == corrupt_index:
            (dest / study.name).mkdir()
            for f in study.iterdir():
                data = f.read_bytes()
                if f.name.startswith("frontal"):
                    data = data[: len(data) // 2]
                (dest / study.name / f.name).write_bytes(data)
            corrupt = uid
        else:
            os.symlink(study, dest / study.name)
    return studies, corrupt


def run_app(input_dir: Path, output_dir: Path, model: Path, studies: list[str], corrupt: str | None,
            timeout: float = 3600) -> LoadRun:
    """Run the app in a child process; its peak RSS from ``wait4`` (the child's own high-water mark)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    t0 = time.perf_counter()
    with open(output_dir.parent / f"{output_dir.name}.stdout", "w+") as out, \
            open(output_dir.parent / f"{output_dir.name}.stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, str(APP), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model)],
                                env=env, stdout=out, stderr=err, preexec_fn=_raise_stack_limit)
        deadline = time.time() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.time() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return LoadRun(studies, corrupt, proc.returncode, usage.ru_maxrss / 1024.0, time.perf_counter() - t0, stdout,
                   stderr, output_dir)


def check_one_result_per_study(run: LoadRun) -> None:
    """Every intact study has exactly one SR and one JSON result; the corrupt one none, and the log names it."""
    assert run.returncode == 0, run.stderr[-3000:]
    results = run.results()
    intact = [s for s in run.studies if s != run.corrupt]
    assert sorted(results) == sorted(intact), (len(results), len(intact))
    assert all(len(v) == 1 for v in results.values())
    srs = list(run.output.rglob("*.dcm"))
    assert len(srs) == len(intact)
    if run.corrupt is not None:
        assert run.corrupt in run.log and "cannot decode the pixel data" in run.log, run.log[-3000:]
