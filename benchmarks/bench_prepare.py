"""Benchmark ``murakit prepare``: images/s with 1 vs 2 workers, and how rows reach the memmap.

Usage::

    python benchmarks/bench_prepare.py [--data DIR] [--studies 300] [--limit N] [--size S]
                                       [--repeats 1]

Without ``--data`` a synthetic MURA-shaped set of ``--studies`` studies is generated into a
temporary folder first (not timed). Each configuration builds a fresh cache in its own
temporary run folder, at the default preprocessing size unless ``--size`` is given:

- 1 worker (in-process),
- 2 workers, rows returned to the main process which writes the memmap (the default),
- 2 workers, each worker writes its rows into the memmap itself (``worker_writes=True``).

Timings include the pool start-up (spawned processes), as a user would see them; the best of
``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.preprocess import PreprocessConfig
from murakit.data.mura import index_dataset
from murakit.data.prepared import prepare


def _cpu() -> float:
    """CPU seconds used so far by this process and its reaped children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(ds, cfg: PreprocessConfig, workers: int, worker_writes: bool, tmp: Path):
    """(images/s wall clock, CPU ms per image) of one fresh prepare of ``ds``."""
    run = Path(tempfile.mkdtemp(dir=tmp))
    try:
        c0 = _cpu()
        res = prepare(ds.root, run, cfg, workers=workers, worker_writes=worker_writes,
                      progress=False, log=lambda *_: None, dataset=ds)
        f = res.figures
        return f["images_per_second"], 1000 * (_cpu() - c0) / max(1, f["n_processed"])
    finally:
        shutil.rmtree(run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", help="data folder (default: generate a synthetic set)")
    ap.add_argument("--studies", type=int, default=300, help="studies to generate without --data")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N images")
    ap.add_argument("--size", type=int, default=PreprocessConfig().size)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        data = args.data
        if data is None:
            from murakit.data.synth import generate

            generate(tmp / "data", n_studies=args.studies, seed=0, progress=False)
            data = tmp / "data"
        ds = index_dataset(data)
        if args.limit:
            ds.records = ds.records[:args.limit]
        cfg = PreprocessConfig(size=args.size)
        load = os.getloadavg()[0]
        print(f"prepare benchmark: {len(ds)} images from {ds.root}, size {cfg.size}, "
              f"{os.cpu_count()} cores, load average {load:.1f} at start")
        configs = [("1 worker", 1, False), ("2 workers, main writes rows", 2, False),
                   ("2 workers, workers write rows", 2, True)]
        rates = {}
        for name, workers, ww in configs:
            best = max(run_once(ds, cfg, workers, ww, tmp) for _ in range(args.repeats))
            rates[name] = best[0]
            print(f"  {name:32s} {best[0]:7.1f} images/s  ({best[1]:.1f} CPU ms/image)")
        one = rates["1 worker"]
        for name in list(rates)[1:]:
            print(f"  speed-up {name}: x{rates[name] / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
