"""murakit's Python API: the pipeline as one call per stage, for notebooks and scripts.

Each function is a thin wrapper over the stage functions the CLI runs (:mod:`murakit.pipeline`,
:mod:`murakit.evaluation`, :mod:`murakit.data`), with the CLI's defaults, so a notebook and
``murakit ...`` produce the same run folder. Every stage reads and writes one run folder
(``run``, default ``runs/default``) and skips work that is already complete.

The results are plain dataclasses (dicts, lists, paths, PNG bytes); in Jupyter they display
as tables (``_repr_html_``) and pictures (``_repr_png_``), and in a terminal as short text.

>>> import murakit as mk
>>> data = mk.synthesize("data/synth", studies=200)        # doctest: +SKIP
>>> mk.prepare(data, run="runs/nb", size=64)                # doctest: +SKIP
>>> mk.train_baseline(run="runs/nb")                        # doctest: +SKIP

Only the standard library is imported here: ``import murakit`` stays as light as before and
each function imports the frameworks it needs (TensorFlow only in the CNN's stages).
"""

from __future__ import annotations

import contextlib
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from murakit.layout import DEFAULT_RUN, RunLayout

__all__ = ["Dataset", "EdgePrediction", "Evaluation", "Explanations", "Exploration", "Export", "Picture",
           "PreparedData", "TrainedModel", "evaluate", "explain", "explore", "export", "load_dataset",
           "predict", "prepare", "synthesize", "train_baseline", "train_cnn"]

METRIC_COLUMNS = ("auroc", "kappa", "accuracy", "sensitivity", "specificity", "f1")


# ============================================================================ display helpers

def _quiet(*_args, **_kwargs) -> None:
    """A ``log`` that drops the stage's progress lines (``verbose=False``)."""


def _log(verbose: bool):
    return print if verbose else _quiet


def _shown(path) -> str:
    """A path as a reader should see it: relative to the working folder when inside it."""
    if path is None:
        return ""
    p = Path(path)
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return str(p)


def _fmt(v, nd: int = 3) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{nd}f}"


def _ci(pair) -> str:
    if not pair or pair[0] is None:
        return ""
    return f" [{pair[0]:.3f}, {pair[1]:.3f}]"


def _table(header, rows, caption: str = "") -> str:
    """A small HTML table (cells are escaped text)."""
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _text_table(header, rows) -> str:
    """The same table as aligned plain text (for terminals and text-only viewers)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


class _Displayed:
    """Mixin: an HTML table (``_repr_html_``) and the same table as text (``repr``), both built
    from one ``_rows()`` -> (header, rows, caption). Subclasses are ``@dataclass(repr=False)``:
    their fields stay plain data, their repr is the table (not a dump of every nested dict)."""

    def _rows(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return _table(*self._rows())

    def __repr__(self) -> str:
        header, rows, caption = self._rows()
        return (caption + "\n" if caption else "") + _text_table(header, rows)


@dataclass
class Picture:
    """A PNG picture: shown inline by Jupyter, saved or decoded on demand.

    Attributes
    ----------
    png : bytes
        The encoded PNG.
    title : str
    path : Path or None
        The file it was read from, when it came from the run folder.
    """

    png: bytes = field(repr=False)
    title: str = ""
    path: Path | None = None

    @classmethod
    def from_file(cls, path, title: str = "") -> Picture:
        path = Path(path)
        return cls(path.read_bytes(), title or path.stem, path)

    @classmethod
    def from_array(cls, image, title: str = "") -> Picture:
        """From uint8 (H, W) grey or (H, W, 3) BGR pixels (OpenCV's order)."""
        import cv2

        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise ValueError(f"cannot encode an image of shape {getattr(image, 'shape', None)} as PNG")
        return cls(buf.tobytes(), title)

    def to_array(self):
        """uint8 (H, W, 3) BGR pixels (or (H, W, 4) with alpha), decoded from the PNG."""
        import cv2
        import numpy as np

        return cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_UNCHANGED)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.png)
        return path

    def _repr_png_(self) -> bytes:
        return self.png


def _pictures(folder: Path, names) -> dict:
    """{stem: Picture} of the PNG files ``names`` that exist in ``folder``."""
    return {Path(n).stem: Picture.from_file(folder / n) for n in names if (folder / n).is_file()}


