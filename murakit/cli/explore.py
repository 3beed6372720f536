"""``murakit explore DATA --run RUN``: audit a data set; plots and a summary in ``RUN/explore``."""

from __future__ import annotations

from edge.cpu import usable_cores
from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    """Add the ``explore`` options to ``parser``."""
    parser.add_argument("data", help="folder containing MURA-v1.1/ (or MURA-v1.1/ itself, "
                                     "or a class-folder tree normal/ + abnormal/)")
    add_run_argument(parser)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split and of the samples (default: %(default)s; "
                             "the prepared cache's seed wins when the cache is used)")
    parser.add_argument("--max-samples", type=int, default=2000,
                        help="raw images decoded for pixel statistics when there is no prepared "
                             "cache (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=usable_cores(),
                        help="worker processes for decoding (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="redo the audit even if it is up to date")


def run(args) -> int:
    """Run the audit and print where its outputs are. Returns 0."""

    from murakit.evaluation.explore import explore

    res = explore(args.data, args.run, seed=args.seed, max_samples=args.max_samples, workers=args.workers,
                  force=args.force)
    if res.up_to_date:
        print(f"explore: {res.paths[1]} is up to date; nothing to do (--force redoes it)")
        return 0
    s = res.figures
    t = s["counts"]["totals"]
    print(f"{s['data_root']}: {t['images']} images, {t['studies']} studies, {t['patients']} patients "
          f"({s['layout']} layout); pixel statistics from {s['pixel_stats']['source']}")
    for split, c in t["by_split"].items():
        print(f"  {split:5s}: {c['images']} images, {c['studies']} studies "
              f"({c['abnormal_studies']} abnormal), {c['patients']} patients")
    flags = ", ".join(f"{k} {v['count']}" for k, v in s["flagged"].items())
    print(f"  flagged: {flags}")
    inv = s["inversion_detector"]
    if inv:
        print(f"  inversion detector: {inv['accuracy_inverted']:.3f} of {inv['n_inverted']} inverted, "
              f"{inv['accuracy_normal']:.3f} of {inv['n_normal']} normal images right "
              f"(goal {inv['goal']}: {'met' if inv['meets_goal'] else 'NOT met'})")
    for k, v in s["problems"].items():
        if v["count"]:
            print(f"  data problem: {v['count']} {k.replace('_', ' ')}")
    out = res.paths[0].parent
    print(f"wrote {out / 'summary.json'}, {out / 'summary.md'} and {', '.join(s['plots'])} in {out}")
    return 0
