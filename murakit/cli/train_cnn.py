"""``murakit train cnn --run RUN``: train the CNN on the prepared cache, resumable, then evaluate."""

from __future__ import annotations

from murakit.cli import add_run_argument
from murakit.errors import MurakitError
from murakit.pipeline.train_cnn import ARCH_CHOICES, STRATEGY_CHOICES


def _recipe(t, a) -> str:
    """The default training recipe, for --help (values from deep.TrainConfig / AugmentConfig)."""
    return (f"With no flags the CNN trains until converged: each epoch ends with the validation study "
            f"AUROC, monitored as its mean over the last {t.smooth} epochs; after a warm-up of "
            f"{t.warmup_epochs} epochs, training stops after "
            f"{t.patience} epochs without a gain (early stopping) and keeps the best epoch, and the "
            f"learning rate ({t.lr:g}, Adam) drops {1 / t.lr_factor:.3g}x after {t.lr_patience} epochs "
            f"without a gain; --epochs ({t.max_epochs}) is only a cap. An epoch "
            f"is at least {t.min_steps} steps (small data sets are passed over several times). "
            f"Augmentation of training images: horizontal flips{', vertical flips' if a.vflip else ''}, "
            f"rotation up to {a.max_rotation:g} degrees, zoom {1 - a.scale:g}-{1 + a.scale:g}, shift "
            f"up to {a.shift:.0%} of the side, brightness +-{a.brightness:g}, contrast "
            f"{1 - a.contrast:g}-{1 + a.contrast:g} (docs/training.md: how these were measured). "
            f"Interrupt with Ctrl-C and rerun the same command to resume exactly.")


def add_arguments(parser) -> None:
    """Add the ``train cnn`` options to ``parser``."""
    from deep.config import AugmentConfig, TrainConfig  # no TensorFlow import

    t, a = TrainConfig(), AugmentConfig()
    parser.description = f"{parser.description or 'train the CNN'}. {_recipe(t, a)}"
    add_run_argument(parser)
    parser.add_argument("--epochs", "--max-epochs", dest="epochs", type=int, default=None, metavar="N",
                        help=f"cap on epochs; early stopping normally ends training first "
                             f"(default: {t.max_epochs})")
    parser.add_argument("--patience", type=int, default=None, metavar="N",
                        help=f"early stopping: epochs without a val study AUROC gain (default: {t.patience})")
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="small",
                        help="architecture (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None,
                        help="input side; must equal the prepared cache's size (default: the cache's)")
    parser.add_argument("--weights", default=None,
                        help="local initial weights file (backbones: include_top=False weights)")
    parser.add_argument("--width", type=int, default=None,
                        help="stem channels of the small arch (default: deep.ModelConfig's, 16)")
    parser.add_argument("--max-rotation", type=float, default=None,
                        help=f"largest augmentation rotation in degrees (default: {a.max_rotation:g})")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument("--part-weight", type=float, default=None, metavar="L",
                        help=f"weight of the body-part head's cross-entropy in the joint loss; 0 still builds "
                             f"the head but does not train it (default: {t.part_weight:g})")
    parser.add_argument("--min-steps", type=int, default=None, metavar="N",
                        help=f"an epoch is at least N optimiser steps (default: {t.min_steps})")
    parser.add_argument("--batch-size", type=int, default=t.batch_size,
                        help="global batch size, split evenly over the replicas; the learning rate is not "
                             "scaled (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="discard RUN/cnn and train from scratch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto",
                        help="tf.distribute strategy; auto: TF_CONFIG set -> multi-worker (task 0 writes "
                             "the run), several GPUs -> mirrored, else one process (default: %(default)s)")
    parser.add_argument("--local-workers", type=int, default=None, metavar="N",
                        help="start N multi-worker processes on this machine (TF_CONFIG on free 127.0.0.1 "
                             "ports), stream their logs, stop them all on Ctrl-C or a failure")


def worker_argv(args) -> list:
    """The ``murakit train cnn`` arguments each local worker runs (``--local-workers`` dropped)."""
    argv = ["train", "cnn", "--run", str(args.run), "--strategy", "multi-worker", "--no-progress",
            "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--arch", args.arch]
    for flag, value in (("--epochs", args.epochs), ("--patience", args.patience), ("--size", args.size),
                        ("--min-steps", args.min_steps),
                        ("--weights", args.weights), ("--width", args.width),
                        ("--max-rotation", args.max_rotation), ("--part-weight", args.part_weight)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, on in (("--no-augment", args.no_augment), ("--force", args.force),
                     ("--verbose", getattr(args, "verbose", False))):
        if on:
            argv.append(flag)
    return argv


def run(args) -> int:
    """Train (or resume) and evaluate; returns 0. User errors raise MurakitError (exit 2)."""
    from murakit.pipeline.train_cnn import CnnOptions, train_cnn

    opts = CnnOptions(epochs=args.epochs, patience=args.patience, arch=args.arch, size=args.size,
                      weights=args.weights, width=args.width, max_rotation=args.max_rotation,
                      augment=not args.no_augment, batch_size=args.batch_size, seed=args.seed,
                      strategy=args.strategy, min_steps=args.min_steps, part_weight=args.part_weight)
    opts.check()
    if args.local_workers is not None:
        from murakit.checks import check_int
        from murakit.pipeline.launch import run_local_workers

        check_int("--local-workers", args.local_workers, 1, 64)
        if args.strategy not in ("auto", "multi-worker"):
            raise MurakitError(f"--local-workers runs the multi-worker strategy, not --strategy {args.strategy}")
        return run_local_workers(args.local_workers, worker_argv(args))
    train_cnn(args.run, opts, force=args.force, progress=not args.no_progress)
    return 0