def _grid_png(images, titles, boxes=None, ncols: int = 4) -> bytes:
    """One PNG of BGR uint8 images in a grid with titles (and green boxes where given)."""
    import io

    import cv2
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switch

    n = max(1, len(images))
    nrows = (n + ncols - 1) // ncols
    fig = Figure(figsize=(2.3 * ncols, 2.5 * nrows))
    for k, (img, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), interpolation="nearest")
        box = boxes[k] if boxes is not None else None
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(_rect(x0, y0, x1, y1))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return buf.getvalue()


def _rect(x0, y0, x1, y1):
    from matplotlib.patches import Rectangle

    # pixel centres are integers in imshow: a box edge at x lies between pixels x-1 and x
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", lw=1.2)


@contextlib.contextmanager
def _keep_backend():
    """Stages that plot select matplotlib's Agg backend; give a notebook its own back after.

    Jupyter's inline backend needs ``%matplotlib inline`` to come back: switching to it with
    ``matplotlib.use`` alone leaves ``plt.show()`` printing ``<Figure ...>`` instead of a picture.
    """
    import matplotlib

    before = matplotlib.get_backend()
    try:
        yield
    finally:
        if matplotlib.get_backend() != before:
            with contextlib.suppress(Exception):
                _restore_backend(before)


def _restore_backend(name: str) -> None:
    import sys

    import matplotlib

    shell = sys.modules["IPython"].get_ipython() if "IPython" in sys.modules else None
    if shell is not None and "inline" in name:
        shell.run_line_magic("matplotlib", "inline")
    else:
        matplotlib.use(name)


@contextlib.contextmanager
def _frameworks(verbose: bool):
    """TensorFlow's start-up lines off the output unless ``verbose`` (as the CLI does)."""
    from murakit.quiet import quiet_frameworks

    with quiet_frameworks(not verbose):
        yield


def _data_path(data) -> Path:
    return data.root if isinstance(data, Dataset) else Path(data)


# ============================================================================ data

@dataclass(repr=False)
class Dataset(_Displayed):
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

    def _rows(self):
        rows = []
        for split, parts in self.counts["studies"].items():
            for part, c in sorted(parts.items()):
                ci = self.counts["images"][split][part]
                rows.append((split, part, c["normal"], c["abnormal"], ci["normal"] + ci["abnormal"]))
        t = self.counts["totals"]
        caption = (f"{_shown(self.root)} ({self.layout}): {t['images']} images, {t['studies']} studies, "
                   f"{t['patients']} patients")
        return ("split", "part", "normal studies", "abnormal studies", "images"), rows, caption


def load_dataset(path) -> Dataset:
    """Index a MURA-format data set (or a ``normal/`` + ``abnormal/`` class-folder tree).

    Parameters
    ----------
    path : str or Path
        The folder containing ``MURA-v1.1/``, ``MURA-v1.1/`` itself, or a class-folder tree.

    Returns
    -------
    Dataset

    Raises
    ------
    MurakitError
        No such folder, an unknown layout, or no usable image.
    """
    import numpy as np

    from murakit.data.mura import index_dataset
    from murakit.evaluation.explore import count_table

    ds = index_dataset(path)
    counts = count_table(ds.records, np.array([r.split for r in ds.records]))
    return Dataset(ds.root, ds.layout, counts, ds.problems.counts(), ds)


def synthesize(out="data/synth", studies: int | None = None, seed: int = 0, force: bool = False,
               verbose: bool = False) -> Dataset:
    """Write the synthetic MURA-v1.1-shaped data set (``murakit synth``) and index it.

    Parameters
    ----------
    out : str or Path
        Folder that will contain ``MURA-v1.1/``.
    studies : int, optional
        Number of studies (>= 1); default 1,500 (~4,100 images), as ``murakit synth``.
        About 2.75 views per study; 20% of the studies form MURA's ``valid`` (the test split).
    seed : int
        Same ``studies`` and ``seed`` give byte-identical files, on any x86-64 CPU; an
        existing tree made with them (and this generator version) is reused as it is.
    force : bool
        Replace an existing tree made with other parameters.
    verbose : bool
        Show the progress bar.

    Returns
    -------
    Dataset
    """
    from murakit.data import synth

    n = synth.DEFAULT_STUDIES if studies is None else studies
    if force or not synth.existing_matches(out, n, seed):
        synth.generate(out, n_studies=n, seed=seed, progress=verbose, force=force)
    return load_dataset(out)


@dataclass(repr=False)
class PreparedData(_Displayed):
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

    def _rows(self):
        rows = [(s, c["images"], c["studies"], c["abnormal_studies"]) for s, c in self.splits.items()]
        caption = (f"{_shown(self.run)}/prepared: {self.size}x{self.size} px, {self.inverted} images "
                   f"inverted back, {self.n_failed} unreadable")
        return ("split", "images", "studies", "abnormal studies"), rows, caption


