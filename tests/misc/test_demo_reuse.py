"""Reuse of finished demo steps (``medunic demo`` run twice pays once; ``--force`` or a changed input reruns), and
the summary's per-step wall times and precision line (issue 16, section 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from monai_medunic.demo import STAMP_NAME, StepCache, build_parser, precision_choice, run_demo
from monai_medunic.engines.precision import resolve_precision

# ---------------------------------------------------------------------------------------------- the stamp logic


def _chain(tmp: Path, cache: StepCache, calls: list[str], seed: int = 0, config_text: str | None = None) -> tuple:
    """Two steps, ``make`` -> ``use``: ``use`` reads ``make``'s output; the config file is an input of ``make``."""
    config = tmp / "config.json"
    if config_text is not None:
        config.write_text(config_text, encoding="utf-8")

    def make() -> dict:
        calls.append("make")
        (tmp / "a" / "numbers.txt").write_text(f"{seed} {seed + 1}", encoding="utf-8")
        (tmp / "a" / "sub").mkdir()
        (tmp / "a" / "sub" / "more.txt").write_text("x" * 10, encoding="utf-8")
        return {"seed": seed}

    def use() -> int:
        calls.append("use")
        total = sum(int(v) for v in (tmp / "a" / "numbers.txt").read_text(encoding="utf-8").split())
        (tmp / "b" / "sum.txt").write_text(str(total), encoding="utf-8")
        return total

    a = cache.run("make", tmp / "a", make, settings={"seed": seed}, config_files=[config])
    b = cache.run("use", tmp / "b", use, upstream=[a])
    return a, b


def test_stamp_reuses_matching_steps_and_reruns_changed_ones_and_their_downstream(tmp_path, capsys) -> None:
    calls: list[str] = []
    a, b = _chain(tmp_path, StepCache(), calls, config_text='{"k": 1}')
    assert calls == ["make", "use"] and (a.status, b.status) == ("ran", "ran") and b.result == 1
    stamp = json.loads((tmp_path / "a" / STAMP_NAME).read_text(encoding="utf-8"))
    assert stamp["wall_s"] == a.wall_s and stamp["result"] == {"seed": 0} and len(stamp["inputs"]) == 64
    mtime = (tmp_path / "b" / "sum.txt").stat().st_mtime_ns
    capsys.readouterr()

    # same inputs: both reused, results restored from the stamps, outputs untouched
    calls.clear()
    a2, b2 = _chain(tmp_path, StepCache(), calls)
    assert calls == [] and (a2.status, b2.status) == ("reused", "reused") and b2.result == 1 and a2.result == {"seed": 0}
    out = capsys.readouterr().out
    assert re.search(r"reused make \(finished \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, \d+\.\d s\)", out), out
    assert "reused use (finished" in out and (tmp_path / "b" / "sum.txt").stat().st_mtime_ns == mtime
    assert a2.fingerprint == a.fingerprint and a2.built_wall_s == a.wall_s

    # a changed setting reruns the step and its downstream
    calls.clear()
    a3, b3 = _chain(tmp_path, StepCache(), calls, seed=5)
    assert calls == ["make", "use"] and b3.result == 11 and a3.fingerprint != a.fingerprint

    # a changed config file's content reruns it (and so its downstream)
    calls.clear()
    _chain(tmp_path, StepCache(), calls, seed=5, config_text='{"k": 2}')
    assert calls == ["make", "use"]

    # a deleted stamp (as an interrupted step leaves) reruns that step and everything downstream
    calls.clear()
    (tmp_path / "a" / STAMP_NAME).unlink()
    _chain(tmp_path, StepCache(), calls, seed=5)
    assert calls == ["make", "use"]

    # a missing (partial) output of the downstream step reruns it alone; upstream reused
    calls.clear()
    (tmp_path / "b" / "sum.txt").unlink()
    a5, _ = _chain(tmp_path, StepCache(), calls, seed=5)
    assert calls == ["use"] and a5.status == "reused" and (tmp_path / "b" / "sum.txt").read_text(encoding="utf-8") == "11"
    # a rewritten upstream output reruns it too
    calls.clear()
    (tmp_path / "a" / "sub" / "more.txt").write_text("y" * 11, encoding="utf-8")
    _chain(tmp_path, StepCache(), calls, seed=5)
    assert calls == ["make", "use"]

    # force reruns everything
    calls.clear()
    a6, b6 = _chain(tmp_path, StepCache(force=True), calls, seed=5)
    assert calls == ["make", "use"] and (a6.status, b6.status) == ("ran", "ran")

    # a new package version reruns
    calls.clear()
    _chain(tmp_path, StepCache(version="99.0"), calls, seed=5)
    assert calls == ["make", "use"]


