"""Training speed and accuracy: float32 vs mixed_bfloat16, one process vs N local workers.

    python benchmarks/bench_training.py RUN --precision float32 mixed_bfloat16 --epochs 4
    python benchmarks/bench_training.py RUN --workers 1 2 --epochs 4
    python benchmarks/bench_training.py RUN --precision float32 mixed_bfloat16 --step-rounds 3

RUN is a run folder with a prepared cache (``murakit prepare``). Each configuration trains the
default CNN from scratch for ``--epochs`` epochs (default recipe, no early stop that soon) in a
fresh copy of RUN, in its own process(es): ``--precision`` sets Keras' global dtype policy
before the model is built; ``--workers N`` runs ``murakit train cnn --local-workers N`` (N = 1:
one process, no strategy). Printed per configuration: training images/s over epochs 2.. (the
first epoch includes tracing), the per-epoch val study AUROC, and the CPU and load average.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = r"""
import json, sys, time
import keras
keras.mixed_precision.set_global_policy(sys.argv[2])
import deep
from murakit.data.prepared import load_prepared
prep = load_prepared(sys.argv[1])
tr, va = prep.select("train"), prep.select("val")
cfg = deep.ModelConfig(size=prep.config.size)
tcfg = deep.TrainConfig(max_epochs=int(sys.argv[3]))
lw = deep.class_weights(prep.label[tr], prep.study[tr])
res = deep.train(prep.images, prep.row[tr], prep.label[tr], prep.row[va], prep.label[va], cfg,
                 sys.argv[1] + "/cnn", tcfg, loss_weights=lw, val_groups=prep.study[va], verbose=False)
print(json.dumps(res.history))
"""


STEPS = r"""
import json, sys, time
import numpy as np
import keras
keras.mixed_precision.set_global_policy(sys.argv[1])
import deep
model = deep.build_model(deep.ModelConfig(size=int(sys.argv[2])))
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", jit_compile=False)
rng = np.random.default_rng(0)
x = rng.random((32, model.input_shape[1], model.input_shape[2], 1), dtype=np.float32)
y = (rng.random((32, 1)) > 0.5).astype(np.float32)
for _ in range(5):
    model.train_on_batch(x, y)
t0 = time.perf_counter()
n = int(sys.argv[3])
for _ in range(n):
    model.train_on_batch(x, y)
print(json.dumps(32 * n / (time.perf_counter() - t0)))
"""


def _step_rounds(precisions, rounds, size, steps, env):
    """Training steps alone (one in-memory batch of 32, no input pipeline or validation), each
    precision in its own process, interleaved for ``rounds`` rounds: median images/s."""
    got = {p: [] for p in precisions}
    for _ in range(rounds):
        for p in precisions:
            out = subprocess.run([sys.executable, "-c", STEPS, p, str(size), str(steps)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            got[p].append(round(json.loads(out.strip().splitlines()[-1]), 1))
    for p, v in got.items():
        print(json.dumps({"config": f"{p} steps only", "images_per_s": sorted(v)[len(v) // 2], "rounds": v,
                          "load": os.getloadavg()[0]}), flush=True)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _summary(name, history, steps_per_epoch, batch):
    later = history[1:] or history
    secs = sum(r["seconds"] for r in later)
    ips = steps_per_epoch * batch * len(later) / secs
    return {"config": name, "images_per_s": round(ips, 1),
            "val_auroc": [round(r["val_auroc"], 4) for r in history],
            "seconds": [r["seconds"] for r in history], "load": os.getloadavg()[0]}


def _steps(run: Path, batch=32, min_steps=50) -> int:
    with open(run / "prepared" / "index.csv") as f:
        n = sum(1 for row in csv.DictReader(f) if row["split"] == "train")
    per_pass = n // batch
    return per_pass * max(1, -(-min_steps // per_pass))


def _copy(run: Path, tmp: Path, name: str) -> Path:
    dst = tmp / name
    shutil.copytree(run / "prepared", dst / "prepared")
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--precision", nargs="*", default=[])
    ap.add_argument("--workers", nargs="*", type=int, default=[])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--step-rounds", type=int, default=0,
                    help="also time training steps alone for each --precision, this many interleaved rounds")
    args = ap.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    steps = _steps(args.run)
    print(f"CPU: {_cpu()}, {os.cpu_count()} cores; {steps} steps of 32 per epoch")
    if args.step_rounds:
        _step_rounds(args.precision, args.step_rounds, 128, 40, env)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for p in args.precision:
            run = _copy(args.run, Path(tmp), p)
            out = subprocess.run([sys.executable, "-c", ONE, str(run), p, str(args.epochs)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            print(json.dumps(_summary(p, json.loads(out.strip().splitlines()[-1]), steps, 32)), flush=True)
        for n in args.workers:
            run = _copy(args.run, Path(tmp), f"w{n}")
            cmd = [sys.executable, "-m", "murakit", "train", "cnn", "--run", str(run), "--epochs",
                   str(args.epochs), "--no-progress"] + (["--local-workers", str(n)] if n > 1 else [])
            subprocess.run(cmd, env=env, capture_output=True, check=True)
            with open(run / "cnn" / "history.csv") as f:
                hist = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
            print(json.dumps(_summary(f"{n} worker(s)", hist, steps, 32)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
