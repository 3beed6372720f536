"""Images that are not upper-extremity radiographs: what the input gate is fitted and tested on.

The gate (``edge.gate``) must refuse what a device may be handed by mistake. murakit has no
download at run time, so its non-radiographs come from what is installed: scikit-image's sample
images (photographs, documents, microscopy, a retina), pydicom's test files (CT, MR, NM, US,
secondary captures), and frames drawn here (blank, noise, gradients, text pages, films of other
body regions: chest, skull, pelvis, abdomen).

Three disjoint sets come out of :func:`ood_images`: ``"fit"`` (the gate's outlier exposure at
export; it also holds drawn CT, MR, ultrasound and nuclear-medicine frames), ``"val"`` (to choose
among gate variants: matplotlib's sample photographs and MR slice, other scikit-image faces, a
pydicom file in neither other set, drawn frames of every kind) and ``"test"`` (never used for
fitting or choosing: report.json's ``gate`` and tests/test_gate.py score it). They share no source
image: every sample image or DICOM file is assigned to one split (pydicom files that hold another
split's pixels at another compression are in none), and drawn frames use disjoint seeds.
Variants (crops, flips, rotations, gamma) multiply each source so every category has enough
images; the sets are deterministic.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

CATEGORIES = ("photo", "document", "modality", "medical", "blank_noise", "near_miss")
SPLITS = ("fit", "val", "test")

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
# (JPEG2000.dcm, an NM frame, is not in "fit": it is JPGExtended.dcm's image at another
# compression, and J2K_pixelrep_mismatch.dcm is 693_J2KI.dcm's CT slice: neither is used anywhere)
_PYDICOM = {
    "fit": ["CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "liver_1frame.dcm"],  # CT, MR, US, SEG
    "val": ["ExplVR_BigEnd.dcm"],  # US
    "test": ["693_J2KI.dcm", "examples_overlay.dcm", "JPGExtended.dcm", "examples_palette.dcm",
             "examples_ybr_color.dcm", "image_dfl.dcm", "examples_jpeg2k.dcm"],  # CT, MR, NM, US x3, OT
}
_SEED = {"fit": 1000, "test": 2000, "val": 3000}
_PER_SOURCE = {"photo": 4, "document": 14, "modality": 6, "medical": 9}
_DRAWN = {"blank_noise": 30, "near_miss": 32, "modality": 120}  # modality: "fit" only


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


# ---------------------------------------------------------------- drawn frames of other modalities
def _smooth_field(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """A smooth random field in [0, 1] (white noise blurred at ``scale`` pixels)."""
    import cv2

    f = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), max(scale, 0.5))
    return (f - f.min()) / max(float(np.ptp(f)), 1e-6)


def _annotate(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Corner text like a viewer's screen capture (patient, series, window), in place."""
    import cv2

    h, w = img.shape[:2]
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:/. "
    colour = 255 if img.ndim == 2 else (255, 255, int(rng.integers(0, 256)))
    for corner in range(int(rng.integers(0, 5))):
        for line in range(int(rng.integers(1, 4))):
            text = "".join(rng.choice(list(letters), int(rng.integers(4, 14))))
            y = 14 + 14 * line if corner < 2 else h - 8 - 14 * line
            x = 6 if corner % 2 == 0 else max(6, w - 8 * len(text))
            cv2.putText(img, text, (x, y), 0, float(rng.uniform(0.3, 0.45)), colour, 1, cv2.LINE_AA)
    return img


