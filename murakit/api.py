"""murakit's Python API: the pipeline as one call per stage, for notebooks and scripts.

Each function is a thin wrapper over the stage functions the CLI runs (:mod:`murakit.pipeline`,
:mod:`murakit.evaluation`, :mod:`murakit.data`), with the CLI's defaults, so a notebook and
``murakit ...`` produce the same run folder. Every stage reads and writes one run folder
(``run``, default ``runs/default``) and skips work that is already complete.

Each function calls its stage and reads back what the stage wrote, nothing more. The results
are plain dataclasses (dicts, lists, paths, PNG bytes; :mod:`murakit.results`); in Jupyter they
display as tables (``_repr_html_``) and pictures (``_repr_png_``), and in a terminal as short
text (:mod:`murakit.display`). The stages draw their plots on figures of their own, so a
notebook's matplotlib backend is never touched.

>>> import murakit as mk
>>> data = mk.synthesize("data/synth", studies=200)        # doctest: +SKIP
>>> mk.prepare(data, run="runs/nb", size=64)                # doctest: +SKIP
>>> mk.train_baseline(run="runs/nb")                        # doctest: +SKIP

Only the standard library is imported here: ``import murakit`` stays as light as before and
each function imports the frameworks it needs (TensorFlow only in the CNN's stages).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from murakit.display import Picture
from murakit.layout import DEFAULT_RUN, RunLayout
from murakit.results import (
    Dataset,
    EdgePrediction,
    Evaluation,
    Explanations,
    Exploration,
    Export,
    PreparedData,
    TrainedModel,
)

__all__ = ["Dataset", "EdgePrediction", "Evaluation", "Explanations", "Exploration", "Export", "Picture",
           "PreparedData", "TrainedModel", "calibrate", "evaluate", "explain", "explore", "export", "load_dataset",
           "predict", "prepare", "synthesize", "train_baseline", "train_cnn"]


def _quiet(*_args, **_kwargs) -> None:
    """A ``log`` that drops the stage's progress lines (``verbose=False``)."""


def _log(verbose: bool):
    return print if verbose else _quiet


@contextlib.contextmanager
def _frameworks(verbose: bool):
    """TensorFlow's start-up lines off the output unless ``verbose`` (as the CLI does)."""
    from murakit.quiet import quiet_frameworks

    with quiet_frameworks(not verbose):
        yield


def _data_path(data) -> Path:
    return data.root if isinstance(data, Dataset) else Path(data)


# ============================================================================ data

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
    from murakit.data.mura import index_dataset

    return Dataset.from_index(index_dataset(path))


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
    from edge.preprocess import PreprocessConfig
    from murakit.data.prepared import prepare as prepare_cache

    given = {k: v for k, v in (("size", size), ("invert", invert)) if v is not None}
    cfg = PreprocessConfig(clahe=clahe, **given)
    res = prepare_cache(_data_path(data), run, cfg, seed=seed, workers=workers, progress=verbose,
                        log=_log(verbose), labels=labels, force=force)
    return PreparedData.from_run(run, res.status, res.figures["n_failed"])


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

    res = audit(_data_path(data), run, seed=seed, log=_log(verbose), force=force)
    return Exploration.from_run(run, res.figures)


# ============================================================================ models

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
    return TrainedModel.from_run(run, "baseline", res.status)


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
    return TrainedModel.from_run(run, "cnn", res.status)


# ============================================================================ evaluation

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
    from murakit.evaluation.report import BenchOptions, bench

    with _frameworks(verbose):
        bench(run, BenchOptions(seed=seed), force=force, log=_log(verbose))
    return Evaluation.from_run(run)


# ============================================================================ explain, export, predict

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
    from murakit.pipeline.explain import default_images, explain_images

    facts = {}
    if images is None:
        images, facts = default_images(run, per_class, seed)
    with _frameworks(verbose):
        done, _ = explain_images(images, run, gradcam=gradcam, log=_log(verbose))
    return Explanations.from_explained(done, facts, per_class if facts else 4)


def calibrate(run=DEFAULT_RUN, models=None, force: bool = False, verbose: bool = False) -> dict:
    """Refit trained models' calibrators and operating points from their val predictions (``murakit calibrate``).

    For a model trained before the calibration rule changed: its card is rewritten with
    today's fit of ``RUN/<model>/predictions_val.csv``, nothing is retrained, and the next
    :func:`export` carries the new card into the ONNX files (docs/trust.md).

    Parameters
    ----------
    run : str or Path
    models : list of {"cnn", "baseline"}, optional
        Default: every trained model of the run.
    force : bool
        Rewrite a card whose calibrators are already current.

    Returns
    -------
    dict
        ``{name: TrainedModel}`` of the models calibrated (status ``"done"`` or ``"up-to-date"``).
    """
    from murakit.pipeline.calibrate import calibrate_run

    res = calibrate_run(run, models=models, force=force, log=_log(verbose))
    return {m: TrainedModel.from_run(run, m, f["status"]) for m, f in res.figures.items()}


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
    from murakit.pipeline.export import ExportOptions, export_run

    with _frameworks(verbose):
        export_run(run, ExportOptions(int8=int8), force=force, log=_log(verbose))
    return Export.from_run(run)


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
    from edge.predictor import Predictor

    model = Path(model) if model is not None else RunLayout(run).exported("cnn")
    pred = Predictor(model, threads=threads)
    is_dir = not hasattr(src, "shape") and Path(src).is_dir()
    result = pred.predict_study(src, cam=cam) if is_dir else pred.predict(src, cam=cam)
    return EdgePrediction.from_answer(result, model)

