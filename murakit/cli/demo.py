"""``murakit demo [--run RUN] [--quick]``: the whole pipeline on the synthetic default."""

from __future__ import annotations

from murakit.cli import add_run_argument


def add_arguments(p):
    add_run_argument(p)
    p.add_argument("--quick", action="store_true", help="tiny data set and short training (~1-2 min)")
    p.add_argument("--seed", type=int, default=0, help="seed of data generation, splits and training")
    p.add_argument("--data", default=None, help="synthetic data folder (default: RUN/data)")


def run(args) -> int:
    from murakit.layout import RunLayout
    from murakit.pipeline.demo import run_demo

    report = run_demo(args.run, args.data, quick=args.quick, seed=args.seed)
    layout = RunLayout(args.run)
    data = args.data or layout.data
    print(f"Report: {report}  (plots beside it)")
    print("Next, try:")
    print(f"  edge-predict {data}/MURA-v1.1/valid/XR_WRIST/*/*/image1.png --model {layout.exported('cnn')} --json")
    shipped = layout.exported("cnn.int8")  # written only when INT8 passed the gate and was faster
    print(f"  edge-verify {shipped if shipped.exists() else layout.exported('cnn')}")
    print(f"  murakit explain {data}/MURA-v1.1/valid/XR_HAND/*/*/image1.png --run {layout.root}")
    print(f"  murakit bench --run {layout.root} --force")
    return 0
