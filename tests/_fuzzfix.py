"""Hostile models and golden sets for the fuzz cases, built inside the tree under test.

Run as ``python tests/_fuzzfix.py OUT SEED`` with ``PYTHONPATH=<tree>:<tree>/tests``: it writes
``OUT/models/*.onnx`` (one good CNN, one good baseline, and every damaged variant of
:data:`MODEL_RECIPES`), ``OUT/images/``, ``OUT/study/`` and ``OUT/golden/<variant>/`` (the good
CNN's golden set and every damaged variant of :data:`GOLDEN_RECIPES`). It uses only what the
tree's own ``tests/_edgefix.py`` and ``export.golden.record_golden`` offer in every version
since the card (and before it), so the same cases run against an old checkout.

Graph variants (wrong input rank, NaN output, ...) are re-signed when the tree has model
cards (the card's ``weights_sha256`` recomputed), so they test the warm-up, not the hash.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

DEEP = 50_000  # nesting levels of the "deep JSON" variants
HUGE = 3 * 1024 * 1024  # characters of the "huge JSON" variants


# ---------------------------------------------------------------- model metadata edits
def _props(model) -> dict:
    return {p.key: p.value for p in model.metadata_props}


def _set_props(model, props: dict) -> None:
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def _sign(model) -> bytes:
    """Serialized model; with model cards, its card's graph hash recomputed (a 'valid' file)."""
    import edge

    if not (Path(edge.__file__).parent / "card.py").is_file():  # a tree before model cards: no hash
        return model.SerializeToString()
    from edge.card import ModelCard, attach_card

    card = ModelCard.from_props(_props(model))
    return attach_card(model, card)[0]


def _edit_json(props: dict, key: str, edit) -> None:
    """Apply ``edit(value) -> value`` to the JSON in ``murakit.<key>``."""
    value = json.loads(props["murakit." + key])
    if isinstance(value, str) and value.startswith("{"):  # older trees stored configs as JSON strings
        value = json.loads(value)
    props["murakit." + key] = json.dumps(edit(value))


def _field(name, value):
    def edit(d):
        d = dict(d)
        d[name] = value
        return d
    return edit


def meta_variant(src: Path, dst: Path, key: str, raw: str | None = None, edit=None) -> None:
    """Copy of ``src`` with metadata ``murakit.<key>`` set to ``raw`` text, edited, or removed."""
    import onnx

    model = onnx.load(str(src))
    props = _props(model)
    if key == "*":
        props = {k: v for k, v in props.items() if not k.startswith("murakit.")}
    elif edit is not None:
        _edit_json(props, key, edit)
    elif raw is None:
        props.pop("murakit." + key, None)
    else:
        props["murakit." + key] = raw
    _set_props(model, props)
    dst.write_bytes(model.SerializeToString())  # metadata only: the graph hash is unchanged


