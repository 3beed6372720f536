"""The full image fuzz campaign: hundreds of valid and hostile files, each through its own
``edge-predict`` process, judged for clean output, tracebacks, hangs, wrong answers, memory and
library log lines; optionally against an older checkout too, for a before/after table.

Usage::

    python benchmarks/fuzz_images.py [--before DIR] [--per-kind 20] [--seed 0] [--timeout 60]
                                     [--json OUT.json]

``--before DIR`` is a source tree of an older murakit (e.g. ``git archive <commit> | tar -x -C
DIR``); it is run with the same Python, its ``edge`` package first on the path. The corpus
(tests/_hostile.py, seeded): every valid kind (8/16-bit, grey/RGB/RGBA/grey+alpha, 1-4 bit,
palette, interlaced, progressive and restart-marker JPEGs), ``--per-kind`` random variants of
each damage kind (truncations, byte flips in PNG/JPEG headers and data, absurd and zero sizes
in IHDR and SOF, random bytes), fixed hostile cases (bad chunk lengths and CRCs, missing IEND /
IDAT / PLTE, JPEG without SOF, too many chunks or segments, ...), the issue's big files (8000 x
8000 RGBA 16-bit PNG, 64 MB JPEGs without SOF) and the largest images the memory budget accepts.

Memory is each process's own peak (VmHWM) minus the peak of edge-predict on a small valid
image (the resting size of the command); above ``edge.limits.MEMORY_BUDGET`` counts as a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _edgefix import cnn_model
from _fuzzrun import judge, library_lines, run_edge_predict
from _hostile import big_files, hostile_files, valid_files
from test_image_memory import worst_cases

from edge.limits import MEMORY_BUDGET

COLUMNS = ("clean", "traceback", "hang", "wrong", "memory", "log")


def corpus(folder: Path, seed: int, per_kind: int) -> list:
    """Write the campaign's files; returns [(path, expect)]."""
    rng = np.random.default_rng(seed)
    cases = valid_files(rng) + hostile_files(rng, per_kind) + big_files()
    cases += [(name, data, "valid") for name, data in worst_cases()]
    out = []
    for i, (name, data, expect) in enumerate(cases):
        path = folder / f"{i:04d}_{name}"
        path.write_bytes(data)
        out.append((path, expect))
    return out


def campaign(label: str, code_root: Path, cases: list, model: Path, timeout: float, work: Path) -> dict:
    """Run every case with ``code_root``; returns {"totals": {...}, "cases": [...]}."""
    rest = run_edge_predict(code_root, [cases[0][0]], model, timeout, work / "peak")
    resting = rest["peak_bytes"] or 0
    totals = dict.fromkeys(("tried", *COLUMNS), 0)
    rows = []
    for i, (path, expect) in enumerate(cases):
        run = run_edge_predict(code_root, [path], model, timeout, work / "peak")
        flags = judge(run, expect, MEMORY_BUDGET, resting)
        totals["tried"] += 1
        for k in COLUMNS:
            totals[k] += bool(flags[k])
        peak = None if run["peak_bytes"] is None else (run["peak_bytes"] - resting) / 2**20
        rows.append({"file": path.name, "expect": expect, "code": run["code"], "seconds": round(run["seconds"], 2),
                     "peak_mib_over_rest": None if peak is None else round(peak, 1),
                     **{k: bool(v) for k, v in flags.items()},
                     "stderr": run["stderr"][-400:], "library_lines": library_lines(run["stderr"])[:3]})
        if not flags["clean"]:
            bad = ",".join(k for k in COLUMNS[1:] if flags[k]) or "format"
            print(f"  [{label}] {path.name}: {bad}  exit={run['code']}  {run['seconds']:.1f}s  "
                  f"peak+{peak if peak is None else round(peak)} MiB  "
                  f"{(run['stderr'].strip().splitlines() or [''])[0][:110]}", flush=True)
        if (i + 1) % 50 == 0:
            print(f"  [{label}] {i + 1}/{len(cases)} done", flush=True)
    return {"label": label, "resting_mib": round(resting / 2**20, 1), "totals": totals, "cases": rows}


def table(results: list) -> str:
    head = f"{'code':8s} {'tried':>6s} " + " ".join(f"{c:>9s}" for c in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in results:
        t = r["totals"]
        lines.append(f"{r['label']:8s} {t['tried']:6d} " + " ".join(f"{t[c]:9d}" for c in COLUMNS))
    lines.append("(log = library log lines on stderr; wrong = damaged file scored, valid file refused, or a "
                 "decoder complaint followed by a score; memory = peak above the resting size by more than "
                 f"{MEMORY_BUDGET // 2**20} MiB)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, help="source tree of an older murakit to compare with")
    ap.add_argument("--per-kind", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--json", type=Path, help="write every case's outcome here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-images-") as tmp:
        work = Path(tmp)
        (work / "files").mkdir()
        cases = corpus(work / "files", args.seed, args.per_kind)
        model = cnn_model(work / "model.onnx")
        print(f"{len(cases)} files ({sum(e == 'valid' for _, e in cases)} valid, "
              f"{sum(e == 'refuse' for _, e in cases)} to refuse, {sum(e == 'either' for _, e in cases)} either)",
              flush=True)
        roots = ([("before", args.before)] if args.before else []) + [("after", ROOT)]
        results = [campaign(label, root, cases, model, args.timeout, work) for label, root in roots]
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
