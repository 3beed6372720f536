"""INT8 that pays: CPU features, side-by-side timing, the ship-or-not decision, graph fusion, TFLite."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.cpu import cpu_info, describe, parse_cpuinfo
from export.quantize import Recipe, candidate_recipes, int8_decision
from export.speed import interleaved_ms, ratio_summary

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8 avx_vnni
bugs\t\t: spectre_v1

processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni amx_tile amx_int8 avx_vnni
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 asimddp i8mm sve
CPU part\t: 0xd40

processor\t: 1
Features\t: fp asimd evtstrm aes crc32 asimddp i8mm sve
"""
OLD_X86 = "processor : 0\nmodel name : Old CPU\nflags : fpu sse4_2 avx avx2 fma\n"


def test_cpuinfo_parsing_finds_dot_product_instructions():
    x86 = parse_cpuinfo(X86)
    assert x86["model"] == "Intel(R) Xeon(R) Processor" and x86["logical_cpus"] == 2
    assert x86["int8_dot"] == ["avx512_vnni", "avx_vnni", "amx_int8"]
    assert {"avx2", "avx512f", "amx_tile"} <= set(x86["features"]) and "fpu" not in x86["features"]
    assert x86["features"] == sorted(x86["features"])
    arm = parse_cpuinfo(ARM)
    assert arm["logical_cpus"] == 2 and arm["int8_dot"] == ["asimddp", "i8mm"] and "sve" in arm["features"]
    assert parse_cpuinfo(OLD_X86)["int8_dot"] == [] and parse_cpuinfo("")["features"] == []


def test_cpu_info_without_cpuinfo_is_unknown_not_absent(tmp_path):
    info = cpu_info(tmp_path / "missing")
    assert info["int8_dot"] is None and info["features"] == [] and info["os_cpus"] >= 1
    assert "int8 dot product: unknown" in describe(info)
    here = cpu_info()  # this machine: a list either way (empty when the CPU has none)
    assert isinstance(here["features"], list) and here["os_cpus"] >= 1
    assert "int8 dot product: none" in describe({**parse_cpuinfo(OLD_X86), "machine": "x86_64", "os_cpus": 1})


def test_candidate_recipes_follow_the_cpu():
    vnni = candidate_recipes({**parse_cpuinfo(X86), "machine": "x86_64"})
    assert [r.activations for r in vnni] == ["u8"] * 3 and not any(r.reduce_range for r in vnni)
    assert {r.format for r in vnni} == {"qdq", "qoperator"} and any(r.float_thin_convs for r in vnni)
    assert len({r.name for r in vnni}) == len(vnni)
    old = candidate_recipes({**parse_cpuinfo(OLD_X86), "machine": "x86_64"})
    assert all(r.reduce_range for r in old)  # AVX2 without VNNI: 7-bit weights avoid saturation
    arm = candidate_recipes({**parse_cpuinfo(ARM), "machine": "aarch64"})
    assert all(r.activations == "s8" and not r.reduce_range for r in arm)
    assert Recipe("x", ops=("Conv",)).to_dict()["ops"] == ["Conv"]


def _speed(r1, r32):
    return {f"batch_{b}": {"float_ms": 1.0, "int8_ms": r, "ratio": r, "ratio_min": r - 0.1, "ratio_max": r + 0.1}
            for b, r in ((1, r1), (32, r32))}


def test_int8_decision_needs_accuracy_and_speed():
    ok = {"accepted": True, "reason": "ok", "auroc_drop": 0.002}
    bad = {"accepted": False, "reason": "study AUROC drop 0.0500 > 0.01", "auroc_drop": 0.05}
    d = int8_decision(ok, _speed(0.7, 0.5))
    assert d["accepted"] and d["refused_by"] == [] and d["reason"] == "ok" and d["max_latency_ratio"] == 1.0
    d = int8_decision(ok, _speed(0.7, 1.2))  # faster at batch 1 only: refused, and the line says where
    assert not d["accepted"] and d["refused_by"] == ["speed"]
    assert "batch 32 1.20x float [1.10, 1.30]" in d["reason"] and "batch 1 " not in d["reason"]
    d = int8_decision(bad, _speed(0.7, 0.5))
    assert not d["accepted"] and d["refused_by"] == ["accuracy"] and d["reason"] == bad["reason"]
    d = int8_decision(bad, _speed(1.5, 1.5))
    assert d["refused_by"] == ["accuracy", "speed"] and d["auroc_drop"] == 0.05
    assert int8_decision(ok, _speed(1.0, 0.5))["refused_by"] == ["speed"]  # equal is not faster
    assert int8_decision(ok, _speed(0.9, 0.9), max_ratio=0.8)["refused_by"] == ["speed"]
    assert int8_decision(ok, {})["refused_by"] == ["speed"]  # nothing measured: not shipped


def test_interleaved_timing_takes_turns_and_ratios_have_spread():
    calls = []
    out = interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, calls=4,
                         warmup=1)
    turns = [calls[i:i + 2] for i in range(2, len(calls), 2)]  # after one warm-up call each
    assert len(turns) == 12 and all(sorted(t) == ["a", "b"] for t in turns)  # every turn calls each once
    assert len({tuple(t) for t in turns}) == 2  # in shuffled order (a fixed order biases one model)
    assert {k: len(v) for k, v in out.items()} == {"a": 3, "b": 3} and min(out["a"] + out["b"]) >= 0
    s = ratio_summary({"float": [2.0, 2.0, 4.0], "int8": [1.0, 3.0, 2.0]}, "float")
    assert s["int8"] == {"ms": 2.0, "ratio": 0.5, "ratio_min": 0.5, "ratio_max": 1.5}
    assert s["float"]["ratio"] == s["float"]["ratio_min"] == s["float"]["ratio_max"] == 1.0


