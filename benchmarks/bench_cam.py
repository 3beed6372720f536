"""Which activation map points at the finding? Options scored on a trained run's test views.

On the abnormal test views that show their finding (synthetic data: the generator's box), each
map option is scored with ``murakit.evaluation.cam.score_maps`` (pointing with a 5% margin and
none, energy in box, 95% study-bootstrap intervals):

  * ``cam_centred``: today's grid before the alignment fix (cells centred on their squares);
  * ``cam_placed``: the grid at each cell's measured receptive-field centre (``deep.cam_model``);
  * ``cam_placed_trained_erf``: the grid placed at the centres measured with the trained weights
    (on random inputs) instead of re-initialised ones;
  * ``gradcam_<layer>``: Grad-CAM of a finer layer (stride 8 at ``s0_add`` / ``s1b_relu``), placed;
  * ``cam_x_gradcam_<layer>``: the placed grid times the finer Grad-CAM (positive parts);
  * ``cam_positive_channels``: the placed grid from the channels with a positive head weight only
    (the evidence for "abnormal"; channels arguing for "normal" left out);
  * ``randomised``: the placed grid of the same architecture with re-initialised weights;
  * ``centre_guess``: a fixed guess at the canvas centre.

Each option's paired difference from ``cam_placed`` (the shipped map) comes with a 95% interval,
the same test studies resampled for both.

Usage:  python benchmarks/bench_cam.py --run RUN [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FINE_LAYERS = ("s0_add", "s1b_relu")


def per_view(cams, boxes, size) -> dict:
    """Per-view hit (5% margin), hit with no margin and energy in box, float (N,) each."""
    from murakit.evaluation.cam import MARGIN, _inside, energy_in_box, peaks, to_canvas

    cams = to_canvas(cams, size)
    px, py = peaks(cams)
    return {"pointing": _inside(px, py, boxes, MARGIN * size).astype(float),
            "pointing_no_margin": _inside(px, py, boxes, 0.0).astype(float),
            "energy_in_box": energy_in_box(cams, boxes)}


def paired_differences(a: dict, b: dict, studies, n: int = 2000, seed: int = 0) -> dict:
    """B - A of each :func:`per_view` metric: ``{key: [diff, lo, hi]}``, the same studies resampled."""
    from murakit.evaluation.bootstrap import LEVEL, _interval, _resamples

    _, inv = np.unique(studies, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    idx = _resamples(len(counts), n, seed)
    out = {}
    for key, va in a.items():
        d = np.bincount(inv, weights=b[key] - va)
        out[key] = [float(np.mean(b[key] - va)), *_interval(d[idx].sum(1) / counts[idx].sum(1), LEVEL)]
    return out


def _views(run):
    from murakit.data.prepared import load_prepared

    prep = load_prepared(run)
    test = prep.select("test")
    boxes = np.asarray(prep.annotations["bbox"], np.float64)[test]
    keep = (prep.label[test] == 1) & ~np.isnan(boxes).any(axis=1)
    pos = test[keep]
    return (np.asarray(prep.images[prep.row[pos]]), boxes[keep], np.asarray(prep.annotations["finding"])[pos],
            prep.study[pos])


def _batched(fn, u8, batch=32):
    from edge.preprocess import to_model_input

    return np.concatenate([fn(to_model_input(u8[i:i + batch])) for i in range(0, len(u8), batch)])


def positive_channel_cam(model):
    """(copy of ``model`` with its negative head weights zeroed, its ``deep.cam_model``)."""
    import keras

    import deep

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    kernel, bias = clone.get_layer("head").get_weights()
    clone.get_layer("head").set_weights([np.maximum(kernel, 0), bias])
    return clone, deep.cam_model(clone)


def maps(model, u8) -> dict:
    """Every option's raw maps (N, S, S) for the views ``u8``."""
    import deep
    from deep.receptive import _monotone, erf_centroids, random_weights

    size = u8.shape[1]
    h = int(model.get_layer("gap").input.shape[1])
    centred = (np.arange(h) + 0.5) * size / h
    out = {}
    cm_c = deep.cam_model(model, centres=(centred, centred))
    out["cam_centred"] = _batched(lambda x: deep.cam(model, x, cm_c)[1], u8)
    cm = deep.cam_model(model)
    out["cam_placed"] = _batched(lambda x: deep.cam(model, x, cm)[1], u8)
    feats = model.get_layer("gap").input
    cells = np.array([(i, j) for i in range(h) for j in range(h)])
    c = np.mean([erf_centroids(model, feats, cells, seed=s) for s in range(4)], axis=0)
    trained = (np.array([c[cells[:, 0] == i, 0].mean() for i in range(h)]),
               np.array([c[cells[:, 1] == j, 1].mean() for j in range(h)]))
    cm_t = deep.cam_model(model, centres=tuple(_monotone(t) for t in trained))
    out["cam_placed_trained_erf"] = _batched(lambda x: deep.cam(model, x, cm_t)[1], u8)
    clone, cm_p = positive_channel_cam(model)
    out["cam_positive_channels"] = _batched(lambda x: deep.cam(clone, x, cm_p)[1], u8)
    for layer in FINE_LAYERS:
        g = _batched(lambda x, la=layer: deep.gradcam(model, x, layer=la)[1], u8)
        out[f"gradcam_{layer}"] = g
        out[f"cam_x_gradcam_{layer}"] = np.maximum(out["cam_placed"], 0) * g
    saved = model.get_weights()
    model.set_weights(random_weights(model, 0))
    rm = deep.cam_model(model)
    out["randomised"] = _batched(lambda x: deep.cam(model, x, rm)[1], u8)
    model.set_weights(saved)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (synthetic data)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    import deep
    from murakit.evaluation.cam import centre_guess, score_maps
    from murakit.layout import RunLayout

    u8, boxes, findings, studies = _views(args.run)
    model = deep.load_model(RunLayout(args.run).cnn_best)
    size = u8.shape[1]
    options = maps(model, u8)
    res = {name: score_maps(m, boxes, findings, studies, size) for name, m in options.items()}
    res["centre_guess"] = centre_guess(boxes, findings, studies, size)
    shipped = per_view(options["cam_placed"], boxes, size)
    paired = {name: paired_differences(shipped, per_view(m, boxes, size), studies)
              for name, m in options.items() if name != "cam_placed"}
    for name, r in res.items():
        by = ", ".join(f"{g} {d['pointing']:.2f}" for g, d in r["by_finding"].items())
        energy = f"{r['energy_in_box']:.3f}" if "energy_in_box" in r else "  -  "
        print(f"{name:26s} n={r['n_views']:3d} pointing {r['pointing']:.3f} {np.round(r['pointing_ci'], 3)} "
              f"no margin {r['pointing_no_margin']:.3f} energy {energy}  ({by})")
    print("paired differences against cam_placed (the shipped map), [diff, lo, hi]:")
    for name, d in paired.items():
        print(f"  {name:26s} " + "  ".join(f"{k} {np.round(v, 3).tolist()}" for k, v in d.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "paired_vs_cam_placed": paired}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
