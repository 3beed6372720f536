"""``murakit synth OUT``: write the embedded default, a synthetic MURA-v1.1-shaped data set."""
from __future__ import annotations

import time

# ~270,000 images and hours of CPU; real MURA-v1.1 has 14,863 studies
MAX_STUDIES = 100_000


def add_arguments(parser) -> None:
    parser.add_argument("out", metavar="OUT",
                        help="folder that will contain MURA-v1.1/ (created if missing)")
    parser.add_argument("--studies", type=int, default=None, metavar="N",
                        help=f"number of studies, 1 to {MAX_STUDIES:,} (default: 1500, about 4100 images)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="processes (default: up to 2); the output does not depend on it")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing OUT/MURA-v1.1 made with other parameters")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_args(args) -> int:
    """The flags' constraints (one MurakitError line); returns the number of studies."""
    from murakit import synth
    from murakit.checks import check_int, check_seed, check_workers
    from murakit.layout import ensure_dir

    n = check_int("--studies", synth.DEFAULT_STUDIES if args.studies is None else args.studies, 1, MAX_STUDIES)
    check_seed(args.seed)
    if args.workers is not None:
        check_workers(args.workers)
    ensure_dir(args.out, "OUT folder")
    return n


def run(args) -> int:
    from murakit import synth

    n = check_args(args)
    if not args.force and synth.existing_matches(args.out, n, args.seed):
        print(f"{args.out}/MURA-v1.1 is already the synthetic set for --studies {n} "
              f"--seed {args.seed}; nothing to do")
        return 0
    t0 = time.perf_counter()
    root = synth.generate(args.out, n_studies=n, seed=args.seed, workers=args.workers,
                          progress=not args.no_progress, force=args.force)
    n_img = (root / "synth_annotations.csv").read_text().count("\n") - 1
    dt = time.perf_counter() - t0
    print(f"wrote {n} studies, {n_img} images to {root} in {dt:.1f} s "
          f"({n_img / max(dt, 1e-9):.0f} images/s)")
    return 0