def _hard_swish_graph():
    """x -> Relu6(x + 3) / 6 -> (* x: hard-swish) and a hard-sigmoid used by another tensor."""
    c = {n: helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in
         (("three", 3.0), ("zero", 0.0), ("six", 6.0), ("sixth", 1 / 6))}
    nodes = [helper.make_node("Add", ["x", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["c"]),
             helper.make_node("Mul", ["c", "sixth"], ["h"]), helper.make_node("Mul", ["x", "h"], ["sw"]),
             helper.make_node("Add", ["sw", "three"], ["a2"]), helper.make_node("Clip", ["a2", "zero", "six"], ["c2"]),
             helper.make_node("Mul", ["c2", "sixth"], ["h2"]), helper.make_node("Mul", ["y", "h2"], ["out"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5]) for n in ("x", "y", "out")]
    g = helper.make_graph(nodes, "hs", io[:2], io[2:], initializer=list(c.values()))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_hard_activation_fusion_is_exact():
    import onnxruntime as ort

    from export.graph import fuse_hard_activations

    model = _hard_swish_graph()
    feed = {"x": np.linspace(-5, 5, 10, dtype=np.float32).reshape(2, 5),
            "y": np.arange(10, dtype=np.float32).reshape(2, 5)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]

    before = run(model)
    assert fuse_hard_activations(model) == {"HardSigmoid": 1, "HardSwish": 1}
    onnx.checker.check_model(model)
    assert sorted(n.op_type for n in model.graph.node) == ["HardSigmoid", "HardSwish", "Mul"]
    assert not model.graph.initializer  # the constants 3, 0, 6, 1/6 went with their nodes
    np.testing.assert_allclose(run(model), before, rtol=1e-6, atol=1e-6)
    assert fuse_hard_activations(model) == {"HardSigmoid": 0, "HardSwish": 0}  # idempotent


TFLITE_FLOAT_TOL = 1e-5  # same float32 arithmetic, other kernels (XNNPACK)
TFLITE_INT8_TOL = 0.1    # INT8 TFLite vs Keras probability on an untrained width-4 model


def test_tflite_matches_keras_within_tolerance():
    deep = pytest.importorskip("deep")
    import keras

    from deep.config import ModelConfig
    from export.tflite import TfliteRunner, to_tflite

    keras.utils.set_random_seed(0)
    cam = deep.cam_model(deep.build_model(ModelConfig(size=32, width=4)))
    x = np.random.default_rng(0).random((6, 32, 32, 1), dtype=np.float32)
    ref = [np.asarray(a) for a in cam(x, training=False)]
    runner = TfliteRunner(to_tflite(cam), threads=1)
    for n in (1, 6):  # per-batch interpreters
        out = runner.run(x[:n])
        assert out["probability"].shape == (n, 1) and out["cam"].shape == ref[1][:n].shape
        assert np.abs(out["probability"] - ref[0][:n]).max() <= TFLITE_FLOAT_TOL
        assert np.abs(out["cam"] - ref[1][:n]).max() <= TFLITE_FLOAT_TOL
    q = TfliteRunner(to_tflite(cam, x), threads=1).probabilities(x)
    assert q.shape == (6,) and np.all((q >= 0) & (q <= 1))
    assert np.abs(q - ref[0].ravel()).max() <= TFLITE_INT8_TOL


def test_mobilenetv3_exports_with_fused_hard_swish_and_keeps_parity():
    deep = pytest.importorskip("deep")
    import keras

    from deep.config import ModelConfig
    from export.cnn import export_cnn

    keras.utils.set_random_seed(0)
    cam = deep.cam_model(deep.build_model(ModelConfig(arch="mobilenetv3small", size=32)))
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    model, parity = export_cnn(cam, 32, x)  # raises when Keras and ONNX differ by more than 1e-4
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("HardSwish") >= 10 and "Clip" not in ops and max(parity.values()) <= 1e-4


def test_calibration_batches_are_all_the_same_size():
    from export.quantize import ArrayCalibrationReader, even_batch

    assert [even_batch(n, 16) for n in (200, 32, 10, 17, 1)] == [10, 16, 10, 1, 1]
    x = np.arange(20, dtype=np.float32).reshape(20, 1, 1, 1)
    reader = ArrayCalibrationReader("image", x, batch_size=16)
    batches = iter(reader.get_next, None)
    got = [b["image"] for b in batches]
    assert {len(b) for b in got} == {10}
    np.testing.assert_array_equal(np.concatenate(got), x)  # every row, in order, once


def _tiny_conv_model(path):
    """image (N, 8, 8, 1) NHWC -> Conv 3x3 (2 ch) -> Relu -> mean -> probability (N, 2)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 3, 3], np.linspace(-1, 1, 18).tolist())
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["probability"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 8, 8, 1])],
                          [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 2])], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_works_when_batches_do_not_divide_the_set(tmp_path, method):
    # 20 images in batches of <= 16: a 16 + 4 split made onnxruntime's histogram calibrators fail
    from export.quantize import quantize_int8

    _tiny_conv_model(tmp_path / "f.onnx")
    x = np.random.default_rng(0).random((20, 8, 8, 1), dtype=np.float32)
    model = quantize_int8(tmp_path / "f.onnx", x, Recipe("qdq-u8s8", calibration=method))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
