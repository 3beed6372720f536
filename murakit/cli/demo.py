"""``murakit demo [--run RUN] [--quick]``: the whole pipeline on the synthetic default.

synth -> prepare -> explore -> train baseline -> train cnn -> export -> verify -> bench ->
one ``edge-predict`` on a test study. Every stage skips work that is already complete, so a
second demo on the same run folder redoes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

# The demo trains with `murakit train cnn`'s default recipe and only caps its epochs (the
# cap bounds the time of `make demo` on 2 CPU cores; docs/training.md); --quick is the
# end-to-end test.
DEFAULT = {"studies": None, "size": 128, "epochs": 40}
QUICK = {"studies": 160, "size": 64, "epochs": 3}


def add_arguments(p):
    p.add_argument("--run", default="runs/default", help="run folder (default: runs/default)")
    p.add_argument("--quick", action="store_true", help="tiny data set and short training (~1-2 min)")
    p.add_argument("--seed", type=int, default=0, help="seed of data generation, splits and training")
    p.add_argument("--data", default=None, help="synthetic data folder (default: RUN/data)")


def steps(args):
    """(title, callable) for each stage; each callable returns an exit code."""
    from edge.cli import predict_main
    from murakit.cli import main

    run = Path(args.run)
    data = Path(args.data) if args.data else run / "data"
    size = QUICK if args.quick else DEFAULT
    synth = ["synth", str(data), "--seed", str(args.seed)]
    if size["studies"]:
        synth += ["--studies", str(size["studies"])]
    cnn = ["train", "cnn", "--run", str(run), "--seed", str(args.seed)]
    if size["epochs"]:
        cnn += ["--epochs", str(size["epochs"])]
    return [
        ("synth", lambda: main(synth)),
        ("prepare", lambda: main(["prepare", str(data), "--run", str(run), "--size", str(size["size"]),
                                  "--seed", str(args.seed)])),
        ("explore", lambda: main(["explore", str(data), "--run", str(run)])),
        ("train baseline", lambda: main(["train", "baseline", "--run", str(run), "--seed", str(args.seed)])),
        ("train cnn", lambda: main(cnn)),
        ("export", lambda: main(["export", "--run", str(run)])),
        ("verify", lambda: main(["verify", "--run", str(run)])),
        ("bench", lambda: main(["bench", "--run", str(run)])),
        ("edge-predict", lambda: predict_main([str(test_study(run, data)), "--model",
                                               str(run / "export" / "cnn.onnx")])),
    ]


def test_study(run: Path, data: Path) -> Path:
    """The first abnormal study folder of the test split (MURA valid)."""
    from murakit.data.prepared import load_prepared

    prep = load_prepared(run)
    test = prep.select("test")
    abnormal = [i for i in test if prep.label[i] == 1] or list(test)
    root = Path(data)
    return (root / prep.path[min(abnormal, key=lambda i: prep.path[i])]).parent


def run(args) -> int:
    todo = steps(args)
    t_start = time.perf_counter()
    for k, (title, fn) in enumerate(todo, 1):
        print(f"\n=== [{k}/{len(todo)}] {title} ===", flush=True)
        t0 = time.perf_counter()
        code = fn()
        print(f"--- {title}: {time.perf_counter() - t0:.1f} s", flush=True)
        if code not in (0, None):
            print(f"demo: step '{title}' failed with exit code {code}; fix it and rerun `murakit demo` "
                  "(completed steps are reused)")
            return code
    run_dir = Path(args.run)
    print(f"\nDemo finished in {time.perf_counter() - t_start:.0f} s.")
    print(f"Report: {run_dir / 'report' / 'report.md'}  (plots beside it)")
    print("Next, try:")
    print(f"  edge-predict {run_dir / 'data'}/MURA-v1.1/valid/XR_WRIST/*/*/image1.png --model "
          f"{run_dir / 'export' / 'cnn.onnx'} --json")
    print(f"  edge-verify {run_dir / 'export' / 'cnn.int8.onnx'}")
    print(f"  murakit explain {run_dir / 'data'}/MURA-v1.1/valid/XR_HAND/*/*/image1.png --run {run_dir}")
    print(f"  murakit bench --run {run_dir} --force")
    return 0
