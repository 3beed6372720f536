"""Run every benchmark in turn (`make bench`); each prints its own side-by-side ratios.

docs/performance.md has the figures, what each one measures and its target.

Usage: python benchmarks/run_all.py [--run RUN]   (RUN: a finished demo run, default runs/default)
"""

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="runs/default")
    args = ap.parse_args()
    have_run = (Path(args.run) / "export" / "cnn.onnx").exists()
    run_args = ["--run", args.run] if have_run else []
    model = str(Path(args.run) / "export" / "cnn.onnx")
    jobs = [
        ["bench_synth.py"],
        ["bench_prepare.py"],
        ["bench_preprocess.py"],
        ["bench_dicom.py"],
        ["bench_baseline.py"],
        ["bench_cnn.py"],
        ["bench_export.py", *run_args],
        ["bench_edge_runtimes.py", *run_args, "--profile"],
    ]
    if have_run:  # these need an exported model
        jobs += [["bench_score.py", "--model", model, "--no-ray"], ["bench_serve.py", "--model", model, "--profile"]]
    failed = 0
    for job in jobs:
        print(f"\n##### {' '.join(job)}", flush=True)
        failed += subprocess.call([sys.executable, str(HERE / job[0]), *job[1:]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
