"""Benchmark DICOM input: decode + preprocess of one large radiograph, DICOM beside PNG.

Usage::

    python benchmarks/bench_dicom.py [--rounds 15] [--best-of 3] [--height 2500] [--width 2000] [--size S]
                                     [--only 'dicom uncompressed,dicom rle'] [--clock wall|cpu]

One synthetic 2,000 x 2,500 16-bit radiograph (smooth anatomy, a bright bone band, quantum
noise) is written, untimed, as

- a 16-bit PNG (OpenCV's default compression), the PNG path;
- DICOM DX, uncompressed explicit VR little endian, MONOCHROME1, BitsStored 16, rescale and a
  full-range window (so modality LUT, VOI and inversion all run);
- the same as JPEG-lossless SV1 (decoded by pylibjpeg-libjpeg), when that decoder is installed;
- the same as RLE Lossless and JPEG 2000 lossless, when their codecs are installed.

All files display the same pixels (the script checks that the preprocessed images agree).
Each round times, in a rotating order, for every file: ``load`` = ``edge.loader.load_image``
(read + decode + modality/VOI to float [0, 1]) and ``preprocess`` = ``edge.preprocess.preprocess``
(the same plus the one preprocessing path to S x S uint8) and ``floor`` = the least a reader of
that file must do: ``cv2.imread(IMREAD_UNCHANGED)`` for the PNG, ``pydicom.dcmread(path).pixel_array``
(the transfer syntax's decoder, no checks, no LUTs) for DICOM, then ``cv2.resize`` to S on the
long side. Reported: min / median / max ms over the rounds, the median of the per-round ratio to
PNG (with its min..max), and ``preprocess`` / ``floor`` per file (the target: the same ratio for
DICOM as for PNG), since absolute times on a shared machine are noisy. ``--clock cpu`` times
each call by the CPU time of the process (all its threads) instead of the wall clock: on a
machine whose load is several times its core count a 10 ms call is preempted in most rounds,
and CPU time still counts only the work done (OpenCV's threads included, for the floor as for
``preprocess``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.loader import load_image
from edge.preprocess import PreprocessConfig, preprocess


def dx_picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint16 (h, w): dark air, soft tissue, a bright bone band, Poisson-like noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    tissue = np.exp(-((xx - w / 2) / (0.28 * w)) ** 4)
    bone = np.exp(-((xx - w / 2 - 0.03 * w * np.sin(yy / h * 6)) / (0.07 * w)) ** 2)
    signal = 2500 + 18000 * tissue + 26000 * bone
    noisy = signal + rng.normal(0, 1, signal.shape).astype(np.float32) * np.sqrt(signal) * 2
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def write_files(folder: Path, pic: np.ndarray) -> dict:
    """{label: path} of the same picture as PNG and as each available DICOM encoding."""
    from murakit.data.dicom_write import DicomStyle, available_syntaxes, write_dicom

    files = {"png 16-bit": folder / "dx.png"}
    assert cv2.imwrite(str(files["png 16-bit"]), pic)
    ids = {"study_uid": "2.25.1", "series_uid": "2.25.1.1", "body_part": "WRIST"}
    base = {"photometric": "MONOCHROME1", "bits_stored": 16, "rescale": (1.0, -1024.0), "window": "full"}
    variants = [("dicom uncompressed", "explicit"), ("dicom jpeg-lossless", "jpeg-lossless"),
                ("dicom rle", "rle"), ("dicom jpeg2000-lossless", "jpeg2000-lossless")]
    have = available_syntaxes()
    for i, (label, syntax) in enumerate(variants):
        if syntax != "explicit" and syntax not in have:
            print(f"  ({label}: codec not installed, skipped)")
            continue
        files[label] = write_dicom(folder / f"dx_{syntax}.dcm", pic, DicomStyle(**base, syntax=syntax),
                                   sop_uid=f"2.25.1.1.{i}", **ids)
    return files


def floor(path: Path, size: int) -> np.ndarray:
    """Decode with no checks and no LUTs, then resize to ``size`` on the long side: (h, w) uint16."""
    if path.suffix == ".png":
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    else:
        import pydicom

        arr = pydicom.dcmread(str(path)).pixel_array
    scale = size / max(arr.shape)
    shape = (max(1, round(arr.shape[1] * scale)), max(1, round(arr.shape[0] * scale)))
    return cv2.resize(arr, shape, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def measure(files: dict, cfg: PreprocessConfig, rounds: int, best_of: int = 1, clock=time.perf_counter) -> dict:
    """{(label, op): [ms per round]}, interleaved: every round runs every file in rotated order;
    a round's figure is the best of ``best_of`` calls (on a busy machine a single call of tens
    of ms is often preempted; the best of a few is the call that ran)."""
    labels = list(files)
    ops = {"load": lambda p: load_image(p, dicom_voi=cfg.dicom_voi), "preprocess": lambda p: preprocess(p, cfg),
           "floor": lambda p: floor(p, cfg.size)}
    times = {(label, op): [] for label in labels for op in ops}
    for r in range(rounds + 1):  # round 0 warms caches and imports, not recorded
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for label in order:
            for op, fn in ops.items():
                best = float("inf")
                for _ in range(best_of):
                    t0 = clock()
                    fn(files[label])
                    best = min(best, (clock() - t0) * 1e3)
                if r:
                    times[(label, op)].append(best)
    return times


def report(files: dict, times: dict) -> None:
    ref = "png 16-bit"
    print(f"{'file':26s} {'MB':>6s}  {'op':10s} {'min':>8s} {'median':>8s} {'max':>8s}   ratio to PNG (median, min..max)")
    for label, path in files.items():
        mb = os.path.getsize(path) / 1e6
        for op in ("floor", "load", "preprocess"):
            t = times[(label, op)]
            ratios = [a / b for a, b in zip(t, times[(ref, op)])]
            print(f"{label:26s} {mb:6.2f}  {op:10s} {min(t):8.1f} {statistics.median(t):8.1f} {max(t):8.1f}   "
                  f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})")
    print("preprocess / floor of the same file, per round (median, min..max):")
    for label in files:
        ratios = [a / b for a, b in zip(times[(label, "preprocess")], times[(label, "floor")])]
        print(f"  {label:26s} {statistics.median(ratios):.2f}x ({min(ratios):.2f}..{max(ratios):.2f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--height", type=int, default=2500)
    ap.add_argument("--width", type=int, default=2000)
    ap.add_argument("--size", type=int, default=PreprocessConfig().size)
    ap.add_argument("--best-of", type=int, default=3, help="calls per file, op and round; the fastest counts")
    ap.add_argument("--only", help="comma-separated labels to time (e.g. 'dicom uncompressed,dicom rle'); "
                                   "the PNG is always included, as the reference")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time calls by the wall clock or by the process's CPU time (a loaded machine)")
    args = ap.parse_args(argv)
    try:
        import pydicom  # noqa: F401
    except ImportError:
        print("bench_dicom: needs the dicom extra: pip install 'murakit[dicom]'", file=sys.stderr)
        return 2
    cfg = PreprocessConfig(size=args.size)
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as tmp:
        pic = dx_picture(args.height, args.width)
        files = write_files(Path(tmp), pic)
        ref = preprocess(files["png 16-bit"], cfg)
        for label, path in files.items():  # the same pixels must give the same model input
            diff = np.abs(preprocess(path, cfg).astype(int) - ref.astype(int)).max()
            assert diff <= 1, (label, diff)
        if args.only:
            keep = {"png 16-bit", *(label.strip() for label in args.only.split(","))}
            files = {k: v for k, v in files.items() if k in keep}
        print(f"DICOM benchmark: {args.width} x {args.height} 16-bit radiograph, preprocess size {cfg.size}, "
              f"{args.rounds} interleaved rounds, best of {args.best_of} calls, {os.cpu_count()} cores, "
              f"{args.clock} clock, load average {os.getloadavg()[0]:.1f}")
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        report(files, measure(files, cfg, args.rounds, args.best_of, clock))
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
