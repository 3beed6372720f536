"""``murakit explain IMAGE... --run RUN [--out DIR]``: CAM / Grad-CAM overlays for image files."""

from __future__ import annotations

from murakit.cli import add_run_argument


def add_arguments(parser) -> None:
    """Add the ``explain`` options to ``parser``."""
    parser.add_argument("images", nargs="+", help="image files (PNG/JPEG)")
    add_run_argument(parser)
    parser.add_argument("--out", default=None, help="output folder (default: RUN/explain)")
    parser.add_argument("--gradcam", action="store_true",
                        help="Grad-CAM of the last feature maps instead of the CAM head")


def run(args) -> int:
    """Explain each image; returns 0, or 1 when some images could not be read (errors on stderr)."""
    from murakit.pipeline.explain import explain_images

    _, failed = explain_images(args.images, args.run, out=args.out, gradcam=args.gradcam)
    return 1 if failed else 0
