"""``preprocess()`` against its floor, ``cv2.imread(path, IMREAD_GRAYSCALE) + cv2.resize``.

Usage::

    python benchmarks/bench_preprocess.py [--images 60] [--rounds 15] [--repeats 3] [--size 128]
                                          [--clahe] [--seed 0]

A MURA-like set of PNGs is generated first (not timed), with murakit synth's mix: long side
512 px for 35% of the images, else 90-511 px, aspect 0.55-0.95; 70% 8-bit grey, 25% 8-bit RGB
with equal channels (as MURA stores some views), 5% 16-bit grey (half full range, half
12-bit); a limb and bones on dark air, film grain, 20% stored inverted. Each round times the
whole set once per method, interleaved image by image (each image runs every method back to
back, in a rotated order, and each call is timed as the best of ``--repeats`` so a time slice
lost to another process does not count; load then hits all methods alike):

- ``floor``: ``cv2.imread(path, IMREAD_GRAYSCALE)`` + ``cv2.resize`` to the model size;
- ``preprocess``: ``edge.preprocess.preprocess(path, cfg)`` (checked decode + the integer path);
- ``before``: the frozen copy of the float pipeline it replaced (tests/_preprocess_reference.py),
  fed by the same checked decoder.

The ratio to the floor is reported per round as min / median / max, then the median time per
step of ``preprocess`` (one pass over the set, per image means) and an identity check of the
outputs against ``before``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _preprocess_reference import reference_preprocess_with_info

edge_image = importlib.import_module("edge.image")
edge_loader = importlib.import_module("edge.loader")
edge_pre = importlib.import_module("edge.preprocess")  # the module; `edge.preprocess` is also a function


def mura_like(rng, long_side: int) -> np.ndarray:
    """float64 (h, w) in [0, 1]: a forearm-like radiograph."""
    aspect = rng.uniform(0.55, 0.95)
    h, w = (long_side, int(long_side * aspect)) if rng.random() < 0.7 else (int(long_side * aspect), long_side)
    img = np.full((h, w), 0.06)
    cv2.ellipse(img, (w // 2, h // 2), (max(2, w // 4), max(2, int(h * 0.46))), rng.uniform(-15, 15),
                0, 360, 0.35, -1)
    for dx in (-w // 10, w // 10):
        cv2.rectangle(img, (w // 2 + dx - w // 16, h // 10), (w // 2 + dx + w // 16, h - h // 10), 0.75, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.5) + rng.normal(0, 0.025, (h, w))
    img[: h // 12, : w // 8] = 0.97  # burned-in marker
    return np.clip(img, 0, 1)


def make_set(folder: Path, n: int, seed: int) -> list:
    """Write the PNGs; returns [(path, kind)] with kind in grey8 / rgb8 / grey16."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = mura_like(rng, 512 if rng.random() < 0.35 else int(rng.integers(90, 512)))
        if rng.random() < 0.2:
            img = 1.0 - img
        u = rng.random()
        kind = "grey16" if u < 0.05 else "rgb8" if u < 0.30 else "grey8"
        top = (65535 if rng.random() < 0.5 else 4095) if kind == "grey16" else 255
        arr = np.round(img * top).astype(np.uint16 if kind == "grey16" else np.uint8)
        if kind == "rgb8":
            arr = cv2.merge([arr, arr, arr])
        path = folder / f"img{i:03d}_{kind}.png"
        cv2.imwrite(str(path), arr)
        paths.append((path, kind))
    return paths


def floor(path: Path, size: int) -> np.ndarray:
    g = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    scale = size / max(g.shape)
    nw, nh = max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale))
    return cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def time_set(fn, paths) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return time.perf_counter() - t0


