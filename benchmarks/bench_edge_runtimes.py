"""Edge runtimes side by side (issue 16): INT8 vs float, onnxruntime vs TFLite, OpenCV DNN and Keras.

One command, every target, interleaved in one process (models take turns call by call; each
round gives one median per model; a ratio is the median of the per-round ratios, [min, max]):

* INT8 / float latency at batch 1 and 32 (2 threads) for every INT8 recipe export considers on
  this CPU (plus two it rejects, S8S8 and per-tensor, on the first two models), on the default
  CNN and on realistic backbones (MobileNetV3-Small and DenseNet-169 at 224 px, built with
  ``weights=None``: latency does not depend on the weights). Target: <= 0.8x where the CPU has
  integer dot-product instructions.
* onnxruntime / TFLite float latency at batch 1 and 8, 1 and 2 threads, for the exported graph
  (hard-swish fused), tf2onnx's graph as converted, session optimisation level BASIC, an
  offline-optimised file, and thread-pool spinning off. Target: <= 1.0x.
* onnxruntime / OpenVINO float32 (CPU plugin, static batch, 1 and 2 threads, batch 1 and 32),
  and OpenVINO at its default precision (bf16 on AMX / AVX-512 BF16 CPUs), when the bench
  extra is installed (``pip install 'murakit[bench]'``): every CPU that runs it re-measures
  the device runtime against Intel's. ``--openvino-only`` runs just this comparison.
* OpenCV DNN and Keras (compiled ``tf.function``) on the same inputs, for context.
* ``--profile``: onnxruntime's per-op-type time of float vs the first INT8 recipe (why INT8
  does or does not pay), and of tf2onnx's graph before the hard-swish fusion.
* with ``--run``: the validation study-AUROC drop of each INT8 recipe and calibration method
  (MinMax, Percentile, Entropy) on the run's trained CNN (the accuracy half of the recipe choice).

Usage::

    python benchmarks/bench_edge_runtimes.py [--run runs/default] [--backbones mobilenetv3small,densenet169]
                                             [--rounds 7] [--profile] [--json OUT]

Takes ~40 min on a loaded 2-core machine, most of it DenseNet-169 (``--backbones mobilenetv3small``: ~10).

``--run``: the run's trained CNN (RUN/cnn/best.keras) is the default model; without it a fresh
default-arch model is built (latency does not depend on training).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="run folder whose RUN/cnn/best.keras is the default CNN")
    p.add_argument("--backbones", default="mobilenetv3small,densenet169",
                   help="comma-separated deep.ModelConfig archs besides the default CNN ('' for none)")
    p.add_argument("--backbone-size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds per comparison (default 7)")
    p.add_argument("--profile", action="store_true", help="also print onnxruntime per-op profiles")
    p.add_argument("--json", help="also write every figure to this JSON file")
    p.add_argument("--openvino-only", action="store_true",
                   help="only onnxruntime against OpenVINO (needs the bench extra: pip install 'murakit[bench]')")
    return p.parse_args(argv)


# ---------------------------------------------------------------- models
def keras_models(run, backbones: list, backbone_size: int) -> dict:
    """{name: (keras model, size)}: the default CNN (trained when --run) and the backbone."""
    import keras

    import deep
    from deep.config import ModelConfig

    keras.utils.set_random_seed(0)
    out = {}
    best = Path(run) / "cnn" / "best.keras" if run else None
    if best is not None and best.is_file():
        model = deep.load_model(best)
        out["default CNN (trained)"] = (model, int(model.inputs[0].shape[1]))
    else:
        out["default CNN (fresh)"] = (deep.build_model(ModelConfig()), ModelConfig().size)
    for arch in backbones:
        out[f"{arch} @{backbone_size}"] = (deep.build_model(ModelConfig(arch=arch, size=backbone_size)), backbone_size)
    return out


def export_variants(model, size: int, tmp: Path, tag: str) -> dict:
    """ONNX files of one model: as exported, tf2onnx's graph unfused, and offline-optimised copies."""
    import onnx
    import onnxruntime as ort

    import deep
    from export.cnn import to_onnx

    cam = deep.cam_model(model)
    paths = {"float": tmp / f"{tag}.onnx", "unfused": tmp / f"{tag}.unfused.onnx"}
    onnx.save(to_onnx(cam, size), str(paths["float"]))
    onnx.save(to_onnx(cam, size, fuse=False), str(paths["unfused"]))
    for level, name in ((ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "offline_basic"),
                        (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "offline_all")):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.optimized_model_filepath = str(tmp / f"{tag}.{name}.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(paths["float"]), opts, providers=["CPUExecutionProvider"])
        paths[name] = tmp / f"{tag}.{name}.onnx"
    return paths


def int8_variants(float_path: Path, size: int, tmp: Path, tag: str, rejected: bool = True) -> dict:
    """{recipe name: INT8 path}: export's candidates for this CPU (plus the rejected S8S8 and per-tensor)."""
    import onnx

    from edge.cpu import cpu_info
    from export.quantize import Recipe, candidate_recipes, quantize_int8

    calib = np.random.default_rng(1).random((32, size, size, 1), dtype=np.float32)
    recipes = candidate_recipes(cpu_info()) + ([Recipe("qdq-s8s8 (rejected)", activations="s8"),
                                                Recipe("qdq-u8s8-per-tensor (rejected)", per_channel=False)]
                                               if rejected else [])
    out = {}
    for r in recipes:
        path = tmp / f"{tag}.{r.name.split()[0]}.onnx"
        onnx.save(quantize_int8(float_path, calib, r), str(path))
        out[r.name] = path
    return out


def tflite_variants(model, size: int) -> dict:
    import deep
    from export.tflite import to_tflite

    cam = deep.cam_model(model)
    calib = np.random.default_rng(1).random((32, size, size, 1), dtype=np.float32)
    return {"tflite": to_tflite(cam), "tflite_int8": to_tflite(cam, calib)}


# ---------------------------------------------------------------- runners
def ort_fn(path, threads: int, x: np.ndarray, level=None, disable_all=False, spin=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    if not spin:  # idle pool threads sleep instead of spinning (helps when other processes hold the cores)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if disable_all:  # an offline-optimised file: already transformed
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif level is not None:
        opts.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    return lambda: sess.run(None, feed)


def tflite_fn(content: bytes, threads: int, x: np.ndarray):
    from export.tflite import TfliteRunner

    runner = TfliteRunner(content, threads)
    return lambda: runner.run(x)


def opencv_fn(path, threads: int, x: np.ndarray):
    import cv2

    cv2.setNumThreads(threads)
    net = cv2.dnn.readNetFromONNX(str(path))
    blob = np.ascontiguousarray(x)

    def run():
        net.setInput(blob)
        return net.forward()

    run()  # fails here when OpenCV cannot run the graph
    return run


def openvino_fn(path, threads: int, x: np.ndarray, precision: str | None = "f32"):
    """OpenVINO's CPU plugin on the same ONNX file, the batch fixed to ``x``'s (static shapes,
    as a device would compile it). ``precision`` "f32" keeps float32 maths (the comparison with
    onnxruntime); None leaves OpenVINO's default, which is bf16 on CPUs with AMX / AVX-512 BF16."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    model.reshape({model.inputs[0].get_any_name(): list(x.shape)})
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    request = core.compile_model(model, "CPU", config).create_infer_request()
    feed = {0: np.ascontiguousarray(x)}
    return lambda: request.infer(feed)


def openvino_default_precision() -> str:
    """The CPU plugin's default inference precision on this CPU (bf16 with AMX / AVX-512 BF16)."""
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return getattr(hint, "get_type_name", lambda: str(hint))()


def openvino_version() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version()


def keras_fn(model, x: np.ndarray):
    import tensorflow as tf

    infer = tf.function(lambda t: model(t, training=False))
    t = tf.constant(x)
    return lambda: infer(t).numpy()


def measure(fns: dict, base: str, rounds: int, batch: int) -> dict:
    from export.speed import interleaved_ms, ratio_summary

    return ratio_summary(interleaved_ms(fns, rounds=rounds, calls=max(2, 48 // batch)), base)


# ---------------------------------------------------------------- the three comparisons
def int8_vs_float(paths: dict, int8: dict, size: int, rounds: int, threads: int = 2) -> dict:
    out = {}
    for b in (1, 32):
        x = np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32)
        fns = {"float": ort_fn(paths["float"], threads, x), **{k: ort_fn(p, threads, x) for k, p in int8.items()}}
        out[f"batch_{b}"] = measure(fns, "float", rounds, b)
    return out


def ort_vs_tflite(paths: dict, tfl: dict, size: int, rounds: int) -> dict:
    import onnxruntime as ort

    out = {}
    for threads in (1, 2):
        for b in (1, 8):
            x = np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32)
            fns = {"tflite": tflite_fn(tfl["tflite"], threads, x),
                   "onnxruntime (exported)": ort_fn(paths["float"], threads, x),
                   "onnxruntime (tf2onnx graph)": ort_fn(paths["unfused"], threads, x),
                   "onnxruntime level BASIC": ort_fn(paths["float"], threads, x,
                                                     level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
                   "onnxruntime offline BASIC file": ort_fn(paths["offline_basic"], threads, x),
                   "onnxruntime offline ALL file": ort_fn(paths["offline_all"], threads, x, disable_all=True),
                   "onnxruntime no spinning": ort_fn(paths["float"], threads, x, spin=False),
                   "tflite INT8": tflite_fn(tfl["tflite_int8"], threads, x)}
            out[f"threads_{threads}_batch_{b}"] = measure(fns, "tflite", rounds, b)
    return out


def ort_vs_openvino(paths: dict, size: int, rounds: int) -> dict:
    """onnxruntime (the device runtime) / OpenVINO float32 at 1 and 2 threads, batch 1 and 32,
    plus OpenVINO at its default precision (bf16 where the CPU has it) for context. Checks that
    both runtimes give the same probabilities before timing."""
    from export.cnn import onnx_outputs

    out = {}
    for threads in (1, 2):
        for b in (1, 32):
            x = np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32)
            ov32 = openvino_fn(paths["float"], threads, x)
            fns = {"openvino f32": ov32, "onnxruntime (exported)": ort_fn(paths["float"], threads, x),
                   f"openvino default ({openvino_default_precision()})": openvino_fn(paths["float"], threads, x,
                                                                                        precision=None)}
            diff = np.abs(np.asarray(ov32()["probability"]) - onnx_outputs(paths["float"], x)["probability"]).max()
            if diff > 1e-4:
                print(f"  (OpenVINO f32 and onnxruntime differ by {diff:.2g} at batch {b}; timed anyway)")
            out[f"threads_{threads}_batch_{b}"] = measure(fns, "openvino f32", rounds, b)
    return out


def context(model, paths: dict, tfl: dict, size: int, rounds: int, threads: int = 2) -> dict:
    out = {}
    for b in (1, 8):
        x = np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32)
        fns = {"onnxruntime": ort_fn(paths["float"], threads, x), "tflite": tflite_fn(tfl["tflite"], threads, x),
               "keras tf.function": keras_fn(model, x)}
        try:
            fns["opencv dnn"] = opencv_fn(paths["float"], threads, x)
        except Exception as e:  # noqa: BLE001  OpenCV raises cv2.error for graphs it cannot import
            print(f"  (OpenCV DNN cannot run this graph: {str(e).strip().splitlines()[-1][:120]})")
        out[f"batch_{b}"] = measure(fns, "onnxruntime", rounds, b)
    return out


def session_ms(paths: dict, repeats: int = 5) -> dict:
    """Median session-creation time (ms): the exported file vs the offline ALL-level file."""
    import onnxruntime as ort

    def create(path, disable):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if disable:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        t = time.perf_counter()
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return (time.perf_counter() - t) * 1e3

    return {"exported": float(np.median([create(paths["float"], False) for _ in range(repeats)])),
            "offline ALL file": float(np.median([create(paths["offline_all"], True) for _ in range(repeats)]))}


# ---------------------------------------------------------------- profiles
# ops onnxruntime fuses into a preceding Conv (or moves across it: Transpose, scale Mul)
FUSED_INTO_CONV = ("Relu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh", "LeakyRelu", "Add", "Transpose", "Mul")


def conv_kinds(path) -> dict:
    """{Conv node name or output name: "conv 1x1" | "conv depthwise" | "conv stem" | "conv kxk"}."""
    import onnx

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    kinds = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "QLinearConv"):
            continue
        w = node.input[1] if node.op_type == "Conv" else node.input[3]
        if w not in init and w in producer:  # QDQ: weight behind a DequantizeLinear
            w = producer[w].input[0]
        dims = init[w].dims
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kind = ("conv stem (<= 4 input ch)" if dims[1] * group <= 4 else "conv depthwise" if group > 1
                else "conv 1x1" if dims[2] == dims[3] == 1 else "conv kxk")
        kinds[node.name] = kinds[node.output[0]] = kind
    for node in model.graph.node:  # onnxruntime names a fused Conv(+activation, +Add) after the last output
        if node.op_type in FUSED_INTO_CONV and node.output[0] not in kinds:
            kind = next((kinds[i] for i in node.input if i in kinds), None)
            if kind:
                kinds[node.output[0]] = kinds.setdefault(node.name, kind)
    return kinds


def _category(event_name: str, op: str, kinds: dict) -> str:
    """Profile category of one kernel event: conv kind, layout, quantize/dequantize, or the op type."""
    node = event_name[:-len("_kernel_time")]
    if op in ("Conv", "QLinearConv", "FusedConv"):  # ORT renames: "<output>_nchwc", "<node>_token_N"
        for key in (node.removesuffix("_nchwc"), node.split("_token_")[0]):
            if key in kinds:
                return kinds[key]
        return "conv (unmapped)"
    if op in ("ReorderInput", "ReorderOutput", "Transpose"):
        return "layout reorder/transpose"
    if op in ("QuantizeLinear", "DequantizeLinear"):
        return "quantize/dequantize"
    return op


def op_profile(path, size: int, batch: int, threads: int = 1) -> dict:
    """{category: ms per run} from onnxruntime's profiler (after the session's own rewrites):
    each node's median over the runs (the first runs allocate), summed per category."""
    import onnxruntime as ort

    runs = 15 if batch <= 8 else 5
    kinds = conv_kinds(path)
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.enable_profiling, opts.profile_file_prefix = True, str(Path(tmp) / "prof")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((batch, size, size, 1), dtype=np.float32)
        for _ in range(runs):
            sess.run(None, {"image": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node, category = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append(e["dur"] / 1e3)
            category[e["name"]] = _category(e["name"], e["args"]["op_name"], kinds)
    agg = collections.defaultdict(float)
    for node, durations in per_node.items():
        agg[category[node]] += float(np.median(durations))
    return dict(sorted(agg.items(), key=lambda kv: -kv[1]))


def int8_accuracy(run) -> dict:
    """{recipe/calibration: val study AUROC drop} of the run's exported float CNN (RUN/export/cnn.onnx)."""
    from dataclasses import replace

    from edge.cpu import cpu_info
    from export.cnn import onnx_outputs
    from export.quantize import candidate_recipes, int8_gate, quantize_int8
    from murakit.data.prepared import load_prepared
    from murakit.pipeline.export import CALIBRATION_COUNT, _gate_score, cache_inputs, first_by_path

    float_path = Path(run) / "export" / "cnn.onnx"
    prep = load_prepared(run)
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    x_val, calib = cache_inputs(prep, val), cache_inputs(prep, first_by_path(prep, "train", CALIBRATION_COUNT))
    ref = onnx_outputs(float_path, x_val)["probability"]
    out = {}
    for recipe in candidate_recipes(cpu_info()):
        for method in ("minmax", "percentile", "entropy"):
            q = quantize_int8(float_path, calib, replace(recipe, calibration=method))
            gate = int8_gate(ref, onnx_outputs(q, x_val)["probability"], _gate_score(prep, val))
            out[f"{recipe.name} / {method}"] = {k: gate[k] for k in ("float_auroc", "int8_auroc", "auroc_drop",
                                                                      "max_abs_diff")}
            print(f"  {recipe.name:24s} {method:10s} val study AUROC {gate['float_auroc']:.4f} -> "
                  f"{gate['int8_auroc']:.4f} (drop {gate['auroc_drop']:+.4f}), max |p diff| {gate['max_abs_diff']:.3f}",
                  flush=True)
    return out


# ---------------------------------------------------------------- printing
def table(title: str, rows: dict, base: str) -> str:
    lines = [title]
    for name, v in rows.items():
        ratio = "" if name == base else f"{v['ratio']:6.2f}x [{v['ratio_min']:.2f}, {v['ratio_max']:.2f}]"
        lines.append(f"  {name:34s}{v['ms']:10.2f} ms  {ratio}")
    return "\n".join(lines)


def profile_table(profiles: dict, top: int = 12) -> str:
    """Columns: one profile each; rows: categories by total time."""
    cats = sorted({c for p in profiles.values() for c in p}, key=lambda c: -sum(p.get(c, 0) for p in profiles.values()))
    lines = ["  " + f"{'ms per run':30s}" + "".join(f"{k:>26s}" for k in profiles)]
    for c in cats[:top]:
        lines.append(f"  {c:30s}" + "".join(f"{p.get(c, 0.0):26.2f}" for p in profiles.values()))
    lines.append(f"  {'total (kernels)':30s}" + "".join(f"{sum(p.values()):26.2f}" for p in profiles.values()))
    return "\n".join(lines)


def _print_openvino(name: str, rows: dict | None) -> dict | None:
    if rows is None:
        print(f"\n{name}: OpenVINO not installed (pip install 'murakit[bench]'); no OpenVINO column")
        return None
    for key, r in rows.items():
        print(table(f"\n{name}: / OpenVINO float32, {key.replace('_', ' ')}", r, "openvino f32"), flush=True)
    return rows


def run_model(name, model, size, tmp, rounds, profile, rejected=True, openvino_only=False) -> dict:
    from edge.cpu import cpu_info
    from export.quantize import candidate_recipes

    tag = name.split()[0]
    paths = export_variants(model, size, tmp, tag)
    if openvino_only:
        return {"size": size, "ort_vs_openvino": _print_openvino(name, ort_vs_openvino(paths, size, rounds))}
    int8 = int8_variants(paths["float"], size, tmp, tag, rejected)
    tfl = tflite_variants(model, size)
    r = {"size": size, "int8_vs_float": int8_vs_float(paths, int8, size, rounds),
         "ort_vs_tflite": ort_vs_tflite(paths, tfl, size, rounds), "context": context(model, paths, tfl, size, rounds),
         "session_ms": session_ms(paths)}
    for key, rows in r["int8_vs_float"].items():
        print(table(f"\n{name}: INT8 / float, onnxruntime, 2 threads, {key.replace('_', ' ')} (target <= 0.8x)",
                    rows, "float"), flush=True)
    for key, rows in r["ort_vs_tflite"].items():
        print(table(f"\n{name}: / TFLite float, {key.replace('_', ' ')} (target onnxruntime <= 1.0x)", rows, "tflite"),
              flush=True)
    for key, rows in r["context"].items():
        print(table(f"\n{name}: context, 2 threads, {key.replace('_', ' ')}", rows, "onnxruntime"), flush=True)
    r["ort_vs_openvino"] = _print_openvino(name, ort_vs_openvino(paths, size, rounds) if openvino_version() else None)
    s = r["session_ms"]
    print(f"\n{name}: session creation {s['exported']:.0f} ms (exported file) vs {s['offline ALL file']:.0f} ms "
          "(offline ALL-level file, optimisations off)")
    if profile:
        first = candidate_recipes(cpu_info())[0].name
        r["profile"] = {}
        for b in (1, 32):
            profs = {label: op_profile(path, size, b) for label, path in
                     (("float", paths["float"]), (f"INT8 {first}", int8[first]),
                      ("float tf2onnx graph", paths["unfused"]))}
            r["profile"][f"batch_{b}"] = profs
            print(f"\n{name}: onnxruntime kernel time by category, batch {b}, 1 thread (node medians)")
            print(profile_table(profs), flush=True)
    return r


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import onnxruntime

    from edge.cpu import cpu_info, describe

    cpu = cpu_info()
    print(f"CPU: {describe(cpu)}; features: {', '.join(cpu['features']) or 'unknown'}")
    print(f"onnxruntime {onnxruntime.__version__}, TensorFlow {tf.__version__}, OpenVINO "
          f"{openvino_version() or 'not installed'}; {args.rounds} interleaved rounds; "
          f"ratios: median of per-round ratios [min, max]; load average {os.getloadavg()[0]:.1f}")
    if args.openvino_only and not openvino_version():
        print("bench_edge_runtimes: --openvino-only needs OpenVINO: pip install 'murakit[bench]'", file=sys.stderr)
        return 2
    results = {"cpu": cpu, "onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__,
               "openvino": openvino_version(), "rounds": args.rounds, "models": {}}
    from murakit.quiet import quiet_frameworks

    with quiet_frameworks(), tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        backbones = [b for b in args.backbones.split(",") if b]
        for k, (name, (model, size)) in enumerate(keras_models(args.run, backbones, args.backbone_size).items()):
            results["models"][name] = run_model(name, model, size, Path(tmp), args.rounds, args.profile, k < 2,
                                                args.openvino_only)
        if args.run and not args.openvino_only and (Path(args.run) / "export" / "cnn.onnx").is_file():
            print(f"\nINT8 accuracy on {args.run}'s validation split (per recipe and calibration method):")
            results["int8_accuracy"] = int8_accuracy(args.run)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
