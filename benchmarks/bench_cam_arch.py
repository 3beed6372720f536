"""Does a finer map point better? Two CNNs trained on the same run, compared view by view.

Runs A and B must share their prepared cache (copy ``RUN/prepared`` and train each arch with the
same ``--seed`` and ``--epochs``). On the abnormal test views that show their finding, each
model's exported map (``deep.cam_model``: the CAM placed at its cells' receptive-field centres)
is scored with ``murakit.evaluation.cam.score_maps``; the differences B - A of pointing (5%
margin and none) and energy in box come with a paired bootstrap interval over test studies
(the same resampled studies for both), the study AUROCs with their intervals and their paired
difference, and the batch-1 ONNX latency of B's graph (probability + placed CAM) over A's,
interleaved calls (``export.speed``).

It also scores, on A's model, a no-retraining variant of the map:

  * ``cam_positive_channels``: the CAM from the channels whose head weight is positive only
    (evidence for "abnormal", the channels that argue for "normal" left out), placed the same way.

Usage:  python benchmarks/bench_cam_arch.py --run A --against B [--json OUT]
        python benchmarks/bench_cam_arch.py --pool A1:B1 A2:B2 A3:B3   (several seeds, pooled)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def study_auroc(run):
    """Study AUROC of RUN/cnn/predictions_test.csv with its 95% bootstrap interval, and the arrays."""
    import csv

    from murakit.evaluation.bootstrap import study_intervals
    from murakit.evaluation.metrics import auroc, study_level

    with open(Path(run) / "cnn" / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["probability"]) for r in rows])
    s = np.array([r["study"] for r in rows])
    lv = study_level(y, p, s)
    return auroc(lv["label"], lv["prob"]), study_intervals(y, p, s, 0.5)["auroc_ci"], (y, p, s)


def pooled(pairs) -> dict:
    """B - A averaged over several pairs trained on one cache (e.g. three seeds), paired bootstrap.

    ``pairs``: [(run A, run B), ...], all on the same prepared cache, so they share their test
    studies: each resample draws the studies once and scores every pair on them.

    Returns ``{"pointing", "pointing_no_margin", "energy_in_box", "study_auroc": [diff, lo, hi]}``.
    """
    from bench_cam import _batched, _views, per_view

    import deep
    from murakit.evaluation.bootstrap import LEVEL, _interval, _resamples
    from murakit.evaluation.metrics import auroc, study_level
    from murakit.layout import RunLayout

    u8, boxes, _, studies = _views(pairs[0][0])
    size, diffs, aucs = u8.shape[1], [], []
    for a, b in pairs:
        hits = []
        for run in (a, b):
            model = deep.load_model(RunLayout(run).cnn_best)
            cm = deep.cam_model(model)
            hits.append(per_view(_batched(lambda x, m=model, c=cm: deep.cam(m, x, c)[1], u8), boxes, size))
        diffs.append({k: hits[1][k] - hits[0][k] for k in hits[0]})
        (_, _, (y, pa, s)), (_, _, (_, pb, _)) = study_auroc(a), study_auroc(b)
        la, lb = study_level(y, pa, s), study_level(y, pb, s)
        aucs.append((la["label"], la["prob"], lb["prob"]))
    _, inv = np.unique(studies, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    idx = _resamples(len(counts), 2000, 0)
    out = {}
    for key in diffs[0]:
        d = np.mean([p[key] for p in diffs], axis=0)
        w = np.bincount(inv, weights=d)
        out[key] = [float(d.mean()), *_interval(w[idx].sum(1) / counts[idx].sum(1), LEVEL)]
    y = aucs[0][0]
    ridx = _resamples(len(y), 2000, 0)
    mean_diff = [np.mean([auroc(y[i], pb[i]) - auroc(y[i], pa[i]) for _, pa, pb in aucs]) for i in ridx]
    out["study_auroc"] = [float(np.mean([auroc(y, pb) - auroc(y, pa) for _, pa, pb in aucs])),
                          *_interval(np.array(mean_diff), LEVEL)]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="run A (the shipped arch), trained, synthetic data")
    ap.add_argument("--against", help="run B (the candidate), trained on A's prepared cache")
    ap.add_argument("--pool", nargs="+", metavar="A:B",
                    help="instead: B - A averaged over these pairs (one cache, e.g. several seeds)")
    ap.add_argument("--rounds", type=int, default=9, help="latency rounds of 200 calls (default: %(default)s)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.pool:
        res = pooled([tuple(p.split(":", 1)) for p in args.pool])
        print("pooled B - A [diff, lo, hi]:", json.dumps(res))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return 0
    if not (args.run and args.against):
        ap.error("give --run A --against B, or --pool A:B ...")
    from bench_cam import _batched, _views, paired_differences, per_view, positive_channel_cam

    import deep
    from export.cnn import to_onnx
    from export.speed import onnx_side_by_side
    from murakit.evaluation.bootstrap import paired_auroc_difference
    from murakit.evaluation.cam import score_maps
    from murakit.layout import RunLayout

    u8, boxes, findings, studies = _views(args.run)
    u8_b, boxes_b, _, _ = _views(args.against)
    if u8.shape != u8_b.shape or not np.array_equal(boxes, boxes_b):
        print("error: the two runs do not share their prepared test views", file=sys.stderr)
        return 2
    size = u8.shape[1]
    res, per, onnx = {}, {}, {}
    for name, run in (("A", args.run), ("B", args.against)):
        model = deep.load_model(RunLayout(run).cnn_best)
        cm = deep.cam_model(model)
        cams = _batched(lambda x, m=model, c=cm: deep.cam(m, x, c)[1], u8)
        auc, ci, _ = study_auroc(run)
        res[name] = {"arch": model.name, "grid": list(model.get_layer("gap").input.shape[1:3]),
                     "params": model.count_params(), "study_auroc": auc, "study_auroc_ci": ci,
                     **score_maps(cams, boxes, findings, studies, size)}
        per[name] = per_view(cams, boxes, size)
        onnx[name] = to_onnx(cm, size)
        if name == "A":
            clone, pcm = positive_channel_cam(model)
            pcams = _batched(lambda x, m=clone, c=pcm: deep.cam(m, x, c)[1], u8)
            res["A_positive_channels"] = score_maps(pcams, boxes, findings, studies, size)
            per["A_positive_channels"] = per_view(pcams, boxes, size)
    res["B_minus_A"] = paired_differences(per["A"], per["B"], studies)
    res["A_positive_channels_minus_A"] = paired_differences(per["A"], per["A_positive_channels"], studies)
    (_, _, (y, pa, s)), (_, _, (_, pb, _)) = study_auroc(args.run), study_auroc(args.against)
    res["B_minus_A"]["study_auroc"] = paired_auroc_difference(y, pb, pa, s)
    x = np.random.default_rng(0).uniform(0, 1, (1, size, size, 1)).astype(np.float32)
    res["latency_batch1_threads1"] = onnx_side_by_side(onnx, {1: x}, base="A", rounds=args.rounds, calls=200,
                                                       threads=1)["batch_1"]
    for key in ("A", "B", "A_positive_channels"):
        r = res[key]
        print(f"{key:22s} n={r['n_views']} pointing {r['pointing']:.3f} {np.round(r['pointing_ci'], 3)} "
              f"no margin {r['pointing_no_margin']:.3f} {np.round(r['pointing_no_margin_ci'], 3)} "
              f"energy {r['energy_in_box']:.3f} {np.round(r['energy_in_box_ci'], 3)}"
              + (f" study AUROC {r['study_auroc']:.3f} {np.round(r['study_auroc_ci'], 3)}" if "study_auroc" in r
                 else ""))
    for key in ("B_minus_A", "A_positive_channels_minus_A"):
        print(key, json.dumps(res[key]))
    print("latency", json.dumps(res["latency_batch1_threads1"]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
