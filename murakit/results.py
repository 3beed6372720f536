"""What each ``mk.*`` call returns: plain data underneath, a table or a picture on top.

Every result is a dataclass of dicts, lists, paths and PNG bytes, read back from what the stage
wrote into the run folder (``from_run``), so a result and ``murakit ...`` on the command line
agree by construction. :mod:`murakit.display` gives them their face: an HTML table in Jupyter,
aligned text in a terminal, inline pictures.

Only the standard library is imported here; numpy, OpenCV and the readers of the run folder
inside the constructors that need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from murakit.display import Displayed, Picture, fmt, grid_png, interval, pictures, shown
from murakit.layout import RunLayout

METRIC_COLUMNS = ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")


@dataclass(repr=False)
class Dataset(Displayed):
    """An indexed data set: where it is, how many images and studies per split, part and label.

    Attributes
    ----------
    root : Path
        The data root (the folder containing ``MURA-v1.1/``, or a class-folder tree).
    layout : str
        ``"mura-csv"``, ``"mura-folders"`` or ``"classes"``.
    counts : dict
        ``{"images": {split: {part: {"normal": n, "abnormal": n}}}, "studies": {...},
        "totals": {...}}`` over MURA's own splits (``train``, ``valid``).
    problems : dict
        ``{problem kind: count}``: missing images, unlabelled studies, ... (zeros included).
    index : murakit.data.mura.Dataset
        Every image record (path, part, patient, study, label).
    """

    root: Path
    layout: str
    counts: dict
    problems: dict
    index: object = field(repr=False)

    @classmethod
    def from_index(cls, ds) -> Dataset:
        """From a :class:`murakit.data.mura.Dataset` index: counts over MURA's own splits."""
        import numpy as np

        from murakit.evaluation.explore import count_table

        counts = count_table(ds.records, np.array([r.split for r in ds.records]))
        return cls(ds.root, ds.layout, counts, ds.problems.counts(), ds)

    def _rows(self):
        rows = []
        for split, parts in self.counts["studies"].items():
            for part, c in sorted(parts.items()):
                ci = self.counts["images"][split][part]
                rows.append((split, part, c["normal"], c["abnormal"], ci["normal"] + ci["abnormal"]))
        t = self.counts["totals"]
        caption = (f"{shown(self.root)} ({self.layout}): {t['images']} images, {t['studies']} studies, "
                   f"{t['patients']} patients")
        return ("split", "part", "normal studies", "abnormal studies", "images"), rows, caption


@dataclass(repr=False)
class PreparedData(Displayed):
    """The run's prepared cache: every image preprocessed once to uint8 (S, S).

    Attributes
    ----------
    run : Path
    size : int
        S, the side of the square model input in pixels.
    splits : dict
        ``{"train" | "val" | "test": {"images": n, "studies": n, "abnormal_studies": n}}``;
        ``val`` (by patient, from MURA's train) picks the CNN's epoch and both thresholds,
        ``test`` is MURA's ``valid``.
    n_failed : int
        Unreadable images (listed in ``RUN/prepared/failed.csv``).
    inverted : int
        Images the inversion detector turned back (negatives stored white-on-black).
    status : str
        ``"done"``, ``"resumed"`` or ``"up-to-date"`` (:class:`murakit.stage.StageResult`).
    """

    run: Path
    size: int
    splits: dict
    n_failed: int
    inverted: int
    status: str

    @classmethod
    def from_run(cls, run, status: str, n_failed: int) -> PreparedData:
        """The cache as the prepare stage left it in ``run``: images, studies, abnormal studies per split."""
        import numpy as np

        from murakit.data.prepared import load_prepared

        prep = load_prepared(run)
        splits = {}
        for s in ("train", "val", "test"):
            pos = prep.select(s)
            studies = np.unique(prep.study[pos])
            abnormal = np.unique(prep.study[pos][prep.label[pos] == 1])
            splits[s] = {"images": len(pos), "studies": len(studies), "abnormal_studies": len(abnormal)}
        return cls(RunLayout(run).root, prep.config.size, splits, n_failed, int(prep.inverted.sum()), status)

    def _rows(self):
        rows = [(s, c["images"], c["studies"], c["abnormal_studies"]) for s, c in self.splits.items()]
        caption = (f"{shown(self.run)}/prepared: {self.size}x{self.size} px, {self.inverted} images "
                   f"inverted back, {self.n_failed} unreadable")
        return ("split", "images", "studies", "abnormal studies"), rows, caption


