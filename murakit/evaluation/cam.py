"""Does the CNN's activation map point at the finding? Measured where the finding is known.

The synthetic generator records every drawn finding's box (``RUN/prepared/index.csv``, in
canvas pixels), so on its abnormal test views the map can be scored against it:

* ``pointing``: the map's peak lies inside the box grown by 5% of the canvas side (the image's
  long side after the resize) on each side; ``pointing_no_margin`` with the box as drawn.
* ``energy_in_box``: share of the map's positive mass (logit contributions for "abnormal")
  inside the box.
* ``centre_guess``: the pointing of a fixed guess at the canvas centre - the score a map that
  knows nothing gets from where findings tend to be drawn.
* ``randomised_model``: the same metrics for the same architecture with re-initialised weights
  (Adebayo et al. 2018, "Sanity checks for saliency maps"): a map that scores as well without
  the trained weights measures the architecture or the image, not the model.

Every figure comes with a 95% bootstrap interval over studies (the protocol's unit), and per
finding type: fracture, hardware, lesion (the generator's lytic and periosteal findings).
"""

from __future__ import annotations

import numpy as np

from murakit.evaluation.bootstrap import LEVEL, N_RESAMPLES, _interval, _resamples

MARGIN = 0.05  # of the canvas side
GROUPS = {"fracture": ("fracture",), "hardware": ("hardware",), "lesion": ("lytic", "periosteal")}


def to_canvas(cams, size: int) -> np.ndarray:
    """Raw maps (N, h, w) on the S x S canvas, float32 (N, S, S), values unchanged in scale.

    A graph's S x S map is already placed (``edge.cam``); a coarser one (an older export) is
    resized with its cells centred, as ``edge.cam.upsample_cam`` draws it.
    """
    import cv2

    cams = np.asarray(cams, np.float32)
    if cams.shape[1:] == (size, size):
        return cams
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR) for c in cams])


def _inside(px, py, boxes, margin: float) -> np.ndarray:
    x0, y0, x1, y1 = (boxes[:, k] for k in range(4))
    return (px >= x0 - margin) & (px <= x1 + margin) & (py >= y0 - margin) & (py <= y1 + margin)


def peaks(cams: np.ndarray) -> tuple:
    """Pixel-centre coordinates (x, y), float (N,), of each map's maximum (first one on ties)."""
    n, _, w = cams.shape
    flat = np.argmax(cams.reshape(n, -1), axis=1)
    return flat % w + 0.5, flat // w + 0.5


