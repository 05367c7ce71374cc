"""The Deploy app on a folder of demo studies with a corrupt study in the middle: exactly one result per intact
study, the corrupt one logged with its reason, nothing lost (``benchmarks/bench_deploy_load.py`` runs 10 and
200 studies and reports the peak RSS)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import deploy_load  # noqa: E402


@pytest.mark.slow
def test_one_result_per_study_and_a_corrupt_study_in_the_middle(tiny_bundle, tmp_path) -> None:
    dicom = deploy_load.demo_studies(tmp_path / "demo", 7)
    studies, corrupt = deploy_load.make_input(dicom, tmp_path / "input", 7, corrupt_index=3)
    assert corrupt == studies[3]
    run = deploy_load.run_app(tmp_path / "input", tmp_path / "output", tiny_bundle, studies, corrupt, timeout=1200)
    deploy_load.check_one_result_per_study(run)
    assert len(run.results()) == 6 and "Traceback" not in run.stderr
