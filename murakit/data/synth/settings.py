"""``SynthSettings``: every knob of the synthetic generator in one frozen, typed dataclass.

The defaults reproduce the embedded default data set exactly (same seed -> same bytes as
before the settings existed). Presets are named starting points for data sets that differ
from the default in the ways real acquisitions differ: fainter findings, more noise, more
inverted images, other image sizes, fewer studies, another class balance.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from murakit.errors import MurakitError

FINDINGS = ("fracture", "hardware", "lytic", "periosteal")


@dataclass(frozen=True)
class SynthSettings:
    """Parameters of ``generate`` (all but the seed and the output folder).

    Parameters
    ----------
    studies : int
        Number of studies (>= 1); 1500 gives ~4100 images.
    valid_fraction : float
        Share of studies (whole patients) written to MURA ``valid`` (the test split), in
        [0, 0.9]. MURA holds out ~8%; 0.2 gives the default ~300 test studies, so the test
        AUROC has a standard error near 0.03 rather than 0.05.
    abnormal_scale : float
        Multiplies MURA's per-part abnormal study rates (0.26-0.52); < 1 makes abnormal
        studies rarer (class imbalance). The product is capped at 0.95.
    finding_mix : tuple of 4 floats
        Relative frequency of fracture, hardware, lytic lesion, periosteal reaction.
    show_prob : float
        Chance that one view of an abnormal study shows its finding (at least one always does).
    finding_size : float
        Multiplies the size of a finding (fracture gap and displacement, lesion radius,
        periosteal length and thickness, hardware length), in [0.3, 2].
    finding_contrast : float
        Multiplies how strongly a finding changes the pixels (fracture gap darkness, lesion
        depth, periosteal brightness, metal density), in [0.2, 2].
    confounders : float
        Multiplies the rates of normal look-alikes (growth plates, rings, casts) in [0, 3].
    noise : float
        Multiplies the detector noise level, in [0, 10].
    bad_exposure : float
        Share of images with a washed-out, dark or saturated exposure, in [0, 1].
    invert_prob : float
        Share of images stored inverted (bones dark on light).
    rgb_prob, u16_prob : float
        Share of 3-channel 8-bit PNGs and of 16-bit grey PNGs (the rest: 8-bit grey).
    min_side, max_side : int
        Long side of the images in pixels, drawn in [min_side, max_side) ...
    max_side_prob : float
        ... except this share, which is exactly ``max_side`` (MURA: many 512 px images).
    marker_prob : float
        Share of images with a burned-in position marker ("L", "R", ...) in both classes.
    appledouble_prob : float
        Share of images with a macOS ``._`` AppleDouble file beside them.
    """

    studies: int = 1500
    valid_fraction: float = 0.20
    abnormal_scale: float = 1.0
    finding_mix: tuple = (0.40, 0.15, 0.25, 0.20)
    show_prob: float = 0.9
    finding_size: float = 1.0
    finding_contrast: float = 1.0
    confounders: float = 1.0
    noise: float = 1.0
    bad_exposure: float = 0.4
    invert_prob: float = 0.10
    rgb_prob: float = 0.25
    u16_prob: float = 0.05
    min_side: int = 90
    max_side: int = 512
    max_side_prob: float = 0.35
    marker_prob: float = 0.65
    appledouble_prob: float = 0.20

    def __post_init__(self):
        object.__setattr__(self, "finding_mix", tuple(float(v) for v in self.finding_mix))
        if isinstance(self.studies, bool) or not isinstance(self.studies, int) or not 1 <= self.studies <= 10**6:
            raise MurakitError(f"number of studies must be a positive integer (<= 1e6), got {self.studies!r}")
        _check_int("min_side", self.min_side, 32, 1024)
        _check_int("max_side", self.max_side, 33, 1024)
        ranges = {"valid_fraction": (0, 0.9), "abnormal_scale": (0.05, 3), "show_prob": (0, 1),
                  "finding_size": (0.3, 2), "finding_contrast": (0.2, 2), "confounders": (0, 3),
                  "noise": (0, 10), "bad_exposure": (0, 1), "invert_prob": (0, 1), "rgb_prob": (0, 1),
                  "u16_prob": (0, 1), "max_side_prob": (0, 1), "marker_prob": (0, 1),
                  "appledouble_prob": (0, 1)}
        for name, (lo, hi) in ranges.items():
            _check_float(name, getattr(self, name), lo, hi)
        if self.min_side >= self.max_side:
            raise MurakitError(f"min_side ({self.min_side}) must be below max_side ({self.max_side})")
        if self.rgb_prob + self.u16_prob > 1:
            raise MurakitError("rgb_prob + u16_prob must be at most 1")
        mix = self.finding_mix
        if len(mix) != len(FINDINGS) or min(mix) < 0 or not math.isclose(sum(mix), 1.0, abs_tol=1e-9):
            raise MurakitError(f"finding_mix needs {len(FINDINGS)} non-negative shares "
                               f"({', '.join(FINDINGS)}) that sum to 1, got {mix}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["finding_mix"] = list(self.finding_mix)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SynthSettings:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MurakitError(f"unknown synth settings: {', '.join(sorted(unknown))}")
        return cls(**d)

    def changed(self) -> dict:
        """The settings that differ from the defaults (for messages)."""
        base = SynthSettings().to_dict()
        return {k: v for k, v in self.to_dict().items() if base[k] != v}


def _check_int(name, v, lo, hi) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MurakitError(f"synth setting {name} must be an integer in [{lo}, {hi}], got {v!r}")


def _check_float(name, v, lo, hi) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v <= hi):
        raise MurakitError(f"synth setting {name} must be a number in [{lo}, {hi}], got {v!r}")


DEFAULT = SynthSettings()

PRESETS = {
    "default": DEFAULT,
    # Fainter, smaller findings that fewer views show: the study label is noisier per image.
    "subtle": SynthSettings(finding_size=0.75, finding_contrast=0.6, show_prob=0.75),
    # A poorer detector: more noise, more badly exposed and inverted images, more RGB files.
    "noisy": SynthSettings(noise=2.5, bad_exposure=0.6, invert_prob=0.3, rgb_prob=0.5),
    # Another site: larger images (up to 1024 px), fewer easy metal findings, fewer abnormal studies.
    "site": SynthSettings(min_side=160, max_side=1024, max_side_prob=0.2,
                          finding_mix=(0.45, 0.05, 0.30, 0.20), abnormal_scale=0.7),
    # A small data set: a few hundred studies.
    "small": SynthSettings(studies=400),
}
