"""Add (or rebuild) the DICOM cases of the committed regression fixture; the PNG cases and the
model are left untouched.

Run from the repository root (needs the ``dicom`` extra; ``make.py`` calls it too)::

    python tests/data/regression/make_dicom.py

Each DICOM case stores one PNG case's pixels in a different way a PACS would send them, so the
golden set pins the whole DICOM path (decoders, modality LUT, VOI, MONOCHROME1 inversion):

    test_data_set_4  <- case 1 as MONOCHROME1, 12-bit, full-range LINEAR window, JPEG-lossless
    test_data_set_5  <- case 2 as MONOCHROME2, 16-bit, rescale 0.5 / -1024, no window, RLE Lossless
    test_data_set_6  <- case 3 as MONOCHROME2, 10-bit, SIGMOID window, implicit VR, no preamble

Cases 4 and 5 display exactly their PNG twin's picture, so their model input equals the
twin's (``tests/test_regression.py`` checks it); case 6's SIGMOID window remaps the contrast.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))
GOLDEN = HERE / "golden" / "model"

# (new case folder, PNG twin folder, style keywords, description)
CASES = [
    ("test_data_set_4", "test_data_set_1",
     {"photometric": "MONOCHROME1", "bits_stored": 12, "window": "full", "syntax": "jpeg-lossless"},
     "MONOCHROME1 12-bit, full LINEAR window, JPEG Lossless SV1"),
    ("test_data_set_5", "test_data_set_2",
     {"bits_stored": 16, "rescale": (0.5, -1024.0), "window": "none", "syntax": "rle"},
     "MONOCHROME2 16-bit, rescale 0.5/-1024, no window tags, RLE Lossless"),
    ("test_data_set_6", "test_data_set_3",
     {"bits_stored": 10, "window": "sigmoid", "syntax": "implicit", "preamble": False},
     "MONOCHROME2 10-bit, SIGMOID window, implicit VR, no preamble"),
]


def add_dicom_cases(golden_dir: Path = GOLDEN) -> list:
    """Write the DICOM cases into ``golden_dir`` and list them in its manifest; returns their
    probabilities."""
    from edge.golden import MANIFEST, write_case
    from edge.predictor import Predictor
    from murakit.data.dicom_write import DicomStyle, write_dicom

    manifest = json.loads((golden_dir / MANIFEST).read_text())
    pred = Predictor(golden_dir.parents[1] / manifest["model"])
    twins = {c["dir"]: c for c in manifest["cases"]}
    kept = [c for c in manifest["cases"] if c["dir"] not in {n for n, *_ in CASES}]
    added, probs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, twin, style, text) in enumerate(CASES):
            picture = cv2.imread(str(golden_dir / twin / twins[twin]["source_file"]), cv2.IMREAD_UNCHANGED)
            src = Path(tmp) / f"{name}.dcm"
            write_dicom(src, picture, DicomStyle(**style), study_uid=f"2.25.{900 + i}",
                        series_uid=f"2.25.{900 + i}.1", sop_uid=f"2.25.{900 + i}.1.1", body_part="WRIST")
            x = pred.model_input(pred.preprocess(src))
            out = pred.run(x)
            shutil.rmtree(golden_dir / name, ignore_errors=True)
            write_case(golden_dir / name, x, [out[n] for n in pred.output_names], pred.input_name,
                       pred.output_names, src.read_bytes(), "source.dcm")
            added.append({"dir": name, "label": twins[twin]["label"], "source_file": "source.dcm",
                          "twin": twin, "dicom": text})
            probs.append(float(out["probability"].ravel()[0]))
    manifest["cases"] = kept + added
    (golden_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return probs


if __name__ == "__main__":
    print("DICOM case probabilities:", [round(p, 4) for p in add_dicom_cases()])
