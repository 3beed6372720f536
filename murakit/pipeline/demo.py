"""The whole pipeline on the synthetic default, as library calls (``murakit demo``).

synth -> prepare -> explore -> train baseline -> train cnn -> export -> verify -> bench ->
the edge runtime on one test study. Every stage skips work that is already complete, so a
second demo on the same run folder redoes nothing. The demo trains with the same recipe as
``murakit train cnn`` with no flags; it only caps the epoch budget so it fits on a laptop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from murakit.layout import DEFAULT_RUN, RunLayout


@dataclass(frozen=True)
class DemoSize:
    """How big a demo is: data set size, image side, and the CNN's epoch cap."""

    studies: int | None  # None: the synthetic default (1,500 studies)
    size: int
    max_epochs: int


# The default demo trains with `murakit train cnn`'s own recipe; its cap (60 of the recipe's 100)
# only bounds the time should a run not converge: on the default data early stopping ends it
# first, so the demo's numbers are what the default flags give.
DEFAULT = DemoSize(studies=None, size=128, max_epochs=60)  # ~15 min on 2 CPU cores
QUICK = DemoSize(studies=160, size=64, max_epochs=3)      # the end-to-end test (~1-2 min)


def test_study(run, data) -> Path:
    """The first abnormal study folder of the test split (MURA valid)."""
    from murakit.data.prepared import load_prepared

    prep = load_prepared(run)
    test = prep.select("test")
    abnormal = [i for i in test if prep.label[i] == 1] or list(test)
    return (Path(data) / prep.path[min(abnormal, key=lambda i: prep.path[i])]).parent


def _predict_study(layout: RunLayout, data: Path, log) -> None:
    from edge.predictor import Predictor

    study = test_study(layout.root, data)
    result = Predictor(layout.exported("cnn")).predict_study(study)
    for v in result.views:
        log(f"  {v.path}: {v.label}  p={v.probability:.4f}")
    log(f"{study} (study, {len(result.views)} views, mean): {result.label}  p={result.probability:.4f}  "
        f"threshold={result.threshold:.4f}")


def _bench(layout: RunLayout, log) -> None:
    from murakit.evaluation.report import bench

    result = bench(layout.root, log=log)
    if result.up_to_date:
        log(f"bench: {layout.report_md} is up to date")
        return
    for name, m in result.figures.items():
        log(f"  {name:14s} study AUROC {m['study_auroc']:.3f}  kappa {m['study_kappa']:.3f}")


def _verify(layout: RunLayout, log) -> None:
    from murakit.errors import MurakitError
    from murakit.pipeline.verify import verify

    if verify(layout.root, log=log).figures["failed"]:
        raise MurakitError("verify found drift between the exported models and their golden sets")


def steps(run, data=None, quick: bool = False, seed: int = 0, log=print) -> list:
    """(title, callable) for each stage of the demo."""
    from edge.preprocess import PreprocessConfig
    from murakit.data import synth
    from murakit.data.prepared import prepare
    from murakit.evaluation.explore import explore
    from murakit.pipeline.export import export_run
    from murakit.pipeline.train_baseline import train_baseline
    from murakit.pipeline.train_cnn import CnnOptions, train_cnn

    layout = RunLayout(run)
    data = Path(data) if data else layout.data
    size = QUICK if quick else DEFAULT
    n = size.studies or synth.DEFAULT_STUDIES

    def do_synth():
        if not synth.existing_matches(data, n, seed):
            synth.generate(data, n_studies=n, seed=seed)

    def do_explore():
        explore(data, layout.root, seed=seed, log=log)

    return [
        ("synth", do_synth),
        ("prepare", lambda: prepare(data, layout.root, PreprocessConfig(size=size.size), seed=seed, log=log)),
        ("explore", do_explore),
        ("train baseline", lambda: train_baseline(layout.root, seed=seed, log=log)),
        ("train cnn", lambda: train_cnn(layout.root, CnnOptions(epochs=size.max_epochs, seed=seed), log=log)),
        ("export", lambda: export_run(layout.root, log=log)),
        ("verify", lambda: _verify(layout, log)),
        ("bench", lambda: _bench(layout, log)),
        ("edge runtime", lambda: _predict_study(layout, data, log)),
    ]


def run_demo(run=DEFAULT_RUN, data=None, quick: bool = False, seed: int = 0, log=print) -> Path:
    """Run every stage; returns the report's path. Errors propagate (MurakitError: one line)."""
    from murakit.checks import check_seed
    from murakit.layout import ensure_dir

    check_seed(seed)
    layout = RunLayout(run)
    ensure_dir(layout.root, "run folder")
    if data is not None:
        ensure_dir(data, "--data folder")
    todo = steps(layout.root, data, quick, seed, log)
    t_start = time.perf_counter()
    for k, (title, fn) in enumerate(todo, 1):
        log(f"\n=== [{k}/{len(todo)}] {title} ===")
        t0 = time.perf_counter()
        fn()
        log(f"--- {title}: {time.perf_counter() - t0:.1f} s")
    log(f"\nDemo finished in {time.perf_counter() - t_start:.0f} s.")
    return layout.report_md
