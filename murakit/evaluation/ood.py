"""Images that are not upper-extremity radiographs: what the input gate is fitted and tested on.

The gate (``edge.gate``) must refuse what a device may be handed by mistake. murakit has no
download at run time, so its non-radiographs come from what is installed: scikit-image's sample
images (photographs, documents, microscopy, a retina), pydicom's test files (CT, MR, NM, US,
secondary captures), and frames drawn here (blank, noise, gradients, text pages, films of other
body regions: chest, skull, pelvis, abdomen).

Two disjoint sets come out of :func:`ood_images`: ``"fit"`` (used to choose the gate's statistic
and checked at export) and ``"test"`` (never used for fitting: report.json's ``gate`` and
tests/test_gate.py score it). They share no source image: every sample image or DICOM file is
assigned to one split, and drawn frames use disjoint seeds. Variants (crops, flips, rotations,
gamma) multiply each source so every category has enough images; the sets are deterministic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

CATEGORIES = ("photo", "document", "modality", "medical", "blank_noise", "near_miss")
SPLITS = ("fit", "test")

# scikit-image sample files, by category and split (never the same file in both splits)
_SKIMAGE = {
    "photo": {"fit": ["astronaut.png", "coffee.png", "chelsea.png", "brick.png", "grass.png",
                      "motorcycle_left.png", "hubble_deep_field.jpg", "color.png"],
              "test": ["camera.png", "coins.png", "rocket.jpg", "horse.png", "gravel.png",
                       "motorcycle_right.png", "moon.png", "clock_motion.png", "logo.png"]},
    "document": {"fit": ["page.png"], "test": ["text.png"]},
    "medical": {"fit": ["ihc.png", "retina.jpg"],
                "test": ["microaneurysms.png", "cell.png", "phantom.png"]},
}
# pydicom test files (modality in the name's comment), by split
_PYDICOM = {
    "fit": ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "examples_rgb_color.dcm",
            "liver_1frame.dcm"],                      # CT, MR, NM, US, SEG
    "test": ["693_J2KI.dcm", "examples_overlay.dcm", "JPGExtended.dcm", "examples_palette.dcm",
             "examples_ybr_color.dcm", "image_dfl.dcm", "examples_jpeg2k.dcm"],  # CT, MR, NM, US x3, OT
}
_SEED = {"fit": 1000, "test": 2000}
_PER_SOURCE = {"photo": 4, "document": 14, "modality": 6, "medical": 9}
_DRAWN = {"blank_noise": 30, "near_miss": 32}


@dataclass(frozen=True)
class OodImage:
    """One non-radiograph: its category, a readable name and its pixels (uint8, grey or RGB)."""

    category: str
    name: str
    image: np.ndarray


def _rng(split: str, name: str) -> np.random.Generator:
    return np.random.default_rng([_SEED[split], zlib.crc32(name.encode())])


def _to_u8(a: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 by its 0.5-99.5 percentiles (grey) or by clipping (RGB uint8)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)


def variants(img: np.ndarray, n: int, rng: np.random.Generator) -> list:
    """``n`` versions of an image: the original, then random crops (50-100 % of each side),
    flips, quarter turns and gamma (0.6-1.6)."""
    out = [img]
    h, w = img.shape[:2]
    while len(out) < n:
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        v = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            v = v[:, ::-1]
        v = np.rot90(v, int(rng.integers(0, 4)))
        gamma = rng.uniform(0.6, 1.6)
        v = (255.0 * (v / 255.0) ** gamma).astype(np.uint8)
        out.append(np.ascontiguousarray(v))
    return out


def _skimage(category: str, split: str) -> list:
    import os

    import skimage.data
    from PIL import Image

    base = os.path.dirname(skimage.data.__file__)
    out = []
    for fname in _SKIMAGE[category][split]:
        try:  # Pillow, not OpenCV: libpng would print a warning about an ICC profile on stderr
            with Image.open(os.path.join(base, fname)) as im:
                img = np.asarray(im.convert("L" if im.mode in ("L", "I", "I;16", "1", "P") else "RGB"))
        except OSError:
            continue
        img = _to_u8(img)
        for k, v in enumerate(variants(img, _PER_SOURCE[category], _rng(split, fname))):
            out.append(OodImage(category, f"skimage/{fname}#{k}", v))
    if category == "photo":
        out += _faces(split)
    if category == "document":
        out += [OodImage("document", f"drawn/page{k}", _text_page(_rng(split, f"page{k}")))
                for k in range(12)]
    return out


def _faces(split: str) -> list:
    """Faces of scikit-image's LFW subset (small grey photographs): even rows fit, odd rows test."""
    import os

    import skimage.data

    path = os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy")
    if not os.path.isfile(path):
        return []
    first = 0 if split == "fit" else 1
    faces = np.load(path)[first::2][:20]
    return [OodImage("photo", f"skimage/lfw_subset.npy:row{first + 2 * k}", _to_u8(f)) for k, f in enumerate(faces)]