@dataclass(repr=False)
class Exploration(Displayed):
    """The data audit (``murakit explore``): its summary and its plots.

    Attributes
    ----------
    summary : dict
        ``RUN/explore/summary.json``: counts, pixel statistics (size, raw mean/std quantiles,
        PNG formats), flagged images, inversion-detector accuracy (synthetic data), problems.
    figures : dict of str -> Picture
        ``counts``, ``sizes``, ``mean_std`` (exposure, with flagged images), ``samples``
        (raw | preprocessed per body part).
    """

    summary: dict
    figures: dict = field(repr=False)

    @classmethod
    def from_run(cls, run, summary: dict) -> Exploration:
        """The explore stage's ``summary`` with the plots it lists, read from ``RUN/explore``."""
        return cls(summary, pictures(RunLayout(run).explore, summary["plots"]))

    def _rows(self):
        s = self.summary
        ps = s["pixel_stats"]
        rows = [("images / studies / patients",
                 "{images} / {studies} / {patients}".format(**s["counts"]["totals"])),
                ("long side, px (min / median / max)", _quantiles(ps["long_side"], 0)),
                ("raw mean intensity (p5 / median / p95)", _quantiles(ps["mean"], 2, ("p5", "median", "p95"))),
                ("PNG formats", ", ".join(f"{k}: {v}" for k, v in ps["formats"].items()))]
        rows += [(f"flagged {k.replace('_', ' ')}", v["count"]) for k, v in s["flagged"].items()]
        inv = s.get("inversion_detector")
        if inv:
            rows.append(("inversion detector right on inverted / normal images",
                         (f"{inv['accuracy_inverted']:.3f} of {inv['n_inverted']} / "
                          f"{inv['accuracy_normal']:.3f} of {inv['n_normal']}")))
        return ("", "value"), rows, f"data audit of {shown(s['data_root'])}"


def _quantiles(q: dict, nd: int, keys=("min", "median", "max")) -> str:
    return " / ".join(fmt(q.get(k), nd) for k in keys) if q else "–"


@dataclass(repr=False)
class TrainedModel(Displayed):
    """A trained model of a run and its test metrics (MURA protocol).

    Attributes
    ----------
    name : str
        ``"baseline"`` or ``"cnn"``.
    metrics : dict
        ``RUN/<name>/metrics.json``: ``{"image": M, "study": M, "by_part": {...},
        "threshold": t, ...}`` with ``M = {"auroc", "kappa", "accuracy", "sensitivity",
        "specificity", "f1"}`` on the test split; the threshold was chosen on val.
    card : Path
        The model card (``RUN/<name>/card.json``).
    status : str
        ``"done"`` or ``"up-to-date"`` (:class:`murakit.stage.StageResult`).
    """

    name: str
    metrics: dict
    card: Path
    status: str

    @classmethod
    def from_run(cls, run, name: str, status: str) -> TrainedModel:
        """The model as its stage left it on disk (strict JSON: NaN is None, keys are str)."""
        layout = RunLayout(run)
        metrics = json.loads(layout.metrics(name).read_text(encoding="utf-8"))
        return cls(name, metrics, layout.card(name), status)

    @property
    def study_auroc(self) -> float:
        return self.metrics["study"]["auroc"]

    def _rows(self):
        m = self.metrics
        rows = [(level, *(fmt(m[level].get(k)) for k in METRIC_COLUMNS)) for level in ("study", "image")]
        caption = f"{self.name}, test split: threshold {fmt(m.get('threshold'))} (chosen on val)"
        if "epochs" in m:
            caption += f", best epoch {m.get('best_epoch')} of {m['epochs']}"
        if m.get("pointing_game") is not None:
            caption += f", pointing game {fmt(m['pointing_game'])}"
        return ("level", *METRIC_COLUMNS), rows, caption