def prepare(data, run=DEFAULT_RUN, size: int | None = None, seed: int = 0, clahe: bool = False,
            invert: str | None = None, workers: int | None = None, labels=None, force: bool = False,
            verbose: bool = False) -> PreparedData:
    """Preprocess every image once into ``RUN/prepared`` (``murakit prepare``).

    Parameters
    ----------
    data : Dataset, str or Path
        The data set (see :func:`load_dataset`).
    run : str or Path
        Run folder.
    size : int, optional
        Side S of the S x S uint8 images; default ``PreprocessConfig().size`` (128).
    seed : int
        Seed of the patient split of MURA's train into train and val.
    clahe : bool
        Contrast-limited histogram equalisation after intensity normalisation.
    invert : {"auto", "never", "always"}, optional
        Inversion policy; default ``"auto"`` (a detector turns negatives back).
    workers : int, optional
        Processes; default all cores.
    labels : str or Path, optional
        ``data`` is a DICOM tree in any layout; this CSV maps a StudyInstanceUID or a folder
        under ``data`` to a label (0/1), ``study,label`` rows (``murakit prepare --labels``).
    force : bool
        Rebuild a cache that is up to date.
    verbose : bool
        Show progress lines and bar.

    Returns
    -------
    PreparedData
    """
    import numpy as np

    from edge.preprocess import PreprocessConfig
    from murakit.data.prepared import load_prepared
    from murakit.data.prepared import prepare as prepare_cache

    given = {k: v for k, v in (("size", size), ("invert", invert)) if v is not None}
    cfg = PreprocessConfig(clahe=clahe, **given)
    res = prepare_cache(_data_path(data), run, cfg, seed=seed, workers=workers, progress=verbose,
                        log=_log(verbose), labels=labels, force=force)
    prep = load_prepared(run)
    splits = {}
    for s in ("train", "val", "test"):
        pos = prep.select(s)
        studies = np.unique(prep.study[pos])
        abnormal = np.unique(prep.study[pos][prep.label[pos] == 1])
        splits[s] = {"images": len(pos), "studies": len(studies), "abnormal_studies": len(abnormal)}
    return PreparedData(RunLayout(run).root, prep.config.size, splits, res.figures["n_failed"],
                        int(prep.inverted.sum()), res.status)


@dataclass(repr=False)
class Exploration(_Displayed):
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
        return ("", "value"), rows, f"data audit of {_shown(s['data_root'])}"


def _quantiles(q: dict, nd: int, keys=("min", "median", "max")) -> str:
    return " / ".join(_fmt(q.get(k), nd) for k in keys) if q else "–"


def explore(data, run=DEFAULT_RUN, seed: int = 0, force: bool = False, verbose: bool = False) -> Exploration:
    """Audit a data set (``murakit explore``): counts, sizes, exposure, inverted images, plots.

    Uses the run's prepared cache when it was built from ``data`` (all images, no decoding);
    otherwise decodes a seeded sample of at most 2,000 images.

    Parameters
    ----------
    data : Dataset, str or Path
    run : str or Path
        Run folder; writes ``RUN/explore/``.
    seed : int
        Seed of the samples (and of the split when there is no cache).
    force : bool
        Redo an audit that is up to date.

    Returns
    -------
    Exploration
    """
    from murakit.evaluation.explore import explore as audit

    with _keep_backend():
        res = audit(_data_path(data), run, seed=seed, log=_log(verbose), force=force)
    summary = res.figures
    return Exploration(summary, _pictures(RunLayout(run).explore, summary["plots"]))


# ============================================================================ models

@dataclass(repr=False)
class TrainedModel(_Displayed):
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

    @property
    def study_auroc(self) -> float:
        return self.metrics["study"]["auroc"]

    def _rows(self):
        m = self.metrics
        rows = [(level, *(_fmt(m[level].get(k)) for k in METRIC_COLUMNS)) for level in ("study", "image")]
        caption = f"{self.name}, test split: threshold {_fmt(m.get('threshold'))} (chosen on val)"
        if "epochs" in m:
            caption += f", best epoch {m.get('best_epoch')} of {m['epochs']}"
        if m.get("pointing_game") is not None:
            caption += f", pointing game {_fmt(m['pointing_game'])}"
        return ("level", *METRIC_COLUMNS), rows, caption


