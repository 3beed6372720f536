"""``murakit prepare DATA --run RUN``: preprocess every image once into ``RUN/prepared``."""

from __future__ import annotations

from edge.cpu import usable_cores
from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    """Add the ``prepare`` options to ``parser``."""
    from edge.dicom import VOI_POLICIES
    from edge.preprocess import INVERT_POLICIES, PreprocessConfig

    default = PreprocessConfig()
    parser.add_argument("data", help="folder containing MURA-v1.1/ (or MURA-v1.1/ itself, "
                                     "or a class-folder tree normal/ + abnormal/)")
    add_run_argument(parser)
    parser.add_argument("--size", type=int, default=default.size,
                        help="output side S of the S x S images (default: %(default)s)")
    parser.add_argument("--clahe", action="store_true", help="apply CLAHE after normalisation")
    parser.add_argument("--invert", choices=INVERT_POLICIES, default=default.invert,
                        help="inversion correction policy (default: %(default)s)")
    parser.add_argument("--labels", metavar="CSV",
                        help="DATA is a DICOM tree in any layout; CSV maps a StudyInstanceUID or a "
                             "folder under DATA to a label (0/1): 'study,label' rows")
    parser.add_argument("--dicom-voi", choices=VOI_POLICIES, default=default.dicom_voi,
                        help="DICOM VOI: 'window' applies the file's window / VOI LUT, 'full' its whole "
                             "range (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the patient split (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="fraction of MURA-train patients held out as val (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="class-folder trees only (they have no MURA valid split): fraction "
                             "of images held out as test (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="worker processes (default: all cores, %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    """Index the data, build or resume the cache, print a summary. Returns 0."""
    from edge.preprocess import PreprocessConfig
    from murakit.data.prepared import prepare

    cfg = PreprocessConfig(size=args.size, clahe=args.clahe, invert=args.invert, dicom_voi=args.dicom_voi)
    res = prepare(args.data, args.run, cfg, seed=args.seed, val_fraction=args.val_fraction,
                  test_fraction=args.test_fraction, workers=args.workers, progress=not args.no_progress,
                  labels=args.labels)
    f, cache = res.figures, res.paths[0]
    if not res.up_to_date:
        print(f"{cache}: {f['n_images']} images cached at {cfg.size}x{cfg.size} "
              f"({f['n_processed']} processed in {res.seconds:.1f} s, "
              f"{f['images_per_second']:.0f} images/s, {args.workers} worker{'s' if args.workers > 1 else ''})")
    if f["n_failed"]:
        print(f"  {f['n_failed']} unreadable images skipped: see {cache / 'failed.csv'}")
    return 0