def test_an_interrupted_step_leaves_no_stamp_and_reruns_from_an_empty_folder(tmp_path) -> None:
    folder = tmp_path / "step"
    cache = StepCache()
    cache.run("s", folder, lambda: (folder / "done.txt").write_text("1", encoding="utf-8"), settings={"n": 1})
    assert (folder / STAMP_NAME).is_file()

    def crash() -> None:
        (folder / "partial.txt").write_text("half", encoding="utf-8")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StepCache().run("s", folder, crash, settings={"n": 2})
    assert not (folder / STAMP_NAME).exists() and (folder / "partial.txt").is_file()
    calls = []
    rec = StepCache().run("s", folder, lambda: calls.append(1), settings={"n": 2})
    assert rec.status == "ran" and calls == [1] and not (folder / "partial.txt").exists()
    # a stamp cut short (a crash while writing it) is no stamp: the step reruns, no JSON traceback
    text = (folder / STAMP_NAME).read_text(encoding="utf-8")
    (folder / STAMP_NAME).write_text(text[: len(text) // 2], encoding="utf-8")
    rec = StepCache().run("s", folder, lambda: calls.append(2), settings={"n": 2})
    assert rec.status == "ran" and calls == [1, 2] and json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))["step"] == "s"


def test_precision_choice_names_the_resolved_precision_and_why() -> None:
    auto = precision_choice("auto", "cpu")
    assert auto["resolved"] == resolve_precision("auto", "cpu")
    assert auto["text"].startswith(f"{auto['resolved']} (this CPU has ")
    assert auto["cpu_capability"] in auto["text"] and ("no native bf16" in auto["text"]) == (auto["resolved"] == "fp32")
    fixed = precision_choice("fp32", "cpu")
    assert fixed["resolved"] == "fp32" and "set to 'fp32'" in fixed["text"]


def test_command_line_has_force() -> None:
    assert build_parser().parse_args(["--force"]).force is True
    assert build_parser().parse_args([]).force is False


# ---------------------------------------------------------------------------------------------- the real demo

TINY = {"batch_size": 8, "image_size": 64, "val_batch_size": 16}
CACHED = ("demo data", "vocabulary", "mlm post-pre-training", "pre-training medunic", "evaluation medunic")


def _mtimes(out: Path) -> dict[str, int]:
    """Every step output's mtime (not the report files, which every run writes)."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for d in ("data", "text", "bundles", "eval")
            for p in (out / d).rglob("*") if p.is_file()}


def _demo(out: Path, capsys, epochs: int = 1, force: bool = False) -> tuple[dict, dict[str, str], str]:
    report = run_demo(out, num_studies=32, seed=0, pretrain_epochs=epochs, ablation=False, run_app=False, force=force,
                      pretrain_overrides=TINY)
    status = {s["step"]: s["status"] for s in report["steps"]}
    return report, status, capsys.readouterr().out


def test_demo_rerun_reuses_finished_steps_and_reruns_what_changed(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    first, status, _ = _demo(out, capsys)
    assert all(status[s] == "ran" for s in CACHED)
    before = _mtimes(out)

    # the summary: each step's wall time and whether it was reused, and the precision the training used
    md = (out / "report.md").read_text(encoding="utf-8")
    choice = precision_choice("auto", "cpu")
    assert f"Training precision: {choice['text']}." in md and first["precision"]["resolved"] == resolve_precision("auto", "cpu")
    for step in first["steps"]:
        assert step["wall_s"] >= 0.0 and f"| {step['step']} | ran | {step['wall_s']:.1f} |" in md
    assert next(s for s in first["steps"] if s["step"] == "pre-training medunic")["wall_s"] > 1.0

    # run twice: every step reused, nothing rewritten
    second, status, printed = _demo(out, capsys)
    assert all(status[s] == "reused" for s in CACHED), status
    for step in CACHED:
        assert re.search(rf"reused {step} \(finished [0-9: -]+, \d+\.\d s\)", printed), printed
    assert _mtimes(out) == before
    assert json.dumps(second["evaluation"]["medunic"]["zero_shot"]) == json.dumps(first["evaluation"]["medunic"]["zero_shot"])
    md = (out / "report.md").read_text(encoding="utf-8")
    built = {s["step"]: s["wall_s"] for s in first["steps"]}
    assert f"| pre-training medunic | reused | 0.0 | {built['pre-training medunic']:.1f} |" in md
    assert f"Training precision: {choice['text']}" in printed

    # a changed input (epochs) reruns pre-training and its downstream, reuses data, vocabulary and MLM (their
    # outputs untouched); a deleted stamp reruns its step the same way (test_stamp_reuses_matching_steps_...)
    _, status, _ = _demo(out, capsys, epochs=2)
    assert [status[s] for s in CACHED] == ["reused"] * 3 + ["ran"] * 2
    upstream = ("data/", "text/", "bundles/cxr_text_mlm/")
    assert {k: v for k, v in _mtimes(out).items() if k.startswith(upstream)} == {k: v for k, v in before.items() if k.startswith(upstream)}
    assert json.loads((out / "bundles" / "cxr_medunic" / "configs" / "demo_overrides.json").read_text())["max_epochs"] == 2
    assert (out / "data" / "manifest.jsonl").stat().st_mtime_ns == before["data/manifest.jsonl"]

    # force reruns everything
    _, status, printed = _demo(out, capsys, epochs=2, force=True)
    assert all(status[s] == "ran" for s in CACHED) and "    reused " not in printed
    assert (out / "data" / "manifest.jsonl").stat().st_mtime_ns != before["data/manifest.jsonl"]