def _trained(run, name: str, status: str) -> TrainedModel:
    """The model as the stage left it on disk (strict JSON: NaN is None, keys are str)."""
    import json

    layout = RunLayout(run)
    metrics = json.loads(layout.metrics(name).read_text(encoding="utf-8"))
    return TrainedModel(name, metrics, layout.card(name), status)


def train_baseline(run=DEFAULT_RUN, seed: int = 0, hog_cell: int = 8, force: bool = False,
                   verbose: bool = False) -> TrainedModel:
    """Train the HOG + linear SVM baseline (``murakit train baseline``).

    C is chosen by patient-grouped cross-validation on train, probabilities are calibrated,
    the study-level threshold maximises kappa on val; test metrics follow the MURA protocol.

    Parameters
    ----------
    run : str or Path
        Run folder with a prepared cache.
    seed : int
        Seed of fold shuffling and SGD.
    hog_cell : int
        HOG cell side in pixels.
    force : bool
        Retrain a baseline that is up to date.

    Returns
    -------
    TrainedModel
    """
    from murakit.pipeline.train_baseline import train_baseline as train

    res = train(run, seed=seed, hog_cell=hog_cell, force=force, progress=verbose, log=_log(verbose))
    return _trained(run, "baseline", res.status)


def train_cnn(run=DEFAULT_RUN, max_epochs: int | None = None, seed: int = 0, arch: str = "small",
              width: int | None = None, force: bool = False, verbose: bool = False) -> TrainedModel:
    """Train the CNN with the same recipe as ``murakit train cnn`` (resumable).

    Parameters
    ----------
    run : str or Path
        Run folder with a prepared cache; the model takes its S x S images.
    max_epochs : int, optional
        Budget cap on epochs (early stopping may end sooner); default: the recipe's own
        (``murakit train cnn`` without ``--epochs``). Lower it to bound the time.
    seed : int
        Seeds weights, shuffling, augmentation: the same seed gives the same model.
    arch : {"small", "densenet169", "mobilenetv3small", "small-s8"}
    width : int, optional
        Stem channels of the "small" arch; default the recipe's.
    force : bool
        Train from scratch even when a finished or resumable run exists.
    verbose : bool
        Show per-epoch lines and the progress bar.

    Returns
    -------
    TrainedModel
        With ``metrics["epochs"]``, ``["best_epoch"]`` and, on synthetic data,
        ``["pointing_game"]`` (share of abnormal test views whose CAM peak falls on the finding).
    """
    from murakit.pipeline.train_cnn import CnnOptions
    from murakit.pipeline.train_cnn import train_cnn as train

    opts = CnnOptions(epochs=max_epochs, arch=arch, width=width, seed=seed)
    with _frameworks(verbose):
        res = train(run, opts, force=force, progress=verbose, log=_log(verbose))
    return _trained(run, "cnn", res.status)


# ============================================================================ evaluation

@dataclass(repr=False)
class Evaluation(_Displayed):
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
            rows.append((name, _fmt(s["auroc"]) + _ci(s.get("auroc_ci")), _fmt(s["kappa"]) + _ci(s.get("kappa_ci")),
                         _fmt(s["sensitivity"]), _fmt(s["specificity"]), _fmt(i["auroc"]), _fmt(m["threshold"]),
                         f"{m['size_bytes'] / 1024:.0f} KiB"))
        ds = self.report["dataset"]
        caption = (f"test split: {ds['images']} images, {ds['studies']} studies; "
                   "[95% bootstrap interval over studies]")
        return (("model", "study AUROC", "study kappa", "sensitivity", "specificity", "image AUROC", "threshold",
                 "size"), rows, caption)

    def cost(self) -> _CostTable:
        """Batch-1 latency and batch-32 throughput per model (vary from run to run)."""
        return _CostTable(self.models)

    def differences(self) -> _DiffTable:
        """The paired-bootstrap AUROC differences (CNN - baseline, INT8 - float)."""
        return _DiffTable(self.comparisons)


@dataclass(repr=False)
class _CostTable(_Displayed):
    models: dict

    def _rows(self):
        rows = [(n, _fmt(m["latency_ms_p50"], 2), _fmt(m["latency_ms_p95"], 2), _fmt(m["throughput_ips"], 0))
                for n, m in self.models.items()]
        return ("model", "latency p50 (ms)", "latency p95 (ms)", "throughput (img/s)"), rows, \
            "cost on this machine (batch 1 latency, batch 32 throughput)"


