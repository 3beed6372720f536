"""CNN speed and memory on this machine (deep.make_dataset + the default "small" arch).

Measures, on random uint8 caches written to a temp folder as .npy memmaps:
  * pipeline-only images/s (augmenting tf.data stream, no model) vs training images/s,
    at 128 and 224 px;
  * inference images/s at batch 1 and batch 32 (128 px, Keras, model(x, training=False));
  * peak memory of a one-epoch training run in a fresh process at two cache sizes
    (default 2,000 vs 8,000 images at 128 px): VmHWM (peak RSS, which counts the memmap's
    file-backed pages the epoch touched) and peak RssAnon (anonymous memory, sampled every
    50 ms) -- the number that must stay flat as the data grows.

Usage:  python benchmarks/bench_cnn.py [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_cache(path: Path, n: int, size: int, seed: int = 0) -> np.memmap:
    """Random uint8 (n, size, size) .npy written in chunks (never all in memory)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size))
    rng = np.random.default_rng(seed)
    for i in range(0, n, 512):
        mm[i:i + 512] = rng.integers(0, 256, (min(512, n - i), size, size), dtype=np.uint8)
    mm.flush()
    del mm
    return np.load(path, mmap_mode="r")


def pipeline_rate(images, batch=32, epochs=2) -> float:
    """Images/s of the augmenting input pipeline alone."""
    import deep

    n = len(images)
    labels = np.arange(n) % 2
    for _ in deep.make_dataset(images, np.arange(n), labels, batch, augment=deep.AugmentConfig(), seed=0).take(2):
        pass
    t0, seen = time.perf_counter(), 0
    for e in range(epochs):
        for x, _, _ in deep.make_dataset(images, np.arange(n), labels, batch, augment=deep.AugmentConfig(), seed=e):
            seen += int(x.shape[0])
    return seen / (time.perf_counter() - t0)


def train_rate(images, size, batch=32, steps=None) -> float:
    """Images/s of model.fit (augmenting pipeline + the small arch), after a warm-up."""
    import deep

    n = len(images) if steps is None else steps * batch
    labels = np.arange(n) % 2
    model = deep.build_model(deep.ModelConfig(size=size))
    model.compile(optimizer="adam", loss="binary_crossentropy", jit_compile=False)
    ds = deep.make_dataset(images, np.arange(n), labels, batch, augment=deep.AugmentConfig(), seed=0, drop_remainder=True)
    model.fit(ds.take(3), verbose=0)
    t0 = time.perf_counter()
    model.fit(ds, verbose=0)
    return (n // batch) * batch / (time.perf_counter() - t0)


def inference_rate(size=128, batch=1, seconds=8.0) -> float:
    """Images/s of model(x, training=False) at a fixed batch size (Keras, CPU)."""
    import tensorflow as tf

    import deep

    model = deep.build_model(deep.ModelConfig(size=size))
    fn = tf.function(lambda x: model(x, training=False))
    x = tf.constant(np.random.default_rng(0).random((batch, size, size, 1), np.float32))
    for _ in range(3):
        fn(x)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        fn(x).numpy()
        n += batch
    return n / (time.perf_counter() - t0)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_child(path: str, size: int) -> None:
    """Subprocess body: one training epoch from the cache; prints peak memory as JSON."""
    import deep

    peak = {"anon": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))

    threading.Thread(target=sample, daemon=True).start()
    images = np.load(path, mmap_mode="r")
    n = len(images)
    rows = np.arange(n)
    with tempfile.TemporaryDirectory() as out:
        deep.train(images, rows[: n - 256], rows[: n - 256] % 2, rows[n - 256:], rows[n - 256:] % 2,
                   deep.ModelConfig(size=size), out, deep.TrainConfig(max_epochs=1), verbose=False)
    done.set()
    peak["anon"] = max(peak["anon"], _status_kb("RssAnon"))
    print(json.dumps({"images": n, "peak_rss_mb": _status_kb("VmHWM") / 1024,
                      "peak_anon_mb": peak["anon"] / 1024,
                      "cache_mb": os.path.getsize(path) / 2**20}))


def memory_at(tmp: Path, n: int, size: int) -> dict:
    path = tmp / f"mem_{n}.npy"
    write_cache(path, n, size)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, __file__, "--memory-child", str(path), str(size)],
                         capture_output=True, text=True, env=env, check=True).stdout
    path.unlink()
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets (smoke run)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    import tensorflow as tf

    res = {"cpu_count": os.cpu_count(), "tf": tf.__version__, "load_avg_at_start": os.getloadavg()}
    n_speed = 256 if args.quick else 1024
    mem_sizes = (500, 2000) if args.quick else (2000, 8000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in (128, 224):
            images = write_cache(tmp / f"speed_{size}.npy", n_speed, size)
            res[f"pipeline_img_s_{size}"] = round(pipeline_rate(images), 1)
            res[f"train_img_s_{size}"] = round(train_rate(images, size), 1)
            print(f"{size} px: pipeline {res[f'pipeline_img_s_{size}']} img/s, "
                  f"training {res[f'train_img_s_{size}']} img/s", flush=True)
        for b in (1, 32):
            res[f"inference_img_s_batch{b}"] = round(inference_rate(128, b), 1)
            print(f"inference 128 px batch {b}: {res[f'inference_img_s_batch{b}']} img/s", flush=True)
        for n in mem_sizes:
            m = memory_at(tmp, n, 128)
            res[f"memory_{n}"] = {k: round(v, 1) for k, v in m.items()}
            print(f"training on {n} cached images ({m['cache_mb']:.0f} MB cache): peak RSS "
                  f"{m['peak_rss_mb']:.0f} MB, peak anonymous {m['peak_anon_mb']:.0f} MB", flush=True)
    res["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