@dataclass(repr=False)
class Evaluation(Displayed):
    """Every model of a run on the test split, as in the report (``murakit bench``).

    Attributes
    ----------
    report : dict
        ``RUN/report/report.json``: ``{"dataset": {...}, "models": {NAME: {"image": M,
        "study": M + {"auroc_ci", "kappa_ci"}, "by_part", "threshold", "size_bytes",
        "latency_ms_p50", "latency_ms_p95", "throughput_ips", "train_seconds"}},
        "comparisons": {...}}``; NAME in ``baseline``, ``cnn``, ``cnn_onnx``, ``cnn_onnx_int8``.
        Intervals are 95% bootstrap intervals over test studies ``[lo, hi]``.
    figures : dict of str -> Picture
        ``roc``, ``confusion``, ``kappa_by_part``, ``latency_vs_auroc`` and, once the CNN is
        exported, ``cam_grid``.
    """

    report: dict
    figures: dict = field(repr=False)

    PLOTS = ("roc.png", "confusion.png", "kappa_by_part.png", "latency_vs_auroc.png", "cam_grid.png")

    @classmethod
    def from_run(cls, run) -> Evaluation:
        """``RUN/report/report.json`` and the report's plots."""
        layout = RunLayout(run)
        report = json.loads(layout.report_json.read_text(encoding="utf-8"))
        return cls(report, pictures(layout.report, cls.PLOTS))

    @property
    def models(self) -> dict:
        return self.report["models"]

    @property
    def comparisons(self) -> dict:
        """``{"cnn_vs_baseline": {"auroc_diff", "ci", "models"}, ...}``: paired bootstrap."""
        return self.report.get("comparisons", {})

    def _rows(self):
        rows = []
        for name, m in self.models.items():
            s, i = m["study"], m["image"]
            rows.append((name, fmt(s["auroc"]) + interval(s.get("auroc_ci")), fmt(s["kappa"]) + interval(s.get("kappa_ci")),
                         fmt(s["sensitivity"]), fmt(s["specificity"]), fmt(i["auroc"]), fmt(m["threshold"]),
                         f"{m['size_bytes'] / 1024:.0f} KiB"))
        ds = self.report["dataset"]
        caption = (f"test split: {ds['images']} images, {ds['studies']} studies; "
                   "[95% bootstrap interval over studies]")
        return (("model", "study AUROC", "study kappa", "sensitivity", "specificity", "image AUROC", "threshold",
                 "size"), rows, caption)

    def cost(self) -> CostTable:
        """Batch-1 latency and batch-32 throughput per model (vary from run to run)."""
        return CostTable(self.models)

    def differences(self) -> DiffTable:
        """The paired-bootstrap AUROC differences (CNN - baseline, INT8 - float)."""
        return DiffTable(self.comparisons)


@dataclass(repr=False)
class CostTable(Displayed):
    models: dict

    def _rows(self):
        rows = [(n, fmt(m["latency_ms_p50"], 2), fmt(m["latency_ms_p95"], 2), fmt(m["throughput_ips"], 0))
                for n, m in self.models.items()]
        return ("model", "latency p50 (ms)", "latency p95 (ms)", "throughput (img/s)"), rows, \
            "cost on this machine (batch 1 latency, batch 32 throughput)"


