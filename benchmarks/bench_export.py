"""Speed and size of the exported CNN, side by side in one run (issue 5, "Speed and size").

Measures on this machine, with threads set explicitly for both frameworks:

* batch-1 and batch-32 latency (median of many runs) of the Keras model at its fastest
  (a compiled ``tf.function``, with and without XLA; never ``model.predict``) vs onnxruntime
  float vs onnxruntime INT8 (static QDQ);
* model file sizes;
* wall time of whole processes: ``edge-predict image.png`` vs a Python process that loads
  the Keras model to predict the same image vs a bare ``python -c "import onnxruntime, cv2, numpy"``.

Usage::

    python benchmarks/bench_export.py --run runs/default        # the run's exported models
    python benchmarks/bench_export.py                           # a fresh default-arch model (untrained;
                                                                # latency and size do not depend on training)

Prints a table and the issue's targets; ``--json PATH`` also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="run folder with cnn/best.keras and export/cnn.onnx, cnn.int8.onnx")
    p.add_argument("--size", type=int, default=128, help="input size of the fresh model without --run")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for TF and onnxruntime")
    p.add_argument("--repeats", type=int, default=200, help="timed batch-1 runs (batch 32: a fifth)")
    p.add_argument("--processes", type=int, default=5, help="runs of each whole-process measurement")
    p.add_argument("--json", help="also write the figures to this JSON file")
    return p.parse_args(argv)


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------- models
def fresh_models(tmp: Path, size: int) -> dict:
    """Build, export and quantize a default-arch CNN into ``tmp`` (no run available)."""
    import onnx

    import deep
    from deep.config import ModelConfig
    from export.cnn import export_cnn
    from export.quantize import quantize_int8

    model = deep.build_model(ModelConfig(size=size))
    model.save(tmp / "best.keras")
    x = np.random.default_rng(0).random((8, size, size, 1), dtype=np.float32)
    proto, _ = export_cnn(deep.cam_model(model), size, x[:2])
    onnx.save(proto, str(tmp / "cnn.onnx"))
    calib = np.random.default_rng(1).random((64, size, size, 1), dtype=np.float32)
    onnx.save(quantize_int8(tmp / "cnn.onnx", calib), str(tmp / "cnn.int8.onnx"))
    return {"keras": tmp / "best.keras", "float": tmp / "cnn.onnx", "int8": tmp / "cnn.int8.onnx"}


def run_models(run: Path) -> dict:
    paths = {"keras": run / "cnn" / "best.keras", "float": run / "export" / "cnn.onnx",
             "int8": run / "export" / "cnn.int8.onnx"}
    for p in paths.values():
        if not p.is_file() and p != paths["int8"]:
            sys.exit(f"bench_export: {p} is missing (train and export the run first)")
    if not paths["int8"].is_file():  # export refused INT8 on this machine (export.json says why)
        import onnx

        from export.quantize import quantize_int8

        calib = np.random.default_rng(1).random((64, *_input_shape(paths["float"])), dtype=np.float32)
        paths["int8"] = Path(tempfile.mkdtemp(prefix="bench-export-")) / "cnn.int8.onnx"
        onnx.save(quantize_int8(paths["float"], calib), str(paths["int8"]))
    return paths


def _input_shape(path) -> tuple:
    import onnxruntime as ort

    return tuple(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1:])


def sample_image(tmp: Path, paths: dict) -> Path:
    """A real golden source image when the run has one, else a synthetic radiograph."""
    golden = paths["float"].parent / "golden" / "cnn" / "test_data_set_0" / "source.png"
    if golden.is_file():
        return golden
    import cv2

    rng = np.random.default_rng(0)
    img = np.full((320, 256), 25, np.float32)
    img[40:-40, 50:-50] = 100
    img[60:-60, 110:150] = 210
    path = tmp / "image.png"
    cv2.imwrite(str(path), np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8))
    return path


# ---------------------------------------------------------------- in-process latency
def configure_tf(threads: int) -> None:
    """Fix TensorFlow's thread pools; must run before TF executes anything."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def keras_latency(path: Path, size: int, threads: int, repeats: int) -> dict:
    import tensorflow as tf

    import deep

    model = deep.load_model(path)
    out = {}
    for jit in (False, True):
        fn = tf.function(lambda x: model(x, training=False), jit_compile=jit)
        for b, n in ((1, repeats), (32, max(10, repeats // 5))):
            x = tf.constant(np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32))
            out[f"b{b}_{'xla' if jit else 'graph'}"] = median_ms(lambda fn=fn, x=x: fn(x).numpy(), n)
    for b in (1, 32):
        out[f"b{b}"] = min(out[f"b{b}_graph"], out[f"b{b}_xla"])
    return out


def ort_latency(path: Path, size: int, threads: int, repeats: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = {}
    for b, n in ((1, repeats), (32, max(10, repeats // 5))):
        x = np.random.default_rng(b).random((b, size, size, 1), dtype=np.float32)
        out[f"b{b}"] = median_ms(lambda x=x: sess.run(None, {"image": x}), n)
    return out


# ---------------------------------------------------------------- whole processes
KERAS_SCRIPT = """
import sys, numpy as np
import deep
from edge.preprocess import PreprocessConfig, preprocess, to_model_input
model = deep.load_model(sys.argv[1])
size = int(model.inputs[0].shape[1])
x = to_model_input(preprocess(sys.argv[2], PreprocessConfig(size=size)))[None]
print(float(model(x, training=False).numpy().ravel()[0]))
"""


def process_ms(cmd: list, runs: int, env: dict) -> float:
    """Median wall time of a whole process in milliseconds (one untimed warm-up for the page cache)."""
    times = []
    for i in range(runs + 1):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=ROOT)
        if i:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def edge_predict_cmd() -> list:
    script = Path(sys.executable).parent / "edge-predict"
    return [str(script)] if script.exists() else [sys.executable, "-c",
                                                 "import sys; from edge.cli import predict_main; sys.exit(predict_main())"]


def process_times(paths: dict, image: Path, threads: int, runs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return {
        "edge_predict": process_ms(edge_predict_cmd() + [str(image), "--model", str(paths["float"]),
                                                         "--threads", str(threads)], runs, env),
        "keras_process": process_ms([sys.executable, "-c", KERAS_SCRIPT, str(paths["keras"]), str(image)], runs, env),
        "bare_imports": process_ms([sys.executable, "-c", "import onnxruntime, cv2, numpy"], runs, env),
    }


# ---------------------------------------------------------------- report
def report(r: dict) -> str:
    k, f, q, s, p = r["keras_ms"], r["float_ms"], r["int8_ms"], r["bytes"], r["process_ms"]
    lines = [
        f"CNN {r['size']} px, {r['threads']} threads, {r['source']}",
        f"{'':22}{'batch 1 (ms)':>14}{'batch 32 (ms)':>15}{'size (KiB)':>12}",
        f"{'Keras tf.function':22}{k['b1_graph']:>14.2f}{k['b32_graph']:>15.2f}{s['keras'] / 1024:>12.0f}",
        f"{'Keras tf.function XLA':22}{k['b1_xla']:>14.2f}{k['b32_xla']:>15.2f}",
        f"{'onnxruntime float':22}{f['b1']:>14.2f}{f['b32']:>15.2f}{s['float'] / 1024:>12.0f}",
        f"{'onnxruntime INT8':22}{q['b1']:>14.2f}{q['b32']:>15.2f}{s['int8'] / 1024:>12.0f}",
        "",
        (f"whole process: edge-predict {p['edge_predict']:.0f} ms, Keras process {p['keras_process']:.0f} ms, "
         f"bare imports {p['bare_imports']:.0f} ms"),
        "",
        "targets:",
        f"  ORT float vs fastest Keras, batch 1: {k['b1'] / f['b1']:.1f}x faster (target >= 4x)",
        f"  INT8 / float file size: {s['int8'] / s['float']:.2f}x (target <= 0.35x)",
        (f"  INT8 / float latency: batch 1 {q['b1'] / f['b1']:.2f}x, batch 32 {q['b32'] / f['b32']:.2f}x "
         "(target <= 1.0x)"),
        f"  Keras process / edge-predict: {p['keras_process'] / p['edge_predict']:.1f}x (target >= 15x)",
        f"  edge-predict / bare imports: {p['edge_predict'] / p['bare_imports']:.2f}x (target <= 1.5x)",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure_tf(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        paths = run_models(Path(args.run)) if args.run else fresh_models(tmp, args.size)
        import onnxruntime as ort

        size = int(ort.InferenceSession(str(paths["float"]), providers=["CPUExecutionProvider"])
                   .get_inputs()[0].shape[1])
        image = sample_image(tmp, paths)
        r = {"size": size, "threads": args.threads,
             "source": f"run {args.run}" if args.run else "fresh untrained default-arch model",
             "bytes": {k: p.stat().st_size for k, p in paths.items()},
             "float_ms": ort_latency(paths["float"], size, args.threads, args.repeats),
             "int8_ms": ort_latency(paths["int8"], size, args.threads, args.repeats),
             "keras_ms": keras_latency(paths["keras"], size, args.threads, args.repeats // 2),
             "process_ms": process_times(paths, image, args.threads, args.processes)}
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