# ---------------------------------------------------------------- model graph edits
def _cnn_graph(size: int, change: str):
    """The tiny CAM CNN of tests/_edgefix.py with one deliberate defect."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32)
    head = rng.normal(0, 1.0, (1, 4, 1, 1)).astype(np.float32)
    bias = np.array([np.nan if change == "nan_output" else -0.3], np.float32)
    first = "image"
    nodes, inits = [], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(head, "head"),
                        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
                        numpy_helper.from_array(bias, "bias")]
    in_shape = ["B", size, size, 1]
    in_type = TensorProto.FLOAT
    if change == "rank2_input":  # takes flattened (B, S*S) images: never our (B, S, S, 1)
        in_shape = ["B", size * size]
        inits.append(numpy_helper.from_array(np.array([-1, size, size, 1], np.int64), "shape4"))
        nodes.append(helper.make_node("Reshape", ["image", "shape4"], ["image4"]))
        first = "image4"
    elif change == "fixed_batch7":
        in_shape = [7, size, size, 1]
    elif change == "int_input":
        in_type = TensorProto.INT64
        nodes.append(helper.make_node("Cast", ["image"], ["imagef"], to=TensorProto.FLOAT))
        first = "imagef"
    nodes += [
        helper.make_node("Transpose", [first], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["conv"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["feat"]),
        helper.make_node("Conv", ["feat", "head"], ["cam4"]),
        helper.make_node("Squeeze", ["cam4", "ax1"], ["cam"]),
        helper.make_node("ReduceMean", ["cam"], ["gap"], axes=[1, 2], keepdims=0),
        helper.make_node("Add", ["gap", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
    ]
    out_name = "prob" if change == "no_probability" else "probability"
    if change == "out_of_range":  # "probabilities" of 3 + 3p: a broken head
        inits.append(numpy_helper.from_array(np.array([3.0], np.float32), "three"))
        nodes += [helper.make_node("Add", ["p", "three"], ["p3"]), helper.make_node("Unsqueeze", ["p3", "ax1"], [out_name])]
    else:
        nodes.append(helper.make_node("Unsqueeze", ["p", "ax1"], [out_name]))
    inputs = [helper.make_tensor_value_info("image", in_type, in_shape)]
    if change == "two_inputs":
        inputs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["B", 3]))
        nodes.append(helper.make_node("Identity", ["extra"], ["extra_out"]))
    h = size // 2
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["B", 1]),
               helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["B", h, h])]
    if change == "two_inputs":
        outputs.append(helper.make_tensor_value_info("extra_out", TensorProto.FLOAT, ["B", 3]))
    return helper.make_graph(nodes, "tiny_cam_cnn", inputs, outputs, inits)


def graph_variant(good: Path, dst: Path, size: int, change: str) -> None:
    """A CNN with a graph defect, carrying the good model's card (re-signed)."""
    import onnx
    from onnx import helper

    model = helper.make_model(_cnn_graph(size, change), opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    _set_props(model, _props(onnx.load(str(good))))
    dst.write_bytes(_sign(model))


def truncated(src: Path, dst: Path, fraction: float) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[:max(1, int(len(data) * fraction))])


def flipped_weights(src: Path, dst: Path, n: int, seed: int) -> None:
    """Flip ``n`` bytes inside the weight tensors (the file stays parseable)."""
    import onnx
    from onnx import numpy_helper

    data = bytearray(src.read_bytes())
    spans = []
    for init in onnx.load(str(src)).graph.initializer:
        raw = numpy_helper.to_array(init).tobytes()
        at = data.find(raw) if len(raw) >= 16 else -1
        if at >= 0:
            spans.append((at, at + len(raw)))
    rng = np.random.default_rng(seed)
    for _ in range(n):
        lo, hi = spans[rng.integers(len(spans))]
        data[int(rng.integers(lo, hi))] ^= int(rng.integers(1, 256))
    dst.write_bytes(bytes(data))


def _deep(n: int = DEEP) -> str:
    return "[" * n + "]" * n


# name -> (base model, how); every variant must be refused (or fail per input) - never a label
MODEL_RECIPES = {
    **{f"threshold_{n}": ("cnn", "threshold", raw) for n, raw in [
        ("nan", "NaN"), ("5", "5"), ("inf", "Infinity"), ("-1", "-1"), ("str", '"0.5"'), ("true", "true"),
        ("null", "null"), ("1e309", "1e309"), ("deep", _deep())]},
    **{f"labels_{n}": ("cnn", "labels", raw) for n, raw in [
        ("5", '"5"'), ("ab", '"ab"'), ("same", '["a", "a"]'), ("ints", "[1, 2]"), ("three", '["n", "a", "x"]'),
        ("empty", "[]"), ("deep", _deep()), ("huge", json.dumps(["x" * HUGE, "y"])), ("notjson", "[normal")]},
    **{f"preprocess_{n}": ("cnn", "preprocess", _field(f, v)) for n, f, v in [
        ("clahe_no", "clahe", "no"), ("clahe_grid_0", "clahe_grid", 0), ("clahe_grid_100000", "clahe_grid", 100000),
        ("clahe_grid_-1", "clahe_grid", -1), ("clahe_clip_-1", "clahe_clip", -1.0), ("size_0", "size", 0),
        ("size_100000", "size", 100000), ("size_float", "size", 32.5), ("invert_sometimes", "invert", "sometimes"),
        ("clip_reversed", "clip_low", 99.9), ("pad_300", "pad_value", 300), ("border_0", "border", 0.0),
        ("unknown_field", "gamma", 2.2), ("size_true", "size", True)]},
    "preprocess_deep": ("cnn", "preprocess", _deep()),
    "preprocess_missing": ("cnn", "preprocess", None),
    "kind_gan": ("cnn", "kind", '"gan"'),
    "input_pixels": ("cnn", "input", '"pixels"'),
    "no_metadata": ("cnn", "*", None),
    **{f"hog_{n}": ("baseline", "hog", _field(f, v)) for n, f, v in [
        ("no_image_fits", "pixels_per_cell", [64, 64]), ("cell_0", "pixels_per_cell", [0, 0]),
        ("block_100", "cells_per_block", [100, 100]), ("orient_0", "orientations", 0),
        ("orient_100000", "orientations", 100000), ("norm_L3", "block_norm", "L3")]},
    "hog_missing": ("baseline", "hog", None),
    **{f"graph_{c}": ("cnn", "graph", c) for c in (
        "rank2_input", "fixed_batch7", "int_input", "nan_output", "out_of_range", "no_probability", "two_inputs")},
    **{f"truncated_{f}": ("cnn", "truncate", f) for f in (0.01, 0.1, 0.5, 0.9, 0.99)},
    "empty_file": ("cnn", "truncate", 0.0),
    **{f"flipped_{k}": ("cnn", "flip", k) for k in range(4)},
    "baseline_flipped": ("baseline", "flip", 9),
}


