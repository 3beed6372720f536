"""``murakit train baseline --run RUN``: HOG + linear SVM on the prepared cache."""

from __future__ import annotations

from edge.cpu import usable_cores
from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    """Add the ``train baseline`` options to ``parser``."""
    add_run_argument(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of fold shuffling and SGD (default: %(default)s)")
    parser.add_argument("--hog-cell", type=int, default=8,
                        help="HOG cell side in pixels (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="threads for features and fitting (default: all cores, %(default)s)")
    parser.add_argument("--force", action="store_true", help="retrain even if the run has a baseline")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    """Train, evaluate and export the baseline; prints a summary. Returns 0."""
    from murakit.pipeline.train_baseline import train_baseline

    train_baseline(args.run, seed=args.seed, hog_cell=args.hog_cell, workers=args.workers,
                   force=args.force, progress=not args.no_progress)
    return 0
