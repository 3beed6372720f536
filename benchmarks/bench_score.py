"""Benchmark ``murakit score`` against the simplest fast script, ``edge-predict`` and the Ray engine.

Usage::

    nice -n 10 python benchmarks/bench_score.py --model runs/default/export/cnn.onnx \\
        [--data DIR | --studies 730] [--rounds 3] [--workers 2] [--no-ray]

Variants, each a separate process over the same image files, timed wall-clock from start to
exit (start-up, file listing and writing results included, as a user sees them):

- ``script``: the simplest fast script for the job: a pool of ``--workers`` processes decodes with
  ``cv2.imread(GRAYSCALE)`` + ``cv2.resize`` (no murakit preprocessing), the parent runs
  onnxruntime in batches of 32 and writes a CSV;
- ``script+pre``: the same script with murakit's preprocessing (``edge.preprocess.preprocess``
  with the model card's config) in the workers instead of imread + resize;
- ``score``: ``murakit score DATA --model M --out DIR --workers W``;
- ``edge-predict``: ``edge-predict FILE... --model M --json`` (one process, every file);
- ``ray``: ``murakit score ... --engine ray --workers W`` against a Ray started once by this
  benchmark (127.0.0.1 only; ``RAY_ADDRESS``), so rounds time the job and not Ray's start-up,
  which is measured once on its own.

Rounds are interleaved (every variant once per round, the order rotated), and the ratios are
computed within a round, then summarised as min / median / max: the machine's load moves the
absolute figures, less so the ratios. ``score / script+pre`` is the engine's efficiency with the
preprocessing accounted for (same work per image); ``script / script+pre`` is the cost of
murakit's preprocessing itself.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
BATCH = 32


# ---------------------------------------------------------------------------- the script
def _decode_raw(path: str, size: int):
    import cv2

    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA)


def _decode_murakit(path: str, cfg):
    from edge.preprocess import preprocess

    return preprocess(path, cfg)


def _init_script_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def script_main(kind: str, files: str, model: str, out: str, workers: int) -> None:
    """The comparison script: decode in a pool, onnxruntime in batches of 32 in the parent."""
    import functools
    import multiprocessing as mp

    import numpy as np
    import onnxruntime as ort

    from edge.predictor import Predictor

    paths = Path(files).read_text().splitlines()
    cfg = Predictor(model).config
    decode = functools.partial(_decode_raw, size=cfg.size) if kind == "raw" else \
        functools.partial(_decode_murakit, cfg=cfg)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    probs = []
    with mp.get_context("spawn").Pool(workers, initializer=_init_script_worker) as pool:
        batch = []
        for img in pool.imap(decode, paths, chunksize=BATCH):
            batch.append(img)
            if len(batch) == BATCH:
                probs += list(session.run(["probability"], {name: np.stack(batch)[..., None] / np.float32(255)})[0][:, 0])
                batch = []
        if batch:
            probs += list(session.run(["probability"], {name: np.stack(batch)[..., None] / np.float32(255)})[0][:, 0])
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows(zip(paths, map(float, probs)))


# ---------------------------------------------------------------------------- variants
def _timed(cmd, env=None, stdout=subprocess.DEVNULL) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, env=env, stdout=stdout, stderr=subprocess.PIPE)
    return time.perf_counter() - t0


def variants(args, files: Path, n: int, tmp: Path, ray_address: str | None) -> dict:
    """name -> callable returning seconds for one run over the ``n`` files."""
    me = Path(__file__).resolve()
    data, model, w = args.data, args.model, str(args.workers)

    def script(kind):
        return lambda: _timed([sys.executable, me, "--script", kind, "--files", files, "--model", model,
                               "--out", tmp / "script.csv", "--workers", w])

    def score(engine, env=None):
        def run():
            out = tmp / f"score-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            return _timed([BIN / "murakit", "score", data, "--model", model, "--out", out, "--workers", w,
                           "--engine", engine, "--no-progress"], env=env)
        return run

    def edge_predict():
        with open(tmp / "edge.jsonl", "w") as f:
            # --gate warn: the same work (the gate is part of the graph), but the few training views
            # the gate refuses by design (~0.5%) must not turn the timed run into a failed one
            return _timed([BIN / "edge-predict", *files.read_text().splitlines(), "--model", model, "--json",
                           "--gate", "warn"], stdout=f)

    out = {"script": script("raw"), "script+pre": script("murakit"), "score": score("local"),
           "edge-predict": edge_predict}
    if ray_address:
        out["ray"] = score("ray", {**os.environ, "RAY_ADDRESS": ray_address})
    return out


def start_ray(workers: int) -> tuple:
    """A Ray for the rounds, on 127.0.0.1 (its address, start-up seconds)."""
    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    import ray

    t0 = time.perf_counter()
    ctx = ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                   log_to_driver=False)
    return ctx.address_info["gcs_address"], time.perf_counter() - t0


def _spread(values) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def report(rates: dict, n: int, ray_start: float | None) -> None:
    print(f"\nimages/s over {n} images (median of rounds; min / median / max):")
    for name, r in rates.items():
        print(f"  {name:13s} {statistics.median(r):7.1f}   ({_spread(r)})")
    pairs = [("score", "script+pre"), ("score", "script"), ("edge-predict", "script"), ("script", "script+pre"),
             ("score", "edge-predict"), ("ray", "score")]
    print("ratios within each round (min / median / max):")
    for a, b in pairs:
        if a in rates and b in rates:
            print(f"  {a} / {b}: {_spread([x / y for x, y in zip(rates[a], rates[b])])}")
    if ray_start is not None:
        print(f"a local Ray took {ray_start:.1f} s to start (once; not in the ray figures above)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/default/export/cnn.onnx")
    ap.add_argument("--data", help="image folder (default: generate --studies synthetic studies)")
    ap.add_argument("--studies", type=int, default=730, help="about 2,000 images (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray variant")
    ap.add_argument("--script", choices=("raw", "murakit"), help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.script:
        script_main(args.script, args.files, args.model, args.out, args.workers)
        return 0
    from murakit.scoring import collect_jobs

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        tmp = Path(tmp)
        if args.data is None:
            from murakit.data.synth import generate

            args.data = str(generate(tmp / "data", n_studies=args.studies, seed=0, progress=False).parent)
        files = tmp / "files.txt"
        jobs = collect_jobs([args.data])
        files.write_text("\n".join(j.path for j in jobs) + "\n")
        address, ray_start = (None, None) if args.no_ray else start_ray(args.workers)
        print(f"score benchmark: {len(jobs)} images in {args.data}, model {args.model}, {args.workers} workers, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        runs = variants(args, files, len(jobs), tmp, address)
        rates = {name: [] for name in runs}
        for k in range(args.rounds):
            names = list(runs)[k % len(runs):] + list(runs)[:k % len(runs)]
            for name in names:
                rates[name].append(len(jobs) / runs[name]())
            print(f"round {k + 1}: " + "  ".join(f"{n} {rates[n][-1]:.0f}" for n in runs), flush=True)
        report(rates, len(jobs), ray_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
