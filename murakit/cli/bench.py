"""``murakit bench --run RUN``: every model of the run on the test split, and the report."""

from __future__ import annotations

from murakit.cli import add_run_argument


def add_arguments(p):
    add_run_argument(p)
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--latency-runs", type=int, default=200, help="batch-1 timings per model (default 200)")
    p.add_argument("--force", action="store_true", help="rerun even if the report is newer than every model")


def run(args) -> int:
    from murakit.evaluation.report import BenchOptions, bench

    result = bench(args.run, BenchOptions(threads=args.threads, latency_runs=args.latency_runs), force=args.force)
    report_md = result.paths[1]
    if result.up_to_date:
        print(f"bench: {report_md} is up to date (use --force to redo)")
        return 0
    for name, m in result.figures.items():
        print(f"  {name:14s} study AUROC {m['study_auroc']:.3f}  kappa {m['study_kappa']:.3f}  "
              f"latency {m['latency_ms_p50']:.2f} ms  {m['size_bytes'] / 1024:.0f} KiB")
    print(f"report: {report_md}")
    return 0
