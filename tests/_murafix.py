"""Tiny MURA-shaped trees for the data-layer tests (a few small PNGs written with cv2)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def radiograph(h: int, w: int, seed: int, inverted: bool = False) -> np.ndarray:
    """uint8 (h, w): dark air border, brighter soft tissue, a bright 'bone' bar, noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 20, dtype=np.float32)
    img[h // 6:-h // 6, w // 5:-w // 5] = 90
    img[h // 5:-h // 5, w // 2 - w // 10:w // 2 + w // 10] = 200
    img += rng.normal(0, 6, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return 255 - img if inverted else img


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def make_mura(root: Path, parts=("ELBOW", "HAND"), patients_per_part=(6, 2), views=2,
              csv=True, crlf=False, bom=False, slash=True, seed=0, inverted_every=0,
              annotations=False) -> dict:
    """Write ``root/MURA-v1.1`` with ``train`` and ``valid`` splits.

    Patient ``p`` of a part gets study1 (label alternating by patient) with ``views`` images
    of varying size; patient numbers are unique over the whole tree. Every
    ``inverted_every``-th image (if > 0) is stored inverted. Returns
    ``{"images": {split: [relpath]}, "studies": {split: {relstudy: label}}, "inverted": {relpath: bool}}``.
    """
    mura = root / "MURA-v1.1"
    out = {"images": {"train": [], "valid": []}, "studies": {"train": {}, "valid": {}},
           "inverted": {}, "boxes": {}}
    pid, k = 0, 0
    for split, counts in (("train", patients_per_part), ("valid", (2,) * len(parts))):
        for part, n_pat in zip(parts, counts):
            for _ in range(n_pat):
                pid += 1
                label = pid % 2
                rel_study = (f"MURA-v1.1/{split}/XR_{part}/patient{pid:05d}/"
                             f"study1_{'positive' if label else 'negative'}")
                out["studies"][split][rel_study] = label
                for v in range(views):
                    k += 1
                    inv = inverted_every > 0 and k % inverted_every == 0
                    h, w = 48 + 8 * (k % 4), 40 + 6 * (k % 3)
                    rel = f"{rel_study}/image{v + 1}.png"
                    write_png(root / rel, radiograph(h, w, seed + k, inv))
                    out["images"][split].append(rel)
                    out["inverted"][rel] = inv
                    out["boxes"][rel] = (4.0, 6.0, 20.0, 30.0) if label else None
    if csv:
        nl = "\r\n" if crlf else "\n"
        enc = "utf-8-sig" if bom else "utf-8"
        for split in ("train", "valid"):
            (mura / f"{split}_image_paths.csv").write_text(
                nl.join(out["images"][split]) + nl, encoding=enc, newline="")
            lines = [f"{s}{'/' if slash else ''},{lab}" for s, lab in out["studies"][split].items()]
            (mura / f"{split}_labeled_studies.csv").write_text(nl.join(lines) + nl, encoding=enc,
                                                               newline="")
    if annotations:
        rows = ["path,inverted,finding,x0,y0,x1,y1"]
        for rel, inv in out["inverted"].items():
            box = out["boxes"][rel]
            cells = ",".join(f"{v:g}" for v in box) if box else ",,,"
            rows.append(f"{rel},{int(inv)},{'fracture' if box else ''},{cells}")
        (mura / "synth_annotations.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def make_classes(root: Path, n_normal=5, n_abnormal=4) -> None:
    """Write ``root/normal/*.png`` and ``root/abnormal/*.png``."""
    for name, n in (("normal", n_normal), ("abnormal", n_abnormal)):
        for i in range(n):
            write_png(root / name / f"img{i:03d}.png", radiograph(40, 50, i + 100 * n))