@dataclass(repr=False)
class DiffTable(Displayed):
    comparisons: dict

    def _rows(self):
        rows = []
        for name, c in self.comparisons.items():
            lo, hi = c["ci"]
            verdict = "–" if lo is None else ("excludes 0" if lo > 0 or hi < 0 else "includes 0")
            rows.append((name, " - ".join(c["models"]), fmt(c["auroc_diff"]),
                         "–" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]", verdict))
        return ("comparison", "models", "study AUROC difference", "95% CI", "interval"), rows, \
            "paired bootstrap over the same test studies"


@dataclass
class Explanations:
    """CAM (or Grad-CAM) overlays of the trained CNN, shown as one grid.

    Attributes
    ----------
    items : list of murakit.pipeline.explain.Explanation
        Per image: ``path``, ``probability`` in [0, 1], ``label``, ``overlay`` (PNG file).
    boxes : list of (x0, y0, x1, y1) or None
        The synthetic generator's finding box in model-input pixels, per image, when known.
    titles : list of str
    """

    items: list
    boxes: list
    titles: list
    columns: int = 4

    @classmethod
    def from_explained(cls, done, facts: dict, columns: int = 4) -> Explanations:
        """From :func:`murakit.pipeline.explain.explain_images`' explanations and, per image path,
        ``facts`` (finding box or None, "PART label") of :func:`~murakit.pipeline.explain.default_images`."""
        known = [facts.get(e.path, (None, "")) for e in done]
        titles = [f"{what} p={e.probability:.2f}".strip() for (_, what), e in zip(known, done)]
        return cls(done, [box for box, _ in known], titles, columns)

    def _repr_png_(self) -> bytes:
        import cv2

        images = [cv2.imread(str(e.overlay), cv2.IMREAD_COLOR) for e in self.items]
        return grid_png(images, self.titles, self.boxes, self.columns)

    def __repr__(self) -> str:
        return "\n".join(f"{t}: {shown(e.overlay)}" for t, e in zip(self.titles, self.items))


@dataclass(repr=False)
class Export(Displayed):
    """What ``murakit export`` wrote: ONNX models with their cards, golden sets, INT8 gate.

    Attributes
    ----------
    summary : dict
        ``RUN/export/export.json``: per exported stem (``cnn``, ``cnn.int8``, ``baseline``)
        its ``path``, ``bytes``; ``cnn`` has ``keras_parity`` (max |Keras - ONNX|);
        ``cnn.int8`` has the gate (``accepted``, ``float_auroc``, ``int8_auroc``, ...).
    files : dict of str -> Path
        The exported ONNX files that exist.
    """

    summary: dict
    files: dict

    STEMS = ("cnn", "cnn.int8", "baseline")

    @classmethod
    def from_run(cls, run) -> Export:
        """``RUN/export/export.json`` and the exported ONNX files that exist."""
        layout = RunLayout(run)
        summary = json.loads(layout.export_summary.read_text(encoding="utf-8"))
        return cls(summary, {s: layout.exported(s) for s in cls.STEMS if layout.exported(s).is_file()})

    def _rows(self):
        rows = []
        for stem, path in self.files.items():
            info = self.summary.get(stem, {})
            note = ""
            if "keras_parity" in info:
                note = "max |Keras - ONNX| " + ", ".join(f"{k} {v:.1e}" for k, v in info["keras_parity"].items())
            elif "int8_auroc" in info:
                note = (f"val study AUROC {info['float_auroc']:.3f} (float) -> {info['int8_auroc']:.3f} (INT8), "
                        f"max |p diff| {info['max_abs_diff']:.4f}")
            rows.append((shown(path), f"{path.stat().st_size / 1024:.0f} KiB", note))
        gate = self.summary.get("cnn.int8")
        if gate and not gate.get("accepted", True):
            rows.append(("cnn.int8.onnx", "refused", gate.get("reason", "")))
        return ("file", "size", "check"), rows, "exported models (each carries its model card and a golden set)"


@dataclass(repr=False)
class EdgePrediction(Displayed):
    """An answer of the edge runtime (:class:`edge.predictor.Predictor`, onnxruntime only).

    Attributes
    ----------
    result : edge.predictor.Prediction or edge.predictor.StudyPrediction
        ``probability`` in [0, 1], ``label``, ``threshold`` (from the model card); a study's
        probability is the mean of its ``views``.
    model : Path
    overlays : list of Picture
        CAM overlays per view (BGR over the preprocessed image) when ``cam=True``.
    """

    result: object
    model: Path
    overlays: list = field(default_factory=list, repr=False)

    @classmethod
    def from_answer(cls, result, model) -> EdgePrediction:
        """From a Predictor's answer; its views' CAMs (when computed) drawn over their images."""
        from edge.cam import overlay

        views = getattr(result, "views", None) or [result]
        overlays = [Picture.from_array(overlay(v.image, v.cam), f"{Path(v.path).name} p={v.probability:.2f}")
                    for v in views if v.cam is not None]
        return cls(result, Path(model), overlays)

    @property
    def probability(self) -> float:
        return self.result.probability

    @property
    def label(self) -> str:
        return self.result.label

    def to_dict(self) -> dict:
        """The same keys as ``edge-predict --json``."""
        return self.result.to_dict()

    def cam_grid(self, columns: int = 4) -> Picture:
        """The CAM overlays of every view side by side, titled with each view's probability."""
        if not self.overlays:
            raise ValueError("no CAM overlays: call predict(..., cam=True) with a CNN model")
        png = grid_png([o.to_array() for o in self.overlays], [o.title for o in self.overlays],
                        ncols=min(columns, len(self.overlays)))
        return Picture(png, "CAM overlays")

    def _rows(self):
        r = self.result
        views = getattr(r, "views", None) or [r]
        rows = [(shown(v.path), fmt(v.probability, 4), v.label) for v in views]
        if hasattr(r, "views"):
            rows.append((f"study ({len(views)} views, mean)", fmt(r.probability, 4), r.label))
        return ("input", "probability", "label"), rows, f"{self.model.name}, threshold {r.threshold:.4f}"


__all__ = ["METRIC_COLUMNS", "CostTable", "Dataset", "DiffTable", "EdgePrediction", "Evaluation", "Explanations",
           "Exploration", "Export", "PreparedData", "TrainedModel"]
