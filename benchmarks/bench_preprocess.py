"""``preprocess()`` against its floor, ``cv2.imread(path, IMREAD_GRAYSCALE) + cv2.resize``.

Usage::

    python benchmarks/bench_preprocess.py [--images 60] [--rounds 15] [--repeats 3] [--size 128]
                                          [--clahe] [--seed 0] [--clock wall|cpu] [--json FILE]
    python benchmarks/bench_preprocess.py --against OTHER_TREE [--alternations 6] [--rounds 3] [--clock cpu]

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

``--clock cpu`` times each call by the process's CPU time (all its threads, OpenCV's included,
for the floor as for ``preprocess``) instead of the wall clock: on a machine whose load is
several times its core count, a call is preempted in most rounds and only CPU time still counts
the work done. ``--against OTHER_TREE`` compares two versions of the code side by side: it runs
this script ``--alternations`` times for each, alternately (which goes first alternates too),
once importing ``edge`` from this checkout and once from ``OTHER_TREE`` (another checkout or a
``git archive`` of the base commit: ``--edge-root``), and prints both sides' per-round ratios to
their own floor, measured in the same minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _edge_root(argv) -> Path:
    """``--edge-root DIR`` from the command line: where ``edge`` is imported from (read before
    the imports below; default this checkout)."""
    for i, arg in enumerate(argv):
        if arg == "--edge-root" and i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
        if arg.startswith("--edge-root="):
            return Path(arg.split("=", 1)[1]).resolve()
    return ROOT


EDGE_ROOT = _edge_root(sys.argv[1:])
sys.path[:0] = [str(EDGE_ROOT), str(ROOT), str(ROOT / "tests")]

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


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def time_set(fn, paths) -> float:
    t0 = clock()
    for p in paths:
        fn(p)
    return clock() - t0


def best_of(fn, path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn(path)
        best = min(best, clock() - t0)
    return best


def steps(paths, cfg) -> dict:
    """Mean ms per image of each step of preprocess(), called one by one as preprocess() does."""
    acc = {}

    def tick(name, t0):
        acc[name] = acc.get(name, 0.0) + clock() - t0
        return clock()

    for p in paths:
        t = clock()
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
    ap.add_argument("--clock", choices=tuple(CLOCK), default="wall",
                    help="time calls by the wall clock or by the process's CPU time (a loaded machine)")
    ap.add_argument("--json", type=Path, help="also write the per-round figures to this file")
    ap.add_argument("--edge-root", type=Path, default=ROOT, help="import edge from this tree (see --against)")
    ap.add_argument("--against", type=Path, help="another tree: run both alternately, side by side")
    ap.add_argument("--alternations", type=int, default=6, help="with --against: runs of each side")
    args = ap.parse_args(argv)
    if args.edge_root.resolve() != EDGE_ROOT:
        print("--edge-root must be given on the command line (it is read before the imports)", file=sys.stderr)
        return 2
    if args.against is not None:
        return against(args)
    global clock
    clock = CLOCK[args.clock]
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
          f"{args.rounds} interleaved rounds, best of {args.repeats} per call, {args.clock} clock, "
          f"edge from {EDGE_ROOT}, load average {os.getloadavg()[0]:.1f}")
    if args.json is not None:
        ratio = {k: list(np.array(times[k]) / np.array(times["floor"])) for k in ("preprocess", "before")}
        kind_ratio = {kind: list(np.array(by_kind["preprocess", kind]) / np.array(by_kind["floor", kind]))
                      for kind in kinds}
        args.json.write_text(json.dumps({"ratio": ratio, "by_kind": kind_ratio, "identical": bool(same),
                                         "ms": {k: list(np.array(v) / args.images * 1e3) for k, v in times.items()},
                                         "steps": step_ms, "load": os.getloadavg()[0]}))
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


def _summary(values) -> str:
    v = np.array(values)
    return f"{np.median(v):.2f}x [{v.min():.2f}, {v.max():.2f}]"


def against(args) -> int:
    """Run this script alternately on this checkout and on ``args.against``; print both sides."""
    sides = {"this": [], "against": []}
    passed = ["--images", str(args.images), "--rounds", str(args.rounds), "--repeats", str(args.repeats),
              "--size", str(args.size), "--seed", str(args.seed), "--clock", args.clock] + (["--clahe"] * args.clahe)
    loads = []
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-against-") as tmp:
        for i in range(args.alternations):
            for side in (("this", "against") if i % 2 == 0 else ("against", "this")):
                out = Path(tmp) / f"{side}{i}.json"
                root = ROOT if side == "this" else args.against.resolve()
                loads.append(os.getloadavg()[0])
                done = subprocess.run([sys.executable, __file__, "--edge-root", str(root), "--json", str(out), *passed],
                                      check=False, stdout=subprocess.DEVNULL)
                if done.returncode != 0:
                    print(f"the run on {root} failed (exit {done.returncode})", file=sys.stderr)
                    return 1
                sides[side].append(json.loads(out.read_text()))
    loads.append(os.getloadavg()[0])
    print(f"{args.alternations} alternations x {args.rounds} rounds per side, {args.images} PNGs, {args.clock} clock; "
          f"load average median {np.median(loads):.1f} [{min(loads):.1f}, {max(loads):.1f}]")
    for side, root in (("this", ROOT), ("against", args.against.resolve())):
        runs = sides[side]
        ratio = [r for run in runs for r in run["ratio"]["preprocess"]]
        kinds = sorted(runs[0]["by_kind"])
        per_kind = "  ".join(f"{k} {_summary([r for run in runs for r in run['by_kind'][k]])}" for k in kinds)
        ms = [m for run in runs for m in run["ms"]["preprocess"]]
        floor_ms = [m for run in runs for m in run["ms"]["floor"]]
        print(f"  {side:8s} {root}: preprocess / floor {_summary(ratio)}   {per_kind}")
        print(f"           per image: preprocess {np.median(ms):.3f} ms, floor {np.median(floor_ms):.3f} ms; "
              f"identical to the frozen reference: {all(run['identical'] for run in runs)}")
    return 0 if all(run["identical"] for runs in sides.values() for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
