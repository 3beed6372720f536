"""MURA-v1.1's layout facts, in one place: the folder name, the splits, the body parts.

``MURA-v1.1/<split>/XR_<PART>/patient<NNNNN>/study<K>_<positive|negative>/image<N>.png``.
The edge runtime needs the parts (a DICOM BodyPartExamined or a path maps to one of them);
murakit's data index, synthetic generator and scoring read the rest from here too.
"""

from __future__ import annotations

import re

MURA_DIRNAME = "MURA-v1.1"
MURA_SPLITS = ("train", "valid")  # MURA's own split folders (murakit's test split is MURA's valid)
MURA_PARTS = ("ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST")
PART_PREFIX = "XR_"  # a part's folder: XR_ELBOW, ...

_PART_IN_PATH = re.compile(rf"{PART_PREFIX}({'|'.join(MURA_PARTS)})(?![A-Za-z])")


def part_from_path(path) -> str | None:
    """The MURA body part a path names (``.../XR_WRIST/...``, any case), None when it names none."""
    found = _PART_IN_PATH.findall(str(path).upper())
    return found[-1] if found else None


def is_part_folder(name: str) -> bool:
    """True for a body-part folder name (``XR_ELBOW``, any case)."""
    return name.upper().startswith(PART_PREFIX)


__all__ = ["MURA_DIRNAME", "MURA_PARTS", "MURA_SPLITS", "PART_PREFIX", "is_part_folder", "part_from_path"]
