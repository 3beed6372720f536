"""``murakit evaluate DIR [--labels CSV]``: the MURA protocol's metrics of a ``murakit score`` folder."""

from __future__ import annotations


def add_arguments(p) -> None:
    p.add_argument("out", metavar="DIR", help="a folder written by murakit score --out")
    p.add_argument("--labels", metavar="CSV",
                   help="study,label rows (label 1 = abnormal), e.g. MURA's valid_labeled_studies.csv "
                        "(default: the *_labeled_studies.csv next to the scored data)")


def run(args) -> int:
    """Print the metrics and write DIR/metrics.json. Returns 0."""
    from murakit.scoring.evaluate import evaluate_folder, format_metrics

    metrics, files = evaluate_folder(args.out, args.labels)
    print(f"labels: {', '.join(map(str, files))}\n{format_metrics(metrics)}")
    print(f"wrote {args.out}/metrics.json")
    return 0