@dataclass(repr=False)
class _DiffTable(_Displayed):
    comparisons: dict

    def _rows(self):
        rows = []
        for name, c in self.comparisons.items():
            lo, hi = c["ci"]
            verdict = "–" if lo is None else ("excludes 0" if lo > 0 or hi < 0 else "includes 0")
            rows.append((name, " - ".join(c["models"]), _fmt(c["auroc_diff"]),
                         "–" if lo is None else f"[{lo:+.3f}, {hi:+.3f}]", verdict))
        return ("comparison", "models", "study AUROC difference", "95% CI", "interval"), rows, \
            "paired bootstrap over the same test studies"


def evaluate(run=DEFAULT_RUN, force: bool = False, seed: int = 0, verbose: bool = False) -> Evaluation:
    """Score every model of a run on the test split with the MURA protocol (``murakit bench``).

    Image probabilities are averaged over a study's views; metrics at image and study level,
    kappa per body part, 95% bootstrap intervals of study AUROC and kappa (studies resampled,
    seeded), paired CNN - baseline difference; latency and throughput timed side by side.
    Writes ``RUN/report/`` (report.json, report.md, plots); an up-to-date report is reused.

    Parameters
    ----------
    run : str or Path
        Run folder with at least one trained model.
    force : bool
        Redo a report that is newer than every model.
    seed : int
        Seed of the bootstrap and of the timing samples.

    Returns
    -------
    Evaluation

    Raises
    ------
    murakit.lock.RunInUse
        Another process holds the run's report (a ``murakit bench`` or another evaluation).
    """
    import json

    from murakit.evaluation.report import BenchOptions, bench

    layout = RunLayout(run)
    with _frameworks(verbose), _keep_backend():
        bench(run, BenchOptions(seed=seed), force=force, log=_log(verbose))
    report = json.loads(layout.report_json.read_text(encoding="utf-8"))
    names = ("roc.png", "confusion.png", "kappa_by_part.png", "latency_vs_auroc.png", "cam_grid.png")
    return Evaluation(report, _pictures(layout.report, names))


# ============================================================================ explain, export, predict

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

    def _repr_png_(self) -> bytes:
        import cv2

        images = [cv2.imread(str(e.overlay), cv2.IMREAD_COLOR) for e in self.items]
        return _grid_png(images, self.titles, self.boxes, self.columns)

    def __repr__(self) -> str:
        return "\n".join(f"{t}: {_shown(e.overlay)}" for t, e in zip(self.titles, self.items))


def _test_picks(prep, per_class: int, seed: int) -> list:
    """Seeded test positions: ``per_class`` abnormal (showing a finding when known), then normal."""
    import numpy as np

    test = prep.select("test")
    rng = np.random.default_rng(seed)
    boxes = None if prep.annotations is None else prep.annotations["bbox"]
    picks = []
    for label in (1, 0):
        keep = test[prep.label[test] == label]
        if label and boxes is not None:
            shown = keep[~np.isnan(boxes[keep]).any(axis=1)]
            keep = shown if len(shown) else keep
        picks += sorted(rng.choice(keep, size=min(per_class, len(keep)), replace=False).tolist())
    return picks


def _default_images(run, per_class: int, seed: int) -> tuple:
    """(image paths, {path: (finding box or None, "PART label")}) of the default test picks."""
    import numpy as np

    from murakit.data.prepared import load_prepared

    prep = load_prepared(run)
    root = Path(prep.meta["data_root"])
    images, facts = [], {}
    for i in _test_picks(prep, per_class, seed):
        box = None if prep.annotations is None else prep.annotations["bbox"][i]
        path = root / str(prep.path[i])
        images.append(path)
        facts[str(path)] = (None if box is None or np.isnan(box).any() else tuple(map(float, box)),
                            f"{prep.part[i]} {'abnormal' if prep.label[i] else 'normal'}")
    return images, facts