def build_models(out: Path, seed: int) -> dict:
    """Write the good models, images and every model variant; returns {name: path}."""
    from _edgefix import SIZE, baseline_model, cnn_model, write_images

    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    good = {"cnn": cnn_model(models / "good_cnn.onnx"), "baseline": baseline_model(models / "good_baseline.onnx")}
    cnn_model(models / "other_cnn.onnx", seed=7)
    write_images(out / "images", 3)
    write_images(out / "study" / "study1_positive", 2, seed=5)
    paths = {}
    for name, (base, key, how) in MODEL_RECIPES.items():
        dst = models / f"{name}.onnx"
        if key == "graph":
            graph_variant(good["cnn"], dst, SIZE, how)
        elif key == "truncate":
            if how == 0.0:
                dst.write_bytes(b"")
            else:
                truncated(good[base], dst, how)
        elif key == "flip":
            flipped_weights(good[base], dst, 20, seed * 1000 + how)
        elif callable(how):
            meta_variant(good[base], dst, key, edit=how)
        else:
            meta_variant(good[base], dst, key, raw=how)
        paths[name] = dst
    return paths


# ---------------------------------------------------------------- golden sets
def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, m) -> None:
    (d / "manifest.json").write_text(m if isinstance(m, str) else json.dumps(m))


def _tensor(path: Path, arr) -> None:
    from onnx import numpy_helper

    path.write_bytes(numpy_helper.from_array(np.asarray(arr)).SerializeToString())


def _edit_cases(edit):
    def apply(d):
        m = _manifest(d)
        edit(m["cases"])
        _write_manifest(d, m)
    return apply


def _edit_manifest(edit):
    def apply(d):
        m = _manifest(d)
        edit(m)
        _write_manifest(d, m)
    return apply


def _tolerance(value):
    return _edit_manifest(lambda m: m["tolerances"].__setitem__("probability", value))


def _case0(d: Path) -> Path:
    return d / _manifest(d)["cases"][0]["dir"]


def _source(d: Path) -> Path:
    c = _manifest(d)["cases"][0]
    return d / c["dir"] / c.get("source_file", "source.png")


def _bump_output(d: Path) -> None:
    import onnx
    from onnx import numpy_helper

    p = _case0(d) / "output_0.pb"
    t = numpy_helper.to_array(onnx.load_tensor(str(p)))
    _tensor(p, (t + np.float32(0.1)).astype(t.dtype))