def _ct_slice(rng: np.random.Generator) -> np.ndarray:
    """An axial CT slice in a soft-tissue, lung or bone window: a round body (head, chest or
    abdomen) on black air, a table below, organs, spine and ribs or a skull ring."""
    import cv2

    s = int(rng.integers(256, 513))
    hu = np.full((s, s), -1000.0, np.float32)
    c = s // 2
    kind = rng.choice(["head", "chest", "abdomen"])
    ax = int(s * rng.uniform(0.28, 0.45))
    ay = int(ax * (rng.uniform(0.85, 1.05) if kind == "head" else rng.uniform(0.6, 0.8)))
    cv2.ellipse(hu, (c, c), (ax, ay), 0, 0, 360, -100, -1)  # subcutaneous fat
    cv2.ellipse(hu, (c, c), (int(ax * 0.9), int(ay * 0.88)), 0, 0, 360, 40, -1)  # muscle / soft tissue
    if kind == "head":
        cv2.ellipse(hu, (c, c), (int(ax * 0.92), int(ay * 0.92)), 0, 0, 360, 1200, max(2, s // 60))
        cv2.ellipse(hu, (c, c), (int(ax * 0.86), int(ay * 0.86)), 0, 0, 360, 35, -1)
        for side in (-1, 1):
            cv2.ellipse(hu, (c + side * ax // 6, c), (ax // 12, ay // 4), side * 15, 0, 360, 5, -1)  # ventricles
    else:
        if kind == "chest":
            for side in (-1, 1):
                cv2.ellipse(hu, (c + side * int(ax * 0.42), c - ay // 10), (int(ax * 0.35), int(ay * 0.6)),
                            0, 0, 360, -850, -1)  # lungs
            cv2.ellipse(hu, (c + ax // 10, c), (ax // 4, ay // 3), 30, 0, 360, 45, -1)  # heart
        for _ in range(int(rng.integers(3, 8))):  # organs and vessels
            cv2.ellipse(hu, (c + int(rng.integers(-ax // 2, ax // 2)), c + int(rng.integers(-ay // 2, ay // 3))),
                        (int(rng.integers(s // 40, ax // 3)), int(rng.integers(s // 40, ay // 3))),
                        float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(20, 200)), -1)
        vy = c + int(ay * 0.6)  # vertebra and ribs
        cv2.circle(hu, (c, vy), max(3, ax // 9), 700, -1)
        cv2.ellipse(hu, (c, vy + ax // 8), (ax // 8, ax // 10), 0, 180, 360, 900, max(2, s // 90))
        for k in range(int(rng.integers(4, 10))):
            a = rng.uniform(0, 2 * np.pi)
            cv2.circle(hu, (int(c + 0.93 * ax * np.cos(a)), int(c + 0.9 * ay * np.sin(a))), max(2, s // 80), 900, -1)
    table = c + ay + int(s * rng.uniform(0.03, 0.08))
    if table < s - 4:
        cv2.ellipse(hu, (c, table - s), (int(s * 0.45), s), 0, 60, 120, 300, max(2, s // 80))
    hu += rng.normal(0, rng.uniform(5, 25), hu.shape).astype(np.float32)
    hu = cv2.GaussianBlur(hu, (0, 0), float(rng.uniform(0.5, 1.5)))
    centre, width = [(40, 400), (-600, 1500), (400, 1800), (50, 120)][int(rng.integers(0, 4))]
    img = np.clip((hu - centre + width / 2) / width * 255, 0, 255).astype(np.uint8)
    return _annotate(img, rng)


def _mr_slice(rng: np.random.Generator) -> np.ndarray:
    """An MR slice: a head with folded cortex (T1: dark fluid, T2: bright fluid) or a body /
    joint section of textured tissue, dark cortical bone, bright fat, a bias field and Rician
    background noise."""
    import cv2

    h = int(rng.integers(192, 513))
    w = int(h * rng.uniform(0.75, 1.3))
    c = (w // 2, h // 2)
    t2 = rng.random() < 0.5
    img = np.zeros((h, w), np.float32)
    ax, ay = int(w * rng.uniform(0.25, 0.42)), int(h * rng.uniform(0.3, 0.45))
    if rng.random() < 0.6:  # head
        cv2.ellipse(img, c, (ax, ay), 0, 0, 360, 0.8, -1)  # scalp fat
        cv2.ellipse(img, c, (int(ax * 0.93), int(ay * 0.93)), 0, 0, 360, 0.05, -1)  # skull (dark)
        brain = np.zeros_like(img)
        cv2.ellipse(brain, c, (int(ax * 0.86), int(ay * 0.86)), 0, 0, 360, 1.0, -1)
        folds = _smooth_field(rng, h, w, rng.uniform(2, 5)) > rng.uniform(0.45, 0.55)
        grey, white, csf = (0.55, 0.4, 0.95) if t2 else (0.5, 0.7, 0.1)
        tissue = np.where(folds, grey, white).astype(np.float32)
        cv2.ellipse(tissue, (c[0] - ax // 8, c[1]), (ax // 12, ay // 4), 10, 0, 360, csf, -1)
        cv2.ellipse(tissue, (c[0] + ax // 8, c[1]), (ax // 12, ay // 4), -10, 0, 360, csf, -1)
        img = np.where(brain > 0, tissue, img)
    else:  # body or joint
        cv2.ellipse(img, c, (ax, ay), float(rng.uniform(-20, 20)), 0, 360, 0.75, -1)
        tex = _smooth_field(rng, h, w, rng.uniform(3, 10))
        mask = img > 0
        img[mask] = (0.3 + 0.5 * tex[mask]).astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):  # bones: dark cortex, bright marrow
            bc = (c[0] + int(rng.integers(-ax // 2, ax // 2 + 1)), c[1] + int(rng.integers(-ay // 2, ay // 2 + 1)))
            axes = (int(rng.integers(w // 30, ax // 3 + w // 30)), int(rng.integers(h // 30, ay // 2 + h // 30)))
            cv2.ellipse(img, bc, axes, float(rng.uniform(0, 180)), 0, 360, 0.02, -1)
            cv2.ellipse(img, bc, (max(1, axes[0] * 8 // 10), max(1, axes[1] * 8 // 10)),
                        float(rng.uniform(0, 180)), 0, 360, 0.85 if not t2 else 0.6, -1)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.7, 1.8)))
    yy, xx = np.mgrid[0:h, 0:w]
    img *= (1 + 0.3 * np.cos(xx / w * rng.uniform(1, 4) + rng.uniform(0, 6))
            * np.sin(yy / h * rng.uniform(1, 4))).astype(np.float32)  # coil bias field
    sigma = rng.uniform(0.01, 0.06)
    img = np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape))  # Rician
    return _annotate(_to_u8(img), rng)


def _us_frame(rng: np.random.Generator) -> np.ndarray:
    """An ultrasound frame: a sector (or linear) field of speckle with dark cysts and bright
    interfaces on black, a depth scale, text, sometimes a colour Doppler box."""
    import cv2

    h = int(rng.integers(240, 600))
    w = int(h * rng.uniform(1.0, 1.6))
    tissue = _smooth_field(rng, h, w, rng.uniform(6, 20)) * 0.6 + 0.3
    for _ in range(int(rng.integers(0, 4))):  # anechoic cysts / vessels
        cv2.ellipse(tissue, (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, h))),
                    (int(rng.integers(8, w // 8)), int(rng.integers(6, h // 10))), float(rng.uniform(0, 180)),
                    0, 360, 0.03, -1)
    for _ in range(int(rng.integers(1, 5))):  # bright interfaces
        y0 = int(rng.integers(h // 5, h))
        cv2.line(tissue, (0, y0), (w, y0 + int(rng.integers(-h // 5, h // 5))), 1.0, int(rng.integers(2, 6)))
    speckle = rng.rayleigh(1.0, (h, w)).astype(np.float32)
    speckle = cv2.GaussianBlur(speckle, (0, 0), sigmaX=float(rng.uniform(1.5, 3)), sigmaY=float(rng.uniform(0.5, 1)))
    img = tissue * speckle
    img *= np.linspace(1.0, rng.uniform(0.3, 0.8), h, dtype=np.float32)[:, None]  # depth attenuation
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.7:  # sector probe: apex above the top edge
        apex = (w // 2, -int(h * rng.uniform(0.0, 0.15)))
        half = float(rng.uniform(30, 45))
        cv2.ellipse(mask, apex, (int(h * 0.95), int(h * 0.95)), 90, -half, half, 1, -1)
        cv2.ellipse(mask, apex, (int(h * 0.08), int(h * 0.08)), 90, -half, half, 0, -1)
    else:  # linear probe
        cv2.rectangle(mask, (w // 6, h // 12), (5 * w // 6, 11 * h // 12), 1, -1)
    grey = np.clip(img / np.percentile(img, 99) * 230, 0, 255).astype(np.uint8) * mask
    for k in range(10):  # depth ticks
        cv2.line(grey, (w - 20, int(h * (0.1 + 0.08 * k))), (w - 12, int(h * (0.1 + 0.08 * k))), 200, 1)
    out = _annotate(grey, rng)
    if rng.random() < 0.4:  # colour Doppler box
        rgb = np.repeat(out[..., None], 3, axis=2)
        x0, y0 = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
        flow = _smooth_field(rng, h // 6, w // 6, 3) > 0.6
        box = rgb[y0:y0 + h // 6, x0:x0 + w // 6]
        box[flow[:box.shape[0], :box.shape[1]]] = (200, 30, 30) if rng.random() < 0.5 else (30, 60, 220)
        cv2.rectangle(rgb, (x0, y0), (x0 + w // 6, y0 + h // 6), (200, 200, 80), 1)
        return rgb
    return out


def _nm_frame(rng: np.random.Generator) -> np.ndarray:
    """A nuclear-medicine frame: a coarse, count-limited (Poisson) whole-body or organ view with
    hot spots, often dark-on-white and upsampled from a small matrix, sometimes in a colour map."""
    import cv2

    whole_body = rng.random() < 0.6
    mh, mw = (int(rng.integers(192, 512)), int(rng.integers(64, 128))) if whole_body else \
        (int(rng.integers(64, 128)),) * 2
    act = np.zeros((mh, mw), np.float32)
    if whole_body:
        cx = mw // 2
        cv2.circle(act, (cx, mh // 10), mw // 8, 1.0, -1)  # head
        cv2.ellipse(act, (cx, int(mh * 0.38)), (mw // 4, int(mh * 0.2)), 0, 0, 360, 0.8, -1)  # trunk
        for side in (-1, 1):
            cv2.line(act, (cx + side * mw // 5, int(mh * 0.22)), (cx + side * mw // 3, int(mh * 0.5)), 0.6, mw // 16)
            cv2.line(act, (cx + side * mw // 12, int(mh * 0.56)), (cx + side * mw // 9, int(mh * 0.97)), 0.6, mw // 12)
    else:
        cv2.ellipse(act, (mw // 2, mh // 2), (mw // 3, mh // 3), float(rng.uniform(0, 180)), 0, 360, 0.5, -1)
    for _ in range(int(rng.integers(2, 9))):  # hot spots: bladder, kidneys, lesions, myocardium
        cv2.circle(act, (int(rng.integers(0, mw)), int(rng.integers(0, mh))), int(rng.integers(2, max(3, mw // 8))),
                   float(rng.uniform(2, 8)), -1)
    act = cv2.GaussianBlur(act, (0, 0), float(rng.uniform(1, 3)))
    counts = rng.poisson(act * rng.uniform(5, 60)).astype(np.float32)
    scale = int(rng.integers(2, 5))
    img = cv2.resize(counts, (mw * scale, mh * scale), interpolation=cv2.INTER_NEAREST if rng.random() < 0.5
                     else cv2.INTER_LINEAR)
    u8 = _to_u8(img)
    if rng.random() < 0.5:
        u8 = 255 - u8  # dark activity on white, the usual bone-scan display
    if rng.random() < 0.3:
        u8 = cv2.cvtColor(cv2.applyColorMap(u8, int(rng.choice([cv2.COLORMAP_HOT, cv2.COLORMAP_JET,
                                                                 cv2.COLORMAP_INFERNO]))), cv2.COLOR_BGR2RGB)
    return _annotate(u8, rng)


_MODALITY_DRAWERS = {"ct": _ct_slice, "mr": _mr_slice, "us": _us_frame, "nm": _nm_frame}


def _montage(rng: np.random.Generator, draw) -> np.ndarray:
    """2 x 2 or 3 x 3 frames tiled on black, as a viewer exports a series."""
    import cv2

    n = int(rng.choice([2, 3]))
    tile = 160
    tiles = []
    for _ in range(n * n):
        t = draw(rng)
        t = t if t.ndim == 2 else cv2.cvtColor(t, cv2.COLOR_RGB2GRAY)
        tiles.append(cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA))
    return np.vstack([np.hstack(tiles[r * n:(r + 1) * n]) for r in range(n)])


def _drawn_modalities(split: str, n: int) -> list:
    """``n`` CT, MR, ultrasound and nuclear-medicine frames drawn here (every tenth a montage)."""
    out = []
    for k in range(n):
        kind = list(_MODALITY_DRAWERS)[k % 4]
        rng = _rng(split, f"{kind}{k}")
        img = _montage(rng, _MODALITY_DRAWERS[kind]) if k % 10 == 9 else _MODALITY_DRAWERS[kind](rng)
        out.append(OodImage("modality", f"drawn/{kind}{k}", img))
    return out


# ---------------------------------------------------------------- the validation set
_MATPLOTLIB_PHOTOS = ["grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"]


def _matplotlib_sample(name: str):
    """pixels of one of matplotlib's sample images (None when matplotlib or the file is absent)."""
    import gzip
    import os

    try:
        import matplotlib
        from PIL import Image
    except ImportError:
        return None
    path = os.path.join(matplotlib.get_data_path(), "sample_data", name)
    if not os.path.isfile(path):
        return None
    if name == "s1045.ima.gz":  # an MR slice: 256 x 256 uint16, as matplotlib's own examples read it
        with gzip.open(path) as f:
            return _to_u8(np.frombuffer(f.read(), np.uint16).reshape(256, 256))
    with Image.open(path) as im:
        return _to_u8(np.asarray(im.convert("RGB")))


def _val_set() -> list:
    """The "val" split: sources in neither "fit" nor "test" (matplotlib's sample photographs and
    MR slice, scikit-image's LFW rows 40-59, pydicom's big-endian US file) and drawn frames with
    seeds of their own. Used to choose among gate variants; it has no "medical" category."""
    import os

    out = []
    for fname in _MATPLOTLIB_PHOTOS:
        img = _matplotlib_sample(fname)
        if img is not None:
            out += [OodImage("photo", f"matplotlib/{fname}#{k}", v)
                    for k, v in enumerate(variants(img, 6, _rng("val", fname)))]
    import skimage.data

    path = os.path.join(os.path.dirname(skimage.data.__file__), "lfw_subset.npy")
    if os.path.isfile(path):
        out += [OodImage("photo", f"skimage/lfw_subset.npy:row{40 + k}", _to_u8(f))
                for k, f in enumerate(np.load(path)[40:60])]
    out += [OodImage("document", f"drawn/page{k}", _text_page(_rng("val", f"page{k}"))) for k in range(20)]
    mr = _matplotlib_sample("s1045.ima.gz")
    if mr is not None:
        out += [OodImage("modality", f"matplotlib/s1045.ima.gz#{k}", v)
                for k, v in enumerate(variants(mr, 8, _rng("val", "s1045")))]
    out += _dicom_frames("val")
    return out + _drawn_modalities("val", 60) + _blank_noise("val") + _near_misses("val")


def ood_images(split: str = "test") -> list:
    """The non-radiograph set of one split.

    Parameters
    ----------
    split : {"fit", "val", "test"}
        Disjoint sources (see the module docstring).

    Returns
    -------
    list of OodImage
        Deterministic: the same list on every call and machine (given the same scikit-image and
        pydicom sample files). The test split holds >= 150 images over :data:`CATEGORIES`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "val":
        return _val_set()
    out = []
    for category in ("photo", "document", "medical"):
        out += _skimage(category, split)
    out += _dicom_frames(split)
    if split == "fit":  # the test set's modality images are all real files: none drawn there
        out += _drawn_modalities("fit", _DRAWN["modality"])
    return out + _blank_noise(split) + _near_misses(split)
