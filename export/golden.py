"""Record a model's golden set: source images, model inputs and reference outputs.

The reference outputs are produced by the exported file itself through the edge runtime
(:class:`edge.predictor.Predictor`), so ``edge-verify`` on an untouched model and machine sees
zero drift; Keras parity is checked separately at export time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.atomic import atomic_dir
from edge.dicom import is_dicom_file
from edge.golden import FORMAT_VERSION, MANIFEST, SOURCE, sha256_file, write_case
from edge.predictor import Predictor

FLOAT_TOLERANCE = 1e-4
FLOAT_RULE = "float model: max |diff| <= 1e-4 on every output"
INT8_RULE = ("INT8 model: per output, 2 x the largest |INT8 - float| seen on these cases at export "
             "+ 1e-3 (the recorded agreement; a new device may move INT8 rounding by as much as "
             "quantization moved the float outputs)")


def float_tolerances(output_names) -> dict:
    """``{name: 1e-4}`` for a float model."""
    return {n: FLOAT_TOLERANCE for n in output_names}


def int8_tolerances(float_outputs: dict, int8_outputs: dict) -> dict:
    """Tolerances of an INT8 golden set from its agreement with the float model.

    Parameters
    ----------
    float_outputs, int8_outputs : dict name -> ndarray (N, ...)
        Both models' outputs on the golden inputs.
    """
    return {k: float(2.0 * np.max(np.abs(np.asarray(int8_outputs[k], np.float64) - float_outputs[k])) + 1e-3)
            for k in int8_outputs}


def record_golden(model_path, golden_dir, sources, infos=None, tolerances=None, rule: str = FLOAT_RULE,
                  extra: dict | None = None):
    """Write ``golden_dir`` (atomically) for ``model_path``.

    Parameters
    ----------
    model_path : str or Path
        Exported murakit ONNX model.
    golden_dir : str or Path
        Usually ``edge.golden.default_golden_dir(model_path)``.
    sources : list of Path
        Source images; each is preprocessed with the model's own metadata config.
    infos : list of dict, optional
        Per-case facts for the manifest (label, study, part, ...).
    tolerances : dict, optional
        ``{output name: max |diff|}``; default :func:`float_tolerances`.
    rule : str
        Human-readable statement of how the tolerances were set.
    extra : dict, optional
        More manifest fields.

    Returns
    -------
    manifest : dict
    inputs : ndarray, the model inputs (N, ...)
    outputs : dict name -> ndarray (N, ...)
    """
    pred = Predictor(model_path)
    infos = infos or [{} for _ in sources]
    xs = [pred.model_input(pred.preprocess(s)) for s in sources]
    outs = [pred.run(x) for x in xs]
    tolerances = tolerances or float_tolerances(pred.output_names)
    manifest = {
        "format": FORMAT_VERSION, "model": Path(model_path).name, "model_sha256": sha256_file(model_path),
        "kind": pred.kind, "precision": pred.metadata.get("precision", "float32"),
        "input_name": pred.input_name, "output_names": pred.output_names,
        "tolerances": {k: float(tolerances[k]) for k in pred.output_names}, "tolerance_rule": rule,
        "preprocess": pred.config.to_dict(), "cases": [], **(extra or {}),
    }
    with atomic_dir(golden_dir) as tmp:
        for i, (src, x, out, info) in enumerate(zip(sources, xs, outs, infos)):
            name = f"test_data_set_{i}"
            src_file = SOURCE if Path(src).suffix.lower() == ".png" else "source" + Path(src).suffix.lower()
            if is_dicom_file(src):  # PACS exports may have no (or a UID-like) extension
                src_file = "source.dcm"
            write_case(Path(tmp) / name, x, [out[n] for n in pred.output_names], pred.input_name,
                       pred.output_names, Path(src).read_bytes(), src_file)
            manifest["cases"].append({"dir": name, "source_file": src_file, **info})
        (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    inputs = np.concatenate(xs) if xs else np.zeros((0,))
    outputs = {n: np.concatenate([o[n] for o in outs]) for n in pred.output_names} if outs else {}
    return manifest, inputs, outputs
