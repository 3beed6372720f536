"""The full fuzz campaign: hostile models, golden sets, CLI values, data, interruptions,
concurrency and DICOM headers that lie (tests/_fuzzdicom.py), each case judged clean / traceback / hang / wrong / memory (see tests/_fuzz.py).

    python benchmarks/fuzz_campaign.py                       # this checkout
    python benchmarks/fuzz_campaign.py --before ../old-tree  # the same cases against another
                                                             # checkout too: BEFORE and AFTER tables

Cases are seeded (``--seed``): kill times, flipped bytes and sampled values repeat run to run.
The interruption and concurrency classes train tiny models with TensorFlow and take minutes;
``--classes models golden cli data dicom`` runs the quick classes only. Exit code 0 when every case
of the checkout under test is clean.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _fuzz import Runner, failures, run_case, table
from _fuzzcases import Fixtures, all_cases

CLASSES = ("models", "golden", "cli", "data", "interrupt", "concurrency", "dicom")


def campaign(tree: Path, work: Path, seed: int, classes, per_stage: int, label: str, only_fast: bool) -> list:
    """Run every case against ``tree``; prints one line per case; returns the verdicts."""
    runner = Runner(tree)
    fx = Fixtures(runner, work / "fixtures", seed)
    cases = [c for c in all_cases(fx, seed, classes, per_stage) if c.fast or not only_fast]
    print(f"[{label}] {tree}: {len(cases)} cases", flush=True)
    verdicts = []
    for i, case in enumerate(cases):
        v = run_case(runner, case, work / "cases" / case.cls / f"{i:03d}_{case.name}"[:120])
        verdicts.append(v)
        print(f"[{label}] {i + 1:3d}/{len(cases)} {v.outcome:9s} {case.cls}/{case.name} "
              f"({v.seconds:.1f} s, {v.peak_mb:.0f} MB){': ' + v.detail if v.detail else ''}", flush=True)
    return verdicts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=ROOT, help="checkout under test (default: this one)")
    p.add_argument("--before", type=Path, help="another checkout to run the same cases against first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", choices=CLASSES, default=list(CLASSES))
    p.add_argument("--interrupts", type=int, default=4, help="kills per interrupted stage (default 4)")
    p.add_argument("--fast", action="store_true", help="only the slice make test runs")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    p.add_argument("--json", type=Path, help="write every verdict here")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="murakit-fuzz-"))
    results, t0 = {}, time.monotonic()
    try:
        for label, tree in ([("BEFORE", args.before)] if args.before else []) + [("AFTER", args.tree)]:
            results[label] = campaign(tree.resolve(), work / label.lower(), args.seed, args.classes,
                                      args.interrupts, label, args.fast)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for label, verdicts in results.items():
        print()
        print(table(verdicts, f"{label}: {args.before if label == 'BEFORE' else args.tree} (seed {args.seed})"))
        bad = failures(verdicts)
        if bad:
            print(bad)
    print(f"\ncampaign took {time.monotonic() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({label: [{"class": v.case.cls, "case": v.case.name, "outcome": v.outcome,
                                                  "detail": v.detail, "seconds": round(v.seconds, 2),
                                                  "peak_mb": round(v.peak_mb, 1)} for v in vs]
                                         for label, vs in results.items()}, indent=1))
    return 0 if all(v.outcome == "clean" for v in results["AFTER"]) else 1


if __name__ == "__main__":
    sys.exit(main())
