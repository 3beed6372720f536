"""``murakit synth OUT``: write the embedded default, a synthetic MURA-v1.1-shaped data set.

``--preset`` picks a starting point and every generator setting can be overridden by its own
flag (``murakit.data.synth.SynthSettings`` documents them); without flags the output is the
embedded default.
"""
from __future__ import annotations

import dataclasses
import time

# flag help per SynthSettings field (defaults are appended from the dataclass)
SETTING_HELP = {
    "studies": "number of studies (1500 gives about 4100 images)",
    "valid_fraction": "share of studies held out as MURA valid (the test split)",
    "abnormal_scale": "multiplies MURA's per-part abnormal rates (<1: class imbalance)",
    "finding_mix": "shares of fracture,hardware,lytic,periosteal findings (4 numbers summing to 1)",
    "show_prob": "chance that one view of an abnormal study shows its finding",
    "finding_size": "multiplies the size of findings (0.3-2)",
    "finding_contrast": "multiplies how strongly findings change the pixels (0.2-2)",
    "confounders": "multiplies the rates of normal look-alikes (growth plates, rings, casts)",
    "noise": "multiplies the detector noise level",
    "bad_exposure": "share of washed-out, dark or saturated images",
    "invert_prob": "share of images stored inverted (bones dark)",
    "rgb_prob": "share of 3-channel 8-bit PNGs",
    "u16_prob": "share of 16-bit PNGs",
    "min_side": "smallest long side of an image in pixels",
    "max_side": "largest long side of an image in pixels",
    "max_side_prob": "share of images whose long side is exactly --max-side",
    "marker_prob": "share of images with a burned-in L/R marker",
    "appledouble_prob": "share of images with a macOS ._ file beside them",
}


def _mix(text: str) -> tuple:
    import argparse

    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 4 comma-separated numbers, got {text!r}") from None


# ~270,000 images and hours of CPU; real MURA-v1.1 has 14,863 studies
MAX_STUDIES = 100_000


def add_arguments(parser) -> None:
    from murakit.data.synth.settings import DEFAULT, PRESETS

    parser.add_argument("out", metavar="OUT",
                        help="folder that will contain MURA-v1.1/ (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="starting settings: default (the embedded default), subtle (smaller, "
                             "fainter findings shown in fewer views), noisy (more noise, bad exposures "
                             "and inverted images), site (larger images up to 1024 px, fewer metal "
                             "findings, fewer abnormal studies), small (400 studies); flags below "
                             "override it (default: default)")
    parser.add_argument("--workers", type=int, default=None, metavar="W",
                        help="processes (default: up to 2); the output does not depend on it")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing OUT/MURA-v1.1 made with other parameters")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--format", choices=("png", "dicom"), default="png",
                        help="image files: PNG as MURA ships, or DICOM (MONOCHROME1/2, 10-16 bit, "
                             "windows, compressed syntaxes; needs the dicom extra; default generator "
                             "settings only) (default: %(default)s)")
    group = parser.add_argument_group("generator settings (each overrides the preset)")
    for f in dataclasses.fields(DEFAULT):
        default = getattr(DEFAULT, f.name)
        kind = _mix if f.name == "finding_mix" else type(default)
        shown = ",".join(f"{v:g}" for v in default) if f.name == "finding_mix" else default
        group.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                           metavar="N" if kind is int else "X",
                           help=f"{SETTING_HELP[f.name]} (default: {shown})")


def settings_from_args(args):
    """The preset with every given setting flag applied (raises MurakitError when invalid)."""
    from murakit.data.synth.settings import DEFAULT, PRESETS

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DEFAULT)
             if getattr(args, f.name, None) is not None}
    return dataclasses.replace(PRESETS[args.preset], **given)


def check_args(args, settings) -> None:
    """The flags' constraints beyond the settings' own (one MurakitError line)."""
    from murakit.checks import check_int, check_seed, check_workers
    from murakit.layout import ensure_dir

    check_int("--studies", settings.studies, 1, MAX_STUDIES)
    check_seed(args.seed)
    if args.workers is not None:
        check_workers(args.workers)
    ensure_dir(args.out, "OUT folder")


def run(args) -> int:
    from murakit.data import synth
    from murakit.errors import MurakitError

    settings = settings_from_args(args)
    check_args(args, settings)
    if args.format == "dicom":
        from murakit.data import dicom_synth

        if {k for k in settings.changed() if k != "studies"}:
            raise MurakitError("--format dicom writes the default generator settings only "
                               "(--studies and --seed); drop --preset and the setting flags")
        return dicom_synth.run(args)
    if not args.force and synth.existing_matches(args.out, seed=args.seed, settings=settings):
        print(f"{args.out}/MURA-v1.1 is already the synthetic set for "
              f"{synth.describe(settings, args.seed)}; nothing to do")
        return 0
    t0 = time.perf_counter()
    root = synth.generate(args.out, seed=args.seed, workers=args.workers, settings=settings,
                          progress=not args.no_progress, force=args.force)
    n_img = (root / "synth_annotations.csv").read_text().count("\n") - 1
    dt = time.perf_counter() - t0
    print(f"wrote {settings.studies} studies, {n_img} images to {root} in {dt:.1f} s "
          f"({n_img / max(dt, 1e-9):.0f} images/s)")
    return 0
