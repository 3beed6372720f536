"""``murakit bench --run RUN``: every model of the run on the test split, and the report."""

from __future__ import annotations


def add_arguments(p):
    p.add_argument("--run", default="runs/default", help="run folder (default: runs/default)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2)")
    p.add_argument("--latency-runs", type=int, default=200, help="batch-1 timings per model (default 200)")
    p.add_argument("--force", action="store_true", help="rerun even if the report is newer than every model")


def up_to_date(run) -> bool:
    """True when report.json exists and is newer than the cache and every model file."""
    from murakit.evaluation.bench import model_files
    from murakit.layout import RunLayout, is_fresh

    layout = RunLayout(run)
    inputs = [p for p in model_files(run).values() if p is not None] + [layout.prepared_index]
    return is_fresh(layout.report_json, inputs)


def run(args) -> int:
    from murakit.evaluation.report import bench_and_report
    from murakit.layout import RunLayout

    if not args.force and up_to_date(args.run):
        print(f"bench: {RunLayout(args.run).report_md} is up to date (use --force to redo)")
        return 0
    report, out = bench_and_report(args.run, threads=args.threads, n_single=args.latency_runs)
    for name, m in report["models"].items():
        print(f"  {name:14s} study AUROC {m['study']['auroc']:.3f}  kappa {m['study']['kappa']:.3f}  "
              f"latency {m['latency_ms_p50']:.2f} ms  {m['size_bytes'] / 1024:.0f} KiB")
    print(f"report: {out / 'report.md'}")
    return 0
