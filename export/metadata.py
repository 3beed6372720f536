"""The ``murakit.*`` metadata_props that make an ONNX model self-describing.

Values are strings in ONNX; non-string values are stored as JSON (so floats round-trip
exactly through ``repr``-precision JSON and dicts stay parseable on the device).
"""

from __future__ import annotations

import json

PREFIX = "murakit."


def _as_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def set_metadata(model, meta: dict):
    """Set (or replace) ``murakit.<key>`` entries of an ``onnx.ModelProto`` in place.

    Parameters
    ----------
    model : onnx.ModelProto
    meta : dict
        Keys without the prefix; values are str (kept) or JSON-serialisable (dumped).

    Returns
    -------
    onnx.ModelProto
        The same object, for chaining.
    """
    replaced = {PREFIX + k for k in meta}
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in replaced]
    del model.metadata_props[:]
    for key, value in keep:
        model.metadata_props.add(key=key, value=value)
    for key, value in meta.items():
        model.metadata_props.add(key=PREFIX + key, value=_as_text(value))
    return model


def get_metadata(model) -> dict:
    """``{key: str}`` of the ``murakit.*`` metadata of an ``onnx.ModelProto``, prefix stripped."""
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


def load_metadata(path) -> dict:
    """:func:`get_metadata` of a model file (weights not loaded)."""
    import onnx

    return get_metadata(onnx.load(str(path), load_external_data=False))