# name -> (edit(golden_dir), exit code edge-verify must give: 2 unusable folder, 1 drift / failure)
GOLDEN_RECIPES = {
    "intact": (lambda d: None, 0),
    "input_wrong_shape": (lambda d: _tensor(_case0(d) / "input_0.pb", np.zeros((1, 33, 32, 1), np.float32)), 2),
    "input_rank2": (lambda d: _tensor(_case0(d) / "input_0.pb", np.zeros((1, 1024), np.float32)), 2),
    "input_empty_batch": (lambda d: _tensor(_case0(d) / "input_0.pb", np.zeros((0, 32, 32, 1), np.float32)), 2),
    "input_int64": (lambda d: _tensor(_case0(d) / "input_0.pb", np.zeros((1, 32, 32, 1), np.int64)), 2),
    "input_garbage": (lambda d: (_case0(d) / "input_0.pb").write_bytes(bytes(range(256)) * 4), 2),
    "input_truncated": (lambda d: (_case0(d) / "input_0.pb").write_bytes((_case0(d) / "input_0.pb").read_bytes()[:100]), 2),
    "input_missing": (lambda d: (_case0(d) / "input_0.pb").unlink(), 2),
    "output_missing": (lambda d: (_case0(d) / "output_0.pb").unlink(), 2),
    "output_garbage": (lambda d: (_case0(d) / "output_0.pb").write_bytes(b"\xff" * 64), 2),
    "output_tampered": (_bump_output, 1),
    "manifest_null": (lambda d: _write_manifest(d, "null"), 2),
    "manifest_list": (lambda d: _write_manifest(d, "[]"), 2),
    "manifest_string": (lambda d: _write_manifest(d, '"golden"'), 2),
    "manifest_truncated": (lambda d: _write_manifest(d, (d / "manifest.json").read_text()[:40]), 2),
    "manifest_empty": (lambda d: _write_manifest(d, ""), 2),
    "manifest_binary": (lambda d: (d / "manifest.json").write_bytes(b"\x00\xff\xfe" * 100), 2),
    "manifest_deep": (lambda d: _write_manifest(d, _deep()), 2),
    "manifest_missing": (lambda d: (d / "manifest.json").unlink(), 2),
    "tolerances_missing": (_edit_manifest(lambda m: m.pop("tolerances")), 2),
    "tolerance_key_missing": (_edit_manifest(lambda m: m["tolerances"].pop("probability")), 2),
    "tolerance_string": (_tolerance("1e-4"), 2),
    "tolerance_null": (_tolerance(None), 2),
    "tolerance_negative": (_tolerance(-1.0), 2),
    "tolerance_loosened": (_tolerance(1.0), 2),
    "tolerances_list": (_edit_manifest(lambda m: m.__setitem__("tolerances", [1e-4])), 2),
    "cases_empty": (_edit_manifest(lambda m: m.__setitem__("cases", [])), 2),
    "cases_not_list": (_edit_manifest(lambda m: m.__setitem__("cases", {"dir": "x"})), 2),
    "case_without_dir": (_edit_cases(lambda cs: cs[0].pop("dir")), 2),
    "case_dir_int": (_edit_cases(lambda cs: cs[0].__setitem__("dir", 3)), 2),
    "case_dir_escape": (_edit_cases(lambda cs: cs[0].__setitem__("dir", "../../../../../etc")), 2),
    "case_dir_absolute": (_edit_cases(lambda cs: cs[0].__setitem__("dir", "/etc")), 2),
    "case_dir_missing": (lambda d: shutil.rmtree(_case0(d)), 2),
    "case_not_object": (_edit_cases(lambda cs: cs.__setitem__(0, "test_data_set_0")), 2),
    "output_names_missing": (_edit_manifest(lambda m: m.pop("output_names")), 2),
    "model_sha_other": (_edit_manifest(lambda m: m.__setitem__("model_sha256", "0" * 64)), 2),
    "source_deleted": (lambda d: _source(d).unlink(), 1),
    "source_garbage": (lambda d: _source(d).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), 1),
    "source_swapped": (lambda d: shutil.copyfile(d.parent.parent / "images" / "image3.png", _source(d)), 1),
    "golden_is_file": (lambda d: (shutil.rmtree(d), d.write_text("not a folder")), 2),
    "golden_empty": (lambda d: (shutil.rmtree(d), d.mkdir()), 2),
}


def build_golden(out: Path) -> dict:
    """Record the good CNN's golden set, then one damaged copy per recipe; returns {name: dir}."""
    from export.golden import record_golden

    sources = sorted((out / "images").glob("*.png"))
    base = out / "golden" / "_recorded"
    record_golden(out / "models" / "good_cnn.onnx", base, sources)
    paths = {}
    for name, (edit, _) in GOLDEN_RECIPES.items():
        d = out / "golden" / name
        shutil.copytree(base, d)
        edit(d)
        paths[name] = d
    return paths


def main(argv=None) -> int:
    out, seed = Path(argv[0]), int(argv[1])
    build_models(out, seed)
    build_golden(out)
    print(json.dumps({"models": sorted(MODEL_RECIPES), "golden": sorted(GOLDEN_RECIPES)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