def _dicom_frames(split: str) -> list:
    """Frames of pydicom's test files (CT, MR, NM, US, ...), as uint8 through the modality and
    VOI LUTs; files pydicom cannot decode here are skipped."""
    import warnings

    try:
        import pydicom
        import pydicom.data
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        return []
    out = []
    for fname in _PYDICOM[split]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(pydicom.data.get_testdata_file(fname))
                arr = ds.pixel_array
                if ds.get("PhotometricInterpretation", "").startswith("MONOCHROME"):
                    arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
                elif ds.get("PhotometricInterpretation", "").startswith("YBR"):
                    from pydicom.pixels import convert_color_space
                    arr = convert_color_space(arr, ds.PhotometricInterpretation, "RGB")
        except Exception:  # noqa: BLE001, S112  a decoder missing on this machine: fewer images, not an error
            continue
        frames = arr if (arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] not in (3, 4))) else arr[None]
        frames = frames[:: max(1, len(frames) // 3)][:3]
        rng = _rng(split, fname)
        for f_i, frame in enumerate(frames):
            for k, v in enumerate(variants(_to_u8(frame), max(2, _PER_SOURCE["modality"] // len(frames)), rng)):
                out.append(OodImage("modality", f"pydicom/{fname}[{f_i}]#{k}", v))
    return out


def _text_page(rng: np.random.Generator) -> np.ndarray:
    """A page of random words (dark text on light paper, or inverted)."""
    import cv2

    h, w = int(rng.integers(300, 700)), int(rng.integers(300, 600))
    page = np.full((h, w), int(rng.integers(200, 256)), np.uint8)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    y = 30
    while y < h - 10:
        words = " ".join("".join(rng.choice(list(letters), int(rng.integers(2, 9)))) for _ in range(8))
        cv2.putText(page, words, (10, y), int(rng.choice([0, 1, 2, 3, 4])), float(rng.uniform(0.4, 0.9)),
                    int(rng.integers(0, 60)), 1, cv2.LINE_AA)
        y += int(rng.integers(18, 36))
    return 255 - page if rng.random() < 0.3 else page


def _blank_noise(split: str) -> list:
    """Constant frames, Gaussian and uniform noise, linear and radial gradients, checkerboards."""
    import cv2

    out = []
    for k in range(_DRAWN["blank_noise"]):
        rng = _rng(split, f"blank{k}")
        h, w = int(rng.integers(64, 400)), int(rng.integers(64, 400))
        kind = k % 5
        if kind == 0:
            img = np.full((h, w), int(rng.integers(0, 256)), np.uint8)
        elif kind == 1:
            img = np.clip(rng.normal(rng.uniform(40, 200), rng.uniform(10, 80), (h, w)), 0, 255).astype(np.uint8)
        elif kind == 2:
            img = rng.integers(0, 256, (h, w), dtype=np.uint8)
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 6)))
        elif kind == 3:
            yy, xx = np.mgrid[0:h, 0:w]
            a = rng.uniform(0, 2 * np.pi)
            g = np.cos(a) * xx / w + np.sin(a) * yy / h if rng.random() < 0.5 else \
                np.hypot(xx - w * rng.random(), yy - h * rng.random()) / max(h, w)
            img = _to_u8(g)
        else:
            cell = int(rng.integers(4, 40))
            yy, xx = np.mgrid[0:h, 0:w]
            img = (((yy // cell + xx // cell) % 2) * 255).astype(np.uint8)
        out.append(OodImage("blank_noise", f"drawn/frame{k}", img))
    return out


def _film(rng: np.random.Generator, region: str) -> np.ndarray:
    """A crude radiograph of another body region: bright bone on a dark background, soft tissue,
    film blur and noise (the near misses an upper-extremity model must not score)."""
    import cv2

    s = int(rng.integers(256, 512))
    img = np.full((s, s), rng.uniform(5, 30), np.float32)
    c = s // 2
    if region == "chest":
        cv2.ellipse(img, (c, c), (int(s * 0.42), int(s * 0.46)), 0, 0, 360, 110, -1)  # thorax
        for side in (-1, 1):
            cv2.ellipse(img, (c + side * s // 5, c), (s // 7, int(s * 0.33)), 0, 0, 360, 45, -1)  # lungs
            for r in range(9):  # ribs
                y = int(s * 0.2 + r * s * 0.07)
                cv2.ellipse(img, (c + side * s // 6, y), (s // 5, s // 18), 0, 180 if side < 0 else 0,
                            360 if side < 0 else 180, 170, int(rng.integers(3, 7)))
        cv2.rectangle(img, (c - s // 28, int(s * 0.05)), (c + s // 28, int(s * 0.95)), 190, -1)  # spine
    elif region == "skull":
        cv2.ellipse(img, (c, c), (int(s * 0.38), int(s * 0.44)), 0, 0, 360, 200, int(s * 0.04))
        cv2.ellipse(img, (c, c), (int(s * 0.34), int(s * 0.40)), 0, 0, 360, 90, -1)
        cv2.ellipse(img, (c, int(s * 0.78)), (s // 5, s // 10), 0, 0, 180, 185, int(s * 0.03))  # jaw
        for side in (-1, 1):
            cv2.circle(img, (c + side * s // 8, int(s * 0.48)), s // 14, 40, -1)  # orbits
    elif region == "pelvis":
        for side in (-1, 1):
            cv2.ellipse(img, (c + side * s // 5, int(s * 0.4)), (s // 6, s // 5), 0, 0, 360, 175, int(s * 0.035))
            cv2.circle(img, (c + side * s // 4, int(s * 0.72)), s // 13, 200, -1)  # femoral heads
            cv2.rectangle(img, (c + side * s // 4 - s // 18, int(s * 0.72)),
                          (c + side * s // 4 + s // 18, s), 185, -1)
        cv2.rectangle(img, (c - s // 14, int(s * 0.1)), (c + s // 14, int(s * 0.5)), 190, -1)  # sacrum
    else:  # abdomen: spine, pelvis rim, bowel gas
        cv2.rectangle(img, (c - s // 24, 0), (c + s // 24, s), 185, -1)
        for _ in range(25):
            cv2.circle(img, (int(rng.integers(s // 6, 5 * s // 6)), int(rng.integers(s // 6, 5 * s // 6))),
                       int(rng.integers(5, s // 12)), 25, -1)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(1.0, 3.0)))
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return 255 - img if rng.random() < 0.2 else img


def _near_misses(split: str) -> list:
    regions = ("chest", "skull", "pelvis", "abdomen")
    out = []
    for k in range(_DRAWN["near_miss"]):
        region = regions[k % len(regions)]
        out.append(OodImage("near_miss", f"drawn/{region}{k}", _film(_rng(split, f"{region}{k}"), region)))
    return out


def ood_images(split: str = "test") -> list:
    """The non-radiograph set of one split.

    Parameters
    ----------
    split : {"fit", "test"}
        Disjoint sources (see the module docstring).

    Returns
    -------
    list of OodImage
        Deterministic: the same list on every call and machine (given the same scikit-image and
        pydicom sample files). The test split holds >= 150 images over :data:`CATEGORIES`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    out = []
    for category in ("photo", "document", "medical"):
        out += _skimage(category, split)
    return out + _dicom_frames(split) + _blank_noise(split) + _near_misses(split)
