"""Screenshot of the edge-serve page scoring a study, for the README (docs/serve_page.png).

Starts ``edge-serve`` on a free 127.0.0.1 port with the demo's model, uploads one test study
of the demo's synthetic data through the page in headless Chromium, and saves the page.

Usage::

    python benchmarks/serve_screenshot.py [--model runs/default/export/cnn.onnx] [--study DIR] [--out docs/serve_page.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _browserfix import browser_missing, upload_study
from _servefix import Server

from edge.loader import is_image_file


def first_positive_study(model: Path, min_views: int = 3) -> Path | None:
    """A positive test study with at least ``min_views`` views in the run's synthetic data."""
    data = model.resolve().parents[1] / "data"
    csv = data / "MURA-v1.1" / "valid_labeled_studies.csv"
    for line in csv.read_text().splitlines() if csv.exists() else []:
        study, label = line.rsplit(",", 1)
        folder = data / study
        if label.strip() == "1" and len([p for p in folder.iterdir() if is_image_file(p)]) >= min_views:
            return folder
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/default/export/cnn.onnx"))
    p.add_argument("--study", help="folder of views (default: a positive test study of the run)")
    p.add_argument("--out", default=str(ROOT / "docs/serve_page.png"))
    args = p.parse_args(argv)
    why = browser_missing()
    study = Path(args.study) if args.study else first_positive_study(Path(args.model))
    if why or study is None or not Path(args.model).exists():
        print(f"serve_screenshot: {why or 'no model or study: run `make demo` or pass --model/--study'}",
              file=sys.stderr)
        return 2
    views = sorted(v for v in study.iterdir() if is_image_file(v))
    with Server(args.model) as srv:
        seen = upload_study(srv.url, views, screenshot=Path(args.out))
    print(f"{study}: {seen['label']} p={seen['probability']:.3f} (threshold {seen['threshold']:.3f}), "
          f"{len(seen['views'])} views -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