def explain(images=None, run=DEFAULT_RUN, per_class: int = 4, gradcam: bool = False, seed: int = 0,
            verbose: bool = False) -> Explanations:
    """Where the CNN looks: CAM overlays (``murakit explain``) of images, shown as a grid.

    Parameters
    ----------
    images : list of str or Path, optional
        Image files. Default: ``per_class`` abnormal and ``per_class`` normal test images of
        the run, seeded (abnormal ones that show their finding when the data says so).
    run : str or Path
        Run folder with a trained CNN; overlays go to ``RUN/explain``.
    per_class : int
        Images per class when ``images`` is None.
    gradcam : bool
        Grad-CAM of the last feature maps instead of the CAM head.
    seed : int
        Seed of the default pick.

    Returns
    -------
    Explanations
        Titles give the body part and the true label (default picks) and the predicted
        probability. Unreadable images are skipped (one line each on stderr).
    """
    from murakit.pipeline.explain import explain_images

    facts = {}
    if images is None:
        images, facts = _default_images(run, per_class, seed)
    with _frameworks(verbose):
        done, _ = explain_images(images, run, gradcam=gradcam, log=_log(verbose))
    known = [facts.get(e.path, (None, "")) for e in done]
    titles = [f"{what} p={e.probability:.2f}".strip() for (_, what), e in zip(known, done)]
    return Explanations(done, [box for box, _ in known], titles, per_class if facts else 4)


@dataclass(repr=False)
class Export(_Displayed):
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
            rows.append((_shown(path), f"{path.stat().st_size / 1024:.0f} KiB", note))
        gate = self.summary.get("cnn.int8")
        if gate and not gate.get("accepted", True):
            rows.append(("cnn.int8.onnx", "refused", gate.get("reason", "")))
        return ("file", "size", "check"), rows, "exported models (each carries its model card and a golden set)"


def export(run=DEFAULT_RUN, int8: bool = True, force: bool = False, verbose: bool = False) -> Export:
    """Export the run's models to ONNX with golden sets (``murakit export``).

    The CNN becomes ``cnn.onnx`` (probability and CAM outputs, checked against Keras) and,
    when its val study AUROC drops by at most 0.01, ``cnn.int8.onnx``; the baseline
    ``baseline.onnx``. Every file carries the model card: the edge runtime needs nothing else.

    Parameters
    ----------
    run : str or Path
    int8 : bool
        Also quantize the CNN to INT8 (static QDQ, calibrated on train images).
    force : bool
        Redo an export that is up to date.

    Returns
    -------
    Export
    """
    import json

    from murakit.pipeline.export import ExportOptions, export_run

    layout = RunLayout(run)
    with _frameworks(verbose):
        export_run(run, ExportOptions(int8=int8), force=force, log=_log(verbose))
    summary = json.loads(layout.export_summary.read_text(encoding="utf-8"))
    stems = ("cnn", "cnn.int8", "baseline")
    return Export(summary, {s: layout.exported(s) for s in stems if layout.exported(s).is_file()})


@dataclass(repr=False)
class EdgePrediction(_Displayed):
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
        png = _grid_png([o.to_array() for o in self.overlays], [o.title for o in self.overlays],
                        ncols=min(columns, len(self.overlays)))
        return Picture(png, "CAM overlays")

    def _rows(self):
        r = self.result
        views = getattr(r, "views", None) or [r]
        rows = [(_shown(v.path), _fmt(v.probability, 4), v.label) for v in views]
        if hasattr(r, "views"):
            rows.append((f"study ({len(views)} views, mean)", _fmt(r.probability, 4), r.label))
        return ("input", "probability", "label"), rows, f"{self.model.name}, threshold {r.threshold:.4f}"


def predict(src, model=None, run=DEFAULT_RUN, cam: bool = False, threads: int | None = None) -> EdgePrediction:
    """Score an image or a study folder with an exported model on the edge runtime.

    The edge runtime is numpy + OpenCV + onnxruntime: no TensorFlow, no scikit-learn. The
    preprocessing, threshold and labels come from the model file's card.

    Parameters
    ----------
    src : str, Path or ndarray
        An image file (PNG/JPEG/DICOM), a decoded image array, or a study folder (its views
        are averaged, MURA protocol).
    model : str or Path, optional
        An ONNX file from :func:`export`; default ``RUN/export/cnn.onnx``.
    run : str or Path
        Where the default model is.
    cam : bool
        Also return CAM overlays (CNN models).
    threads : int, optional
        onnxruntime intra-op threads.

    Returns
    -------
    EdgePrediction
    """
    from edge.cam import overlay
    from edge.predictor import Predictor

    model = Path(model) if model is not None else RunLayout(run).exported("cnn")
    pred = Predictor(model, threads=threads)
    is_dir = not hasattr(src, "shape") and Path(src).is_dir()
    result = pred.predict_study(src, cam=cam) if is_dir else pred.predict(src, cam=cam)
    views = result.views if is_dir else [result]
    overlays = [Picture.from_array(overlay(v.image, v.cam), f"{Path(v.path).name} p={v.probability:.2f}")
                for v in views if v.cam is not None]
    return EdgePrediction(result, model, overlays)