def best_of(fn, path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(path)
        best = min(best, time.perf_counter() - t0)
    return best


def steps(paths, cfg) -> dict:
    """Mean ms per image of each step of preprocess(), called one by one as preprocess() does."""
    acc = {}

    def tick(name, t0):
        acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
        return time.perf_counter()

    for p in paths:
        t = time.perf_counter()
        data = edge_loader.read_bytes(p)
        t = tick("read file", t)
        header = edge_image.image_header(data, str(p))
        edge_image.check_budget(header, len(data), str(p))
        t = tick("header + budget checks", t)
        arr, text = edge_image.imdecode_captured(data)
        edge_image.classify_decoder_output(text)
        t = tick("decode (fd 2 captured)", t)
        source = edge_pre._table_source(arr)
        t = tick("channel check + tables", t)
        u8 = edge_pre._table_path(*source, cfg)[0] if source else edge_pre._float_path(edge_loader.to_grey(arr), cfg)[0]
        t = tick("stats + lookup (integer path)", t)
        if cfg.clahe:
            u8 = cv2.createCLAHE(cfg.clahe_clip, (cfg.clahe_grid, cfg.clahe_grid)).apply(u8)
            t = tick("CLAHE", t)
        edge_pre._resize_pad(u8, cfg)
        tick("resize + pad", t)
    return {k: v / len(paths) * 1e3 for k, v in acc.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=3, help="each call's time is the best of this many")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--clahe", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    cfg = edge_pre.PreprocessConfig(size=args.size, clahe=args.clahe)
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        listed = make_set(Path(tmp), args.images, args.seed)
        paths = [p for p, _ in listed]
        kinds = sorted({k for _, k in listed})
        methods = {"floor": lambda p: floor(p, args.size), "preprocess": lambda p: edge_pre.preprocess(p, cfg),
                   "before": lambda p: reference_preprocess_with_info(p, cfg)}
        for fn in methods.values():  # warm-up: imports, caches, the decoder's capture file
            time_set(fn, paths[:5])
        names = list(methods)
        times = {k: [] for k in methods}
        by_kind = {(m, kind): [] for m in methods for kind in kinds}
        for r in range(args.rounds):
            spent = {(m, kind): 0.0 for m in names for kind in kinds}
            for i, (path, kind) in enumerate(listed):
                for m in names[(r + i) % 3:] + names[: (r + i) % 3]:
                    spent[m, kind] += best_of(methods[m], path, args.repeats)
            for m in names:
                times[m].append(sum(spent[m, kind] for kind in kinds))
                for kind in kinds:
                    by_kind[m, kind].append(spent[m, kind])
        same = all(np.array_equal(edge_pre.preprocess(p, cfg), reference_preprocess_with_info(p, cfg)[0])
                   for p in paths)
        step_ms = steps(paths, cfg)
    counts = ", ".join(f"{sum(k == kind for _, k in listed)} {kind}" for kind in kinds)
    print(f"{args.images} MURA-like PNGs, 90-512 px long side ({counts}), size {args.size}, clahe {args.clahe}, "
          f"{args.rounds} interleaved rounds, best of {args.repeats} per call")
    for k in names:
        ms = np.array(times[k]) / args.images * 1e3
        print(f"  {k:11s} per image: min {ms.min():6.3f}  median {np.median(ms):6.3f}  max {ms.max():6.3f} ms")
    for k in ("preprocess", "before"):
        ratio = np.array(times[k]) / np.array(times["floor"])
        print(f"  {k:11s} / floor: min {ratio.min():.2f}x  median {np.median(ratio):.2f}x  max {ratio.max():.2f}x")
    for kind in kinds:
        ratio = np.array(by_kind["preprocess", kind]) / np.array(by_kind["floor", kind])
        old = np.array(by_kind["before", kind]) / np.array(by_kind["floor", kind])
        print(f"    {kind:7s} preprocess / floor: min {ratio.min():.2f}x  median {np.median(ratio):.2f}x  "
              f"max {ratio.max():.2f}x   (before: median {np.median(old):.2f}x)")
    print(f"  outputs identical to the frozen reference on every image: {same}")
    print("  per step of preprocess (mean ms per image, one pass):")
    for k, v in step_ms.items():
        print(f"    {k:32s} {v:7.3f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
