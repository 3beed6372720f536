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
from edge.golden import (
    FLOAT_RULE,
    FORMAT_VERSION,
    INT8_RULE,
    MANIFEST,
    SOURCE,
    max_abs_diff,
    tolerances_for,
    write_case,
)
from edge.predictor import Predictor
from edge.protobuf import sha256_file


def golden_agreement(float_outputs: dict, int8_outputs: dict) -> dict:
    """``{name: max |INT8 - float|}`` on the golden inputs: what an INT8 golden set tolerates.

    Parameters
    ----------
    float_outputs, int8_outputs : dict name -> ndarray (N, ...)
        Both models' outputs on the golden inputs.
    """
    return {k: max_abs_diff(int8_outputs[k], float_outputs[k]) for k in int8_outputs}


def record_golden(model_path, golden_dir, sources, infos=None, extra: dict | None = None,
                  model_name: str | None = None):
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
    extra : dict, optional
        More manifest fields.
    model_name : str, optional
        The model's file name in the manifest (default: ``model_path``'s), for a model that
        is recorded under a temporary name and renamed into place afterwards.

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
    tolerances = tolerances_for(pred.card, pred.output_names)
    manifest = {
        **(extra or {}),
        "format": FORMAT_VERSION, "model": model_name or Path(model_path).name, "model_sha256": sha256_file(model_path),
        "card": pred.card.to_dict(), "input_name": pred.input_name, "output_names": pred.output_names,
        "tolerances": tolerances, "tolerance_rule": FLOAT_RULE if pred.card.precision == "float32" else INT8_RULE,
        "cases": [],
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
