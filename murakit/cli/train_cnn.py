"""``murakit train cnn --run RUN``: train the CNN on the prepared cache, resumable, then evaluate."""

from __future__ import annotations

from murakit.pipeline.train_cnn import ARCH_CHOICES


def add_arguments(parser) -> None:
    """Add the ``train cnn`` options to ``parser``."""
    parser.add_argument("--run", default="runs/default", help="run folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="maximum epochs; early stopping may end sooner (default: deep.TrainConfig's)")
    parser.add_argument("--arch", choices=ARCH_CHOICES, default="small",
                        help="architecture (default: %(default)s)")
    parser.add_argument("--size", type=int, default=None,
                        help="input side; must equal the prepared cache's size (default: the cache's)")
    parser.add_argument("--weights", default=None,
                        help="local initial weights file (backbones: include_top=False weights)")
    parser.add_argument("--width", type=int, default=None,
                        help="stem channels of the small arch (default: deep.ModelConfig's, 16)")
    parser.add_argument("--max-rotation", type=float, default=None,
                        help="largest augmentation rotation in degrees (default: deep.TrainConfig's)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="discard RUN/cnn and train from scratch")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args) -> int:
    """Train (or resume) and evaluate; returns 0. User errors raise MurakitError (exit 2)."""
    from murakit.pipeline.train_cnn import CnnOptions, train_cnn

    opts = CnnOptions(epochs=args.epochs, arch=args.arch, size=args.size, weights=args.weights, width=args.width,
                      max_rotation=args.max_rotation, batch_size=args.batch_size, seed=args.seed)
    train_cnn(args.run, opts, force=args.force, progress=not args.no_progress)
    return 0