def energy_in_box(cams: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Share of each map's positive mass inside its box, float (N,) in [0, 1] (0: no positive mass)."""
    n, h, w = cams.shape
    pos = np.maximum(np.asarray(cams, np.float64), 0.0)
    xs, ys = np.arange(w) + 0.5, np.arange(h) + 0.5
    out = np.zeros(n)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        total = pos[k].sum()
        if total > 0:
            out[k] = pos[k][np.ix_((ys >= y0) & (ys <= y1), (xs >= x0) & (xs <= x1))].sum() / total
    return np.clip(out, 0.0, 1.0)


def _study_ci(values: np.ndarray, studies: np.ndarray, n: int, seed: int) -> list:
    """95% percentile interval of the mean over views, studies resampled with replacement."""
    _, inv = np.unique(studies, return_inverse=True)
    sums = np.bincount(inv, weights=values.astype(np.float64))
    counts = np.bincount(inv).astype(np.float64)
    idx = _resamples(len(sums), n, seed)
    return _interval(sums[idx].sum(1) / counts[idx].sum(1), LEVEL)


def _scores(hit, hit0, energy, studies, n, seed) -> dict:
    out = {"n_views": len(hit)}
    for key, v in (("pointing", hit), ("pointing_no_margin", hit0), ("energy_in_box", energy)):
        if v is None:
            continue
        out[key] = float(np.mean(v)) if len(v) else None
        out[f"{key}_ci"] = _study_ci(np.asarray(v, float), studies, n, seed) if len(v) else None
    return out


def score_maps(cams, boxes, findings, studies, size: int, n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Pointing (5% margin and none) and energy in box of maps against known boxes.

    Parameters
    ----------
    cams : float (N, S, S) or (N, h, w)
        Raw maps of views that show a finding (see :func:`to_canvas`).
    boxes : float (N, 4)
        ``x0, y0, x1, y1`` in canvas pixels.
    findings : str (N,)
        The generator's finding names.
    studies : (N,) study ids (the bootstrap's unit).
    size : int, canvas side S

    Returns
    -------
    dict
        ``pointing``, ``pointing_ci``, ``pointing_no_margin`` (+ ``_ci``), ``energy_in_box``
        (+ ``_ci``), ``n_views`` and ``by_finding`` {fracture, hardware, lesion: the same}.
    """
    cams, boxes = to_canvas(cams, size), np.asarray(boxes, np.float64)
    findings, studies = np.asarray(findings), np.asarray(studies)
    px, py = peaks(cams)
    hit, hit0 = _inside(px, py, boxes, MARGIN * size), _inside(px, py, boxes, 0.0)
    energy = energy_in_box(cams, boxes)
    out = _scores(hit, hit0, energy, studies, n, seed)
    out["by_finding"] = {g: _scores(hit[m], hit0[m], energy[m], studies[m], n, seed)
                         for g, names in GROUPS.items() if (m := np.isin(findings, names)).any()}
    return out


def centre_guess(boxes, findings, studies, size: int, n: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Pointing of a guess at the canvas centre, scored like :func:`score_maps` (no energy)."""
    boxes, findings, studies = np.asarray(boxes, np.float64), np.asarray(findings), np.asarray(studies)
    c = np.full(len(boxes), size / 2.0)
    hit, hit0 = _inside(c, c, boxes, MARGIN * size), _inside(c, c, boxes, 0.0)
    out = _scores(hit, hit0, None, studies, n, seed)
    out["by_finding"] = {g: _scores(hit[m], hit0[m], None, studies[m], n, seed)
                         for g, names in GROUPS.items() if (m := np.isin(findings, names)).any()}
    return out


def _keras_cams(model, u8: np.ndarray, batch: int = 64) -> np.ndarray:
    import deep
    from edge.preprocess import to_model_input

    cmodel = deep.cam_model(model)
    return np.concatenate([deep.cam(model, to_model_input(u8[i:i + batch]), cmodel)[1]
                           for i in range(0, len(u8), batch)])


def _onnx_cams(path, u8: np.ndarray, batch: int = 64) -> np.ndarray:
    from edge.predictor import Predictor

    pred = Predictor(path)
    return np.concatenate([pred.run(pred.model_input(u8[i:i + batch]))["cam"] for i in range(0, len(u8), batch)])


def cam_report(run, data: dict, seed: int = 0, log=print) -> dict | None:
    """``report["cam"]``: the exported CNN's maps (the Keras model's when not exported) on the
    abnormal test views that show their finding, the centre guess and the randomised model.

    Parameters
    ----------
    data : dict
        From ``murakit.evaluation.bench.benchmark``: ``images`` uint8 (N, S, S) in test order,
        ``order`` (positions in the prepared cache), ``studies``, ``labels``, ``prep``.

    Returns
    -------
    dict, or None when the data carries no finding boxes (real MURA) or there is no CNN.
    """
    import deep
    from deep.receptive import random_weights
    from murakit.layout import RunLayout

    layout = RunLayout(run)
    ann = data["prep"].annotations
    if ann is None or not layout.cnn_best.is_file():
        return None
    boxes = np.asarray(ann["bbox"], np.float64)[data["order"]]
    keep = (data["labels"] == 1) & ~np.isnan(boxes).any(axis=1)
    if not keep.any():
        return None
    u8, boxes = np.asarray(data["images"][keep]), boxes[keep]
    findings, studies = np.asarray(ann["finding"])[data["order"]][keep], data["studies"][keep]
    size = u8.shape[1]
    log(f"  scoring CAMs on {len(u8)} test views with a known finding")
    onnx_path = layout.exported("cnn")
    source = "cnn_onnx" if onnx_path.exists() else "cnn"
    cams = _onnx_cams(onnx_path, u8) if source == "cnn_onnx" else _keras_cams(deep.load_model(layout.cnn_best), u8)
    out = {"model": source, "margin": MARGIN, "views": "abnormal test views showing their finding",
           **score_maps(cams, boxes, findings, studies, size, seed=seed)}
    out["centre_guess"] = centre_guess(boxes, findings, studies, size, seed=seed)
    rand = deep.load_model(layout.cnn_best)
    rand.set_weights(random_weights(rand, seed))
    out["randomised_model"] = score_maps(_keras_cams(rand, u8), boxes, findings, studies, size, seed=seed)
    out["cam_shape"] = list(np.asarray(cams).shape[1:])
    return out


def _fmt(d: dict, key: str) -> str:
    v, ci = d.get(key), d.get(f"{key}_ci")
    if v is None:
        return "–"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown_lines(cam: dict | None) -> list:
    """report.md section of :func:`cam_report`'s dict (nothing when absent)."""
    if not cam:
        return []
    lines = ["", "## Does the activation map point at the finding?", "",
             (f"{cam['n_views']} abnormal test views that show their finding (the generator's box). Pointing: "
              f"the map's peak inside the box grown by {cam['margin']:.0%} of the side; energy: share of the "
              "map's positive mass inside the box. Randomised: the same architecture with re-initialised "
              "weights (a map that scores as well would not be measuring the model)."), "",
             "| | views | pointing | pointing, no margin | energy in box |", "|---|---|---|---|---|"]
    rows = [("CNN (" + cam["model"] + ")", cam), ("centre guess", cam["centre_guess"]),
            ("randomised CNN", cam["randomised_model"])]
    rows += [(f"CNN: {g}", d) for g, d in cam["by_finding"].items()]
    for name, d in rows:
        lines.append(f"| {name} | {d['n_views']} | {_fmt(d, 'pointing')} | {_fmt(d, 'pointing_no_margin')} "
                     f"| {_fmt(d, 'energy_in_box')} |")
    return lines
