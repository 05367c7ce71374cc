"""10,000 fuzzed DICOM files through the package's DICOM readers (property-based, ``hypothesis``).

The cases and the property are those of ``tests/transforms/test_dicom_fuzz.py`` (``tests/dicom_mutations.py``),
at scale and with every seed: pydicom's test files including pydicom-data's real chest CR (RG1, plain and
JPEG 2000), the Modality / VOI LUT, palette and 1-bit files, and the demo generator's CR / DX / CT. Each
case goes to ``LoadDicomImage``, ``LoadImage(reader=GrayscaleDicomReader())``, the Deploy app's header
screen (with the SDK loader behind it) and, for CT / MR seeds, ``LoadDicomSeriesVolume`` as the middle
slice of a five-slice series. Outcomes: ``image`` (a correct image / header accepted / a volume),
``typed_error`` (one of this package's errors naming the file and the field) or ``crash`` (a bare
library exception, a typed error without the file or the field, PHI in a message, a hang beyond
``--timeout`` seconds, or an allocation beyond ``--memory-headroom`` GiB above the process's size).

Writes ``benchmarks/results/fuzz_dicom.{json,md}`` (``--tag`` changes the name) with the counts per
surface, the crash signatures with one example case each, and the run time. ``--cases`` sets the count
(hypothesis runs that many generated examples, derandomised by ``--seed``).

    python benchmarks/fuzz_dicom.py [--cases 10000] [--seed 0]
    # what the fuzzer finds on an older tree (e.g. the commit before the fixes):
    git archive <commit> monai_medunic | tar -x -C /tmp/base && \\
        PYTHONPATH=/tmp/base python benchmarks/fuzz_dicom.py --cases 2000 --tag baseline
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))


class _TimeBudgetSpent(Exception):
    """Raised inside the hypothesis test when ``--max-minutes`` is spent (not a finding: no case is counted)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (the run is reproducible)")
    p.add_argument("--max-mutations", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per surface call before it counts as a hang")
    p.add_argument("--memory-headroom", type=float, default=3.0, help="GiB of address space above the process's size")
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. 'baseline')")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this many minutes and report the cases run so far (a loaded machine)")
    args = p.parse_args(argv)

    import hypothesis
    from hypothesis import HealthCheck, Phase, given, seed, settings

    import dicom_mutations as dm
    import monai_medunic

    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # the SDK loader and the readers log every skipped file
    work = tempfile.mkdtemp(prefix="fuzz_dicom_")
    seeds = dm.seed_paths(os.path.join(work, "seeds"), large=True)
    surfaces = dm.Surfaces()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    per_seed: collections.Counter = collections.Counter()
    crashes: dict[tuple[str, str], dict] = {}
    slowest = [0.0, ""]
    n = [0]
    t0 = time.perf_counter()

    # the large seeds (RG1: 3.6 million pixels, JPEG 2000) cost seconds per decode: drawn a third as often
    weights = {name: 1 if name in dm.LARGE_SEEDS else 3 for name in seeds}

    @seed(args.seed)
    @settings(max_examples=args.cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(dm.cases(list(seeds), max_mutations=args.max_mutations, weights=weights))
    def run(case: dm.Case) -> None:
        if args.max_minutes is not None and time.perf_counter() - t0 > 60 * args.max_minutes:
            raise _TimeBudgetSpent
        n[0] += 1
        per_seed[case.seed] += 1
        for o in dm.check_case(case, seeds, os.path.join(work, "case"), surfaces, args.timeout,
                               int(args.memory_headroom * (1 << 30))):
            counts[o.surface][o.kind] += 1
            if o.seconds > slowest[0]:
                slowest[:] = [o.seconds, f"{o.surface}: {case}"]
            if o.kind == "crash":
                first = o.detail.splitlines()[0]
                signature = first.split(": ", 1)[0] + ": " + first.split(": ", 1)[-1][:90]
                entry = crashes.setdefault((o.surface, signature), {"count": 0, "example": str(case), "detail": o.detail[:2000]})
                entry["count"] += 1
        if n[0] % 500 == 0:
            print(f"{n[0]} cases, {time.perf_counter() - t0:.0f} s, crashes {sum(c['count'] for c in crashes.values())}",
                  flush=True)

    try:
        run()
    except _TimeBudgetSpent:
        print(f"time budget of {args.max_minutes:g} min spent after {n[0]} of {args.cases} cases", flush=True)
    seconds = time.perf_counter() - t0
    total_crashes = sum(c["count"] for c in crashes.values())
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPU",
        "package": str(Path(monai_medunic.__file__).parent),
        "hypothesis": hypothesis.__version__,
        "cases": n[0],
        "cases_requested": args.cases,
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "per_surface": {s: dict(c) for s, c in counts.items()},
        "per_seed": dict(per_seed),
        "crashes": total_crashes,
        "crash_signatures": [{"surface": s, "signature": sig, **v} for (s, sig), v in
                             sorted(crashes.items(), key=lambda kv: -kv[1]["count"])],
        "slowest_call_s": round(slowest[0], 2),
        "slowest_call": slowest[1],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "fuzz_dicom" + (f"_{args.tag}" if args.tag else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# DICOM fuzzing: {n[0]} cases ({result['date']})", "",
             f"`python benchmarks/fuzz_dicom.py --cases {args.cases} --seed {args.seed}"
             f"{f' --max-minutes {args.max_minutes:g}' if args.max_minutes is not None else ''}` on {result['package']}; "
             f"{n[0]} of {args.cases} cases run; "
             f"{seconds:.0f} s; slowest call {slowest[0]:.2f} s.", "",
             "| surface | image / accepted | typed error | crash |", "| --- | ---: | ---: | ---: |"]
    for s, c in counts.items():
        lines.append(f"| {s} | {c['image']} | {c['typed_error']} | {c['crash']} |")
    lines += ["", f"**Crashes: {total_crashes}**", ""]
    for entry in result["crash_signatures"]:
        lines.append(f"- {entry['count']} x {entry['surface']}: `{entry['signature']}` (e.g. `{entry['example']}`)")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
