"""The run folder: every path a stage reads or writes, in one place.

A run is one directory a person can zip and hand over (``--run RUN``, default
``runs/default``). Other tools read these paths, so they are stable::

    RUN/prepared/index.csv, images.npy, config.json, failed.csv   the uint8 image cache
    RUN/explore/summary.json, summary.md, *.png                     the data audit
    RUN/baseline/card.json, baseline.onnx, metrics.json, predictions_{val,test}.csv
    RUN/cnn/card.json, best.keras, last.keras, state.json, history.csv, metrics.json,
            predictions_{val,test}.csv
    RUN/export/cnn.onnx, cnn.int8.onnx, baseline.onnx, export.json, golden/<stem>/
    RUN/report/report.json, report.md, *.png
    RUN/explain/*_cam.png
    RUN/.locks/<stage>.lock                                         see murakit.lock
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from murakit.errors import MurakitError

DEFAULT_RUN = Path("runs") / "default"
MODEL_STAGES = ("baseline", "cnn")


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder; nothing else joins ``run / "cnn" / ...`` by hand.

    Parameters
    ----------
    root : str or Path
        The run folder (need not exist yet).
    """

    root: Path

    def __init__(self, root=DEFAULT_RUN):
        object.__setattr__(self, "root", Path(root))

    # ------------------------------------------------------------ prepared cache
    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def prepared_partial(self) -> Path:
        """Where an unfinished cache is built (renamed to ``prepared`` when complete)."""
        return self.root / "prepared.partial"

    @property
    def prepared_config(self) -> Path:
        return self.prepared / "config.json"

    @property
    def prepared_index(self) -> Path:
        return self.prepared / "index.csv"

    @property
    def prepared_images(self) -> Path:
        return self.prepared / "images.npy"

    # ------------------------------------------------------------ stages
    @property
    def explore(self) -> Path:
        return self.root / "explore"

    @property
    def explore_summary(self) -> Path:
        return self.explore / "summary.json"

    def stage(self, name: str) -> Path:
        """``RUN/baseline`` or ``RUN/cnn``: a trained model's folder."""
        if name not in MODEL_STAGES:
            raise ValueError(f"unknown model stage {name!r}")
        return self.root / name

    def card(self, name: str) -> Path:
        """``RUN/<baseline|cnn>/card.json``: the trained model's card."""
        return self.stage(name) / "card.json"

    def metrics(self, name: str) -> Path:
        """``RUN/<baseline|cnn>/metrics.json``: test metrics; written last (the stage's done marker)."""
        return self.stage(name) / "metrics.json"

    def predictions(self, name: str, split: str) -> Path:
        """``RUN/<baseline|cnn>/predictions_<split>.csv``."""
        return self.stage(name) / f"predictions_{split}.csv"

    @property
    def baseline_onnx(self) -> Path:
        """The trained baseline (HOG features -> probability), with its card inside."""
        return self.stage("baseline") / "baseline.onnx"

    @property
    def cnn_best(self) -> Path:
        return self.stage("cnn") / "best.keras"

    @property
    def cnn(self) -> Path:
        return self.stage("cnn")

    @property
    def baseline(self) -> Path:
        return self.stage("baseline")

    # ------------------------------------------------------------ export
    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def export_summary(self) -> Path:
        return self.export / "export.json"

    def exported(self, stem: str) -> Path:
        """``RUN/export/<stem>.onnx`` for stem in cnn, cnn.int8, baseline."""
        return self.export / f"{stem}.onnx"

    def golden(self, stem: str) -> Path:
        """``RUN/export/golden/<stem>``: the golden set of an exported model."""
        return self.export / "golden" / stem

    # ------------------------------------------------------------ report, explain
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_json(self) -> Path:
        return self.report / "report.json"

    @property
    def report_md(self) -> Path:
        return self.report / "report.md"

    @property
    def explain(self) -> Path:
        return self.root / "explain"

    @property
    def data(self) -> Path:
        """Where ``murakit demo`` writes its synthetic data (unless told otherwise)."""
        return self.root / "data"

    # ------------------------------------------------------------ locks
    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    def lock_file(self, stage: str) -> Path:
        """``RUN/.locks/<stage>.lock`` (see :mod:`murakit.lock`)."""
        return self.locks / f"{stage}.lock"


def ensure_dir(path, what: str = "folder", shown=None) -> Path:
    """Create ``path`` (and parents) if needed and check it is a writable folder.

    Parameters
    ----------
    path : str or Path
    what : str
        How the message names it ("run folder", "--out folder").
    shown : str or Path, optional
        The path the message shows (default ``path``), e.g. the run folder for ``RUN/.locks``.

    Raises
    ------
    MurakitError
        One line: a file is in the way, the folder cannot be created, or it is not writable.
    """
    path = Path(path)
    shown = Path(shown) if shown is not None else path
    for p in [path, *path.parents]:
        if p.exists() and not p.is_dir():
            raise MurakitError(f"{what} {shown}: {p} is a file, not a folder")
        if p.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MurakitError(f"{what} {shown}: cannot create it ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MurakitError(f"{what} {shown}: not writable")
    return path


def is_fresh(output, inputs) -> bool:
    """True when ``output`` exists and is at least as new as every existing input file.

    Parameters
    ----------
    output : path of the artifact a stage writes last (its "done" marker)
    inputs : iterable of paths the stage read; missing ones are ignored
    """
    output = Path(output)
    if not output.exists():
        return False
    t = output.stat().st_mtime
    return all(Path(p).stat().st_mtime <= t for p in inputs if Path(p).exists())
