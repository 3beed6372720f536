"""One home per fact: the values several packages share are defined once and imported.

A value spelled twice drifts (issue 26 found the INT8 gate, the MURA folder name and parts and
the PNG signature each kept twice). These tests fail when a copy comes back.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "baseline", "deep", "export", "murakit")


def _spelling(pattern: str) -> list:
    """Source files of the packages whose code (not docstrings' prose) spells ``pattern``."""
    rx = re.compile(pattern)
    return sorted(str(f.relative_to(ROOT)) for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")
                  if rx.search(f.read_text(encoding="utf-8")))


def test_mura_layout_facts_live_in_edge_mura():
    from edge import mura
    from murakit.data import mura as data_mura
    from murakit.data import synth
    from murakit.scoring import inputs

    assert _spelling(r'"MURA-v1\.1"') == ["edge/mura.py"]
    assert _spelling(r'"ELBOW", "FINGER", "FOREARM"') == ["edge/mura.py"]
    assert data_mura.MURA_DIRNAME is inputs.MURA_DIRNAME is mura.MURA_DIRNAME
    assert data_mura.MURA_SPLITS is inputs.MURA_SPLITS is mura.MURA_SPLITS
    assert synth.PARTS is mura.MURA_PARTS
    assert mura.part_from_path("MURA-v1.1/valid/xr_wrist/patient1/study1_positive/image1.png") == "WRIST"
    assert mura.part_from_path("a/XR_HANDS/b.png") is None and mura.part_from_path("a/b.png") is None


def test_the_image_signatures_live_in_edge_image():
    from edge.image import PNG_SIGNATURE
    from edge.serve.app import sniff

    assert _spelling(r"x89PNG") == ["edge/image.py"]
    assert sniff(PNG_SIGNATURE + b"rest") == "png" and sniff(b"\xff\xd8\xff\xe0") == "jpeg"


def test_the_int8_gate_defaults_live_with_the_gate():
    from export import quantize
    from murakit.pipeline import export

    assert export.MAX_INT8_DROP == quantize.MAX_AUROC_DROP
    assert export.MAX_INT8_LATENCY_RATIO == quantize.MAX_LATENCY_RATIO
    assert export.INT8_TIMING_ROUNDS == quantize.TIMING_ROUNDS
    assert _spelling(r"(?m)^MAX_INT8_DROP = 0") == [] and _spelling(r"(?m)^MAX_AUROC_DROP = ") == ["export/quantize.py"]
