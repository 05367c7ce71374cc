"""Run the ``cxr_findings`` Deploy app as its own process (as a PACS gateway would) and summarise what it wrote.

``make demo`` uses this to end the pipeline: the trained bundle is run on a held-out demo study and
the findings of the SR's JSON companion are printed.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from monai_medunic.errors import ConfigurationError

from .results import RESULT_JSON_NAME, SR_FILE_NAME

__all__ = ["AppRunResult", "find_app", "run_cxr_findings_app", "format_findings"]

_STACK_BYTES = 32 * 1024 * 1024  # holoscan wants `ulimit -s 32768`


@dataclass
class AppRunResult:
    """Exit code, printed output and the files the app wrote (one SR and one JSON per study)."""

    returncode: int
    stdout: str
    stderr: str
    srs: list[Path] = field(default_factory=list)
    results: list[dict] = field(default_factory=list)


def find_app() -> Path:
    """``apps/cxr_findings/app.py`` of the source tree this package is installed from."""
    app = Path(__file__).resolve().parents[2] / "apps" / "cxr_findings" / "app.py"
    if not app.is_file():
        raise ConfigurationError(f"{app}: the cxr_findings app is not there (it ships with the source tree, not the wheel)")
    return app


def _raise_stack_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    if soft != resource.RLIM_INFINITY and soft < _STACK_BYTES:
        new = _STACK_BYTES if hard == resource.RLIM_INFINITY else min(_STACK_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_STACK, (new, hard))


def run_cxr_findings_app(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    language: str = "en",
    timeout: float | None = None,
) -> AppRunResult:
    """Run ``python apps/cxr_findings/app.py -i INPUT -o OUTPUT -m MODEL --language LANG`` and collect its outputs."""
    cmd = [sys.executable, str(find_app()), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model_dir)]
    cmd += ["--language", language]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=_raise_stack_limit
    )
    out = Path(output_dir)
    srs = sorted(out.rglob(SR_FILE_NAME)) if out.exists() else []
    results = [json.loads((p.parent / RESULT_JSON_NAME).read_text(encoding="utf-8")) for p in srs]
    return AppRunResult(proc.returncode, proc.stdout, proc.stderr, srs, results)


def format_findings(results: list[dict]) -> str:
    """A plain-text table of the findings of each study (from the JSON results)."""
    lines: list[str] = []
    for res in results:
        algo = res.get("algorithm", {})
        lines.append(
            f"study {res['study_instance_uid']} ({res['language']}, {algo.get('name')} {algo.get('version')}):"
        )
        width = max(len(f["name"]) for f in res["findings"])
        for f in res["findings"]:
            mark = "positive" if f["positive"] else "negative"
            lines.append(f"  {f['name'].ljust(width)}  {f['probability']:.3f}  {mark}")
        lines.append(f"  {res.get('disclaimer', '')}")
    return "\n".join(lines)
