"""``edge-predict`` and ``edge-verify``: the device-side command lines (onnxruntime only).

Exit codes (both commands): 0 success; 1 some inputs failed (edge-predict) or outputs drifted
beyond tolerance (edge-verify); 2 nothing could run (bad model, bad golden folder, bad usage);
141 (edge-predict) the reader of its output went away (``edge-predict ... | head -3``): the
command stops quietly, as a Unix tool killed by SIGPIPE would. Errors are one line on stderr,
never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from edge.errors import EdgeError
from edge.parallel import AUTO_MIN_FILES
from edge.predictor import StudyPrediction
from edge.trust import NOT_A_RADIOGRAPH, add_trust_arguments, refusal_text

DEFAULT_MODEL = Path("runs") / "default" / "export" / "cnn.onnx"
MODEL_ENV = "MURAKIT_MODEL"


def default_model() -> Path:
    """``$MURAKIT_MODEL`` if set, else ``runs/default/export/cnn.onnx`` (what `make demo` writes)."""
    return Path(os.environ.get(MODEL_ENV) or DEFAULT_MODEL)


EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
MAX_CAM_SUFFIX = 10_000


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (``prog: error: ...``) and exits 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def max_threads() -> int:
    """Upper bound of ``--threads``: 4 x the usable CPU cores, at most 256. More threads than
    that only add memory (each onnxruntime thread has its own stack and scratch buffers)."""
    from edge.cpu import usable_cores

    return max(1, min(256, 4 * usable_cores()))


def workers_arg(text: str) -> int:
    """argparse type of ``--workers``: an integer in 1..:func:`max_threads`."""
    return threads_arg(text)


def threads_arg(text: str) -> int:
    """argparse type of ``--threads``: an integer in 1..:func:`max_threads`."""
    top = max_threads()
    try:
        n = int(text)
    except ValueError:
        n = None
    if n is None or not 1 <= n <= top:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {top} (4 x the CPU cores), got {text!r}")
    return n


# ---------------------------------------------------------------- edge-predict
def build_predict_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="edge-predict",
        description="Score radiographs with an exported murakit model (onnxruntime only). "
                    "A directory argument is a study: its views' probabilities are averaged.",
        epilog=f"Model: --model, else ${MODEL_ENV}, else {DEFAULT_MODEL} (relative to the current "
               "folder). Exit codes: 0 all inputs scored, 1 some inputs failed, 2 unusable model.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE",
                   help="image files (.png/.jpg, DICOM with the dicom extra) or study folders "
                        "(DICOM views are grouped into studies by StudyInstanceUID)")
    p.add_argument("--model", help="exported .onnx model (CNN float/INT8 or baseline)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per input and line: path, type, probability, label, threshold, "
                        "preprocess_ms, inference_ms (studies add n_views and views; DICOM adds study_uid, "
                        "sop_uid and part)")
    p.add_argument("--cam", metavar="DIR",
                   help="write CAM heatmap overlays (CNN models) into DIR, named after the image's "
                        "patient/study/view folders (patient11_study1_positive_image1_cam.png); an existing "
                        "file is never overwritten: the new overlay gets the next free _2, _3, ... name")
    p.add_argument("--threads", type=threads_arg,
                   help=f"onnxruntime intra-op threads, 1..{max_threads()} (default: all cores; 1 while "
                        "--workers > 1 preprocess in a pool)")
    p.add_argument("--dicom-out", metavar="DIR",
                   help="also write, per DICOM study, a TID 1500 Structured Report of the result into "
                        "DIR/<StudyInstanceUID>/ (same study as the source, a new series; needs the pacs extra)")
    p.add_argument("--dicom-cam", action="store_true",
                   help="with --dicom-out: also one Secondary Capture per view with the CAM overlay "
                        "(CNN models; derived, marked NOT FOR DIAGNOSTIC USE)")
    p.add_argument("--workers", type=workers_arg,
                   help="processes that decode and preprocess the image files ahead of the model, "
                        f"1..{max_threads()} (default: all cores from {AUTO_MIN_FILES} files on, else 1); "
                        "output and exit codes are the same for every value")
    add_trust_arguments(p, "one stderr line each, exit 1")
    p.add_argument("--strict-part", action="store_true",
                   help="refuse DICOM inputs whose BodyPartExamined is not one of the seven MURA parts "
                        "(default: score them with a warning)")
    return p


build_parser = build_predict_parser


def _err(prog: str, msg: str) -> None:
    print(f"{prog}: error: {msg}", file=sys.stderr)


def cam_basename(image_path) -> str:
    """Overlay file stem for an image: its study's patient and study folders and its own stem
    (MURA: ``.../patient11/study1_positive/image1.png`` -> ``patient11_study1_positive_image1_cam``),
    reduced to letters, digits, ``.``, ``_`` and ``-``."""
    p = Path(os.path.abspath(image_path))
    names = [p.parent.parent.name, p.parent.name, p.stem]
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip(".-")[:60] for n in names]
    return "_".join(n for n in safe if n) + "_cam"


def _link_exclusive(tmp: str, target: Path) -> bool:
    """Publish ``tmp`` as ``target`` unless ``target`` exists; True when published. A hard link
    is atomic and refuses an existing name; where links are unsupported, an O_EXCL placeholder
    claims the name and the finished file replaces it."""
    try:
        os.link(tmp, target)
        return True
    except FileExistsError:
        return False
    except OSError:
        pass
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    os.replace(tmp, target)
    return True


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` to ``folder/stem+suffix``, or ``stem_2``, ``stem_3``... if taken: never
    overwrites (another run, another process), never leaves a half-written file under the
    final name. Returns the path written."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        for i in range(1, MAX_CAM_SUFFIX + 1):
            target = folder / (f"{stem}{suffix}" if i == 1 else f"{stem}_{i}{suffix}")
            if _link_exclusive(tmp, target):
                return target
        raise EdgeError(f"{folder}: {MAX_CAM_SUFFIX:,} files named {stem}*{suffix} already; clear the folder")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_cam(cam_dir: Path, pred) -> str:
    import cv2

    from edge.cam import overlay

    ok, png = cv2.imencode(".png", overlay(pred.image, pred.cam))
    if not ok:
        raise EdgeError(f"{pred.path}: cannot encode the CAM overlay")
    try:
        return str(write_new_file(cam_dir, cam_basename(pred.path), ".png", png.tobytes()))
    except OSError as e:
        raise EdgeError(f"{cam_dir}: cannot write the CAM overlay ({e.strerror or e})") from None


def _text_line(pred, indent: str = "") -> str:
    if pred.refused:
        return f"{indent}{pred.path}: not scored (input gate)"
    return (f"{indent}{pred.path}: {pred.label}  p={pred.probability:.4f}  threshold={pred.threshold:.4f}  "
            f"preprocess {pred.preprocess_ms:.1f} ms  inference {pred.inference_ms:.1f} ms")


def _check_part_predicted(views, prog: str) -> None:
    """Warn when the header or path names another body part than the model sees."""
    for v in views:
        if v.part and v.part_predicted and v.part != v.part_predicted and not v.refused:
            print(f"{prog}: warning: {v.path}: the header/path says {v.part}, the model sees "
                  f"{v.part_predicted} (p={v.part_probability:.2f})", file=sys.stderr)


def _check_gate(result, views, prog: str) -> int:
    """One stderr line per view the gate refused (``--gate refuse``) or flagged (``warn``);
    returns how many were refused. A study keeps its other views; with none left it is refused."""
    refused = 0
    for v in views:
        if v.gate is None or v.gate["passed"]:
            continue
        if v.refused:
            refused += 1
            _err(prog, refusal_text(v.path, v.gate))
        else:
            print(f"{prog}: warning: {v.path}: {NOT_A_RADIOGRAPH} (gate score {v.gate['score']:.3f} > "
                  f"{v.gate['threshold']:.3f}); scored anyway (--gate warn)", file=sys.stderr)
    if isinstance(result, StudyPrediction) and refused:
        if result.probability is None:
            _err(prog, f"{result.path}: study not scored: the input gate refused all of its {len(views)} views")
        else:
            print(f"{prog}: warning: {result.path}: study scored on {len(views) - refused} of its "
                  f"{len(views)} views (the input gate refused {refused})", file=sys.stderr)
    return refused


def _jobs(predictor, src: str, want_cam: bool, prog: str, prefetch=None) -> list:
    """One job per result: an image, or each study of a folder (DICOM views grouped by
    StudyInstanceUID). A job returns (result, [image predictions])."""
    from edge.predictor import study_groups

    def image():
        pred = predictor.predict(src, cam=want_cam)
        if prefetch is not None and prefetch.last_ms is not None:
            pred.preprocess_ms = prefetch.last_ms  # measured in the worker that did it
        return pred, [pred]

    def study(group):
        result = predictor.predict_group(group, cam=want_cam)
        return result, result.views

    if not Path(src).is_dir():
        return [image]
    groups = study_groups(src)
    for path, reason in groups[0].skipped:
        print(f"{prog}: note: {path}: skipped ({reason})", file=sys.stderr)
    return [lambda g=g: study(g) for g in groups]


def _check_parts(result, views, strict: bool, prog: str) -> None:
    """Warn (or, with --strict-part, refuse) when a DICOM view is not an upper-extremity radiograph."""
    from edge.dicom import part_warning

    for v in views:
        for fallback in getattr(v.dicom, "fallbacks", ()):  # a header value broke the standard
            print(f"{prog}: warning: {v.path}: {fallback}", file=sys.stderr)
        why = part_warning(v.dicom)
        if why and strict and v.dicom.body_part is not None and v.dicom.part is None:
            raise EdgeError(f"{v.path}: {why}; refused (--strict-part)")
        if why:
            print(f"{prog}: warning: {v.path}: {why}; the model was not trained on it", file=sys.stderr)


def _report(result, views, as_json: bool, cam_paths: list) -> None:
    if as_json:
        d = result.to_dict()
        if cam_paths:
            d["cam"] = cam_paths if len(cam_paths) > 1 or d["type"] == "study" else cam_paths[0]
        print(json.dumps(d), flush=True)
        return
    if isinstance(result, StudyPrediction):
        for v in views:
            print(_text_line(v, "  "))
        uid = f" [study {result.study_uid}]" if result.study_uid else ""
        if result.probability is None:
            print(f"{result.path}{uid} (study, {len(views)} views): not scored (input gate)")
            return
        print(f"{result.path}{uid} (study, {len(views)} views, mean): {result.label}  p={result.probability:.4f}  "
              f"threshold={result.threshold:.4f}  preprocess {result.preprocess_ms:.1f} ms  "
              f"inference {result.inference_ms:.1f} ms")
    elif not result.refused:
        print(_text_line(result))
    for c in cam_paths:
        print(f"  cam: {c}")


def _quiet_closed_streams() -> None:
    """After a broken pipe: point stdout/stderr at /dev/null so the interpreter's final flush
    cannot raise again (that would print 'Exception ignored ... BrokenPipeError')."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, ValueError, OSError):  # replaced streams (tests) have no fd
            pass
    os.close(devnull)


def _check_dicom_out(args) -> None:
    """--dicom-out / --dicom-cam usable here: a folder, and the pacs extra installed."""
    if args.dicom_cam and not args.dicom_out:
        raise EdgeError("--dicom-cam needs --dicom-out DIR (the Secondary Captures go there)")
    if args.dicom_out:
        if Path(args.dicom_out).exists() and not Path(args.dicom_out).is_dir():
            raise EdgeError(f"--dicom-out {args.dicom_out}: exists and is not a folder")
        from edge.pacs import require

        require("pydicom", "highdicom")


def _write_dicom_results(args, predictor, result, views, want_cam: bool) -> None:
    """The study's SR (and, with --dicom-cam, its CAM Secondary Captures) into --dicom-out."""
    from edge.cam import overlay
    from edge.pacs.results import NOT_DICOM, is_dicom_answer, write_study_results

    answer = result.to_dict()
    if not is_dicom_answer(answer):  # PNG/JPEG: the answer stands, the SR cannot exist
        print(f"edge-predict: note: {result.path}: {NOT_DICOM}", file=sys.stderr)
        return
    overlays = [overlay(v.image, v.cam) for v in views] if want_cam and args.dicom_cam else None
    paths = write_study_results(answer, predictor.card, args.dicom_out, overlays)
    if not args.json:
        for path in paths:
            print(f"  dicom: {path}")


def predict_main(argv=None) -> int:
    """Entry point of ``edge-predict``; returns the exit code."""
    args = build_predict_parser().parse_args(argv)
    try:
        code = _predict(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # the reader went away (`| head`): stop, quietly
        _quiet_closed_streams()
        return EXIT_PIPE


def _predict(args) -> int:
    import contextlib

    from edge.parallel import Prefetcher, auto_workers, plain_files

    prog = "edge-predict"
    if args.cam and Path(args.cam).exists() and not Path(args.cam).is_dir():
        _err(prog, f"--cam {args.cam}: exists and is not a folder")
        return 2
    files = plain_files(args.inputs)
    workers = args.workers or auto_workers(len(files))
    # the pool starts before the model opens: forked workers copy no inference threads
    pooled = workers > 1 and len(files) > 1
    # the pool's workers keep every core busy decoding: a second inference thread in the parent
    # only competes with them (docs/performance.md, "edge-predict over many files")
    threads = 1 if pooled and args.threads is None else args.threads
    with Prefetcher(files, workers) if pooled else contextlib.nullcontext() as prefetch:
        return _predict_all(args, prog, prefetch, threads)


def _predict_all(args, prog: str, prefetch, threads: int | None) -> int:
    from edge.predictor import Predictor

    try:
        _check_dicom_out(args)
        predictor = Predictor(args.model or default_model(), threads=threads, gate=args.gate,
                              operating_point=args.operating_point)
    except EdgeError as e:
        _err(prog, str(e))
        return 2
    if prefetch is not None:
        prefetch.start(predictor.config, predictor.preprocess)
        predictor.preprocess = prefetch.preprocess
    want_cam = bool(args.cam or args.dicom_cam) and predictor.has_cam
    if args.dicom_cam and not predictor.has_cam:
        print(f"{prog}: note: CAM is not available for {predictor.kind} models; no Secondary Captures written",
              file=sys.stderr)
    if args.cam and not predictor.has_cam:
        print(f"{prog}: note: CAM is not available for {predictor.kind} models; no overlays written",
              file=sys.stderr)
    failed = 0
    for src in args.inputs:
        try:
            jobs = _jobs(predictor, src, want_cam, prog, prefetch)
        except EdgeError as e:
            failed += 1
            _err(prog, str(e))
            continue
        for job in jobs:
            try:
                result, views = job()
                _check_parts(result, views, args.strict_part, prog)
                failed += 1 if _check_gate(result, views, prog) else 0
                _check_part_predicted(views, prog)
                cams = [_write_cam(Path(args.cam), v) for v in views if v.cam is not None] if want_cam and args.cam else []
                _report(result, views, args.json, cams)
                sys.stdout.flush()
                if args.dicom_out:
                    _write_dicom_results(args, predictor, result, views, want_cam)
            except BrokenPipeError:
                raise
            except EdgeError as e:
                failed += 1
                _err(prog, str(e))
            except Exception as e:  # noqa: BLE001  a device must keep going over the other inputs
                failed += 1
                _err(prog, f"{src}: unexpected failure ({type(e).__name__})")
    return 1 if failed else 0


# ---------------------------------------------------------------- edge-verify
def build_verify_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog="edge-verify",
        description="Rerun a model's golden set (source PNGs -> edge preprocessing -> model, and the "
                    "recorded inputs -> model) and compare with the outputs recorded at export.",
        epilog="Tolerances come from the golden manifest: float models max |diff| <= 1e-4; INT8 models "
               "2 x their recorded INT8-vs-float disagreement + 1e-3. Exit codes: 0 pass, 1 drift, "
               "2 unusable model or golden folder.")
    p.add_argument("model", help="exported .onnx model")
    p.add_argument("golden", nargs="?", help="golden folder (default: golden/<model stem> next to MODEL)")
    p.add_argument("--threads", type=threads_arg, help=f"onnxruntime intra-op threads, 1..{max_threads()}")
    p.add_argument("--json", action="store_true", help="print one JSON summary line instead of a table")
    return p


def verify_main(argv=None) -> int:
    """Entry point of ``edge-verify``; returns the exit code."""
    from edge.golden import format_report, verify_golden
    from edge.predictor import Predictor

    args = build_verify_parser().parse_args(argv)
    try:
        report = verify_golden(Predictor(args.model, threads=args.threads), args.golden)
    except EdgeError as e:
        _err("edge-verify", str(e))
        return 2
    if args.json:
        print(json.dumps({"model": report.model, "golden": report.golden, "passed": report.passed,
                          "cases": len(report.cases), "worst": report.worst(),
                          "tolerances": report.tolerances}))
    else:
        print(f"model:  {report.model}\ngolden: {report.golden}")
        print(format_report(report))
    return 0 if report.passed else 1


def main(argv=None) -> int:
    """Alias of :func:`predict_main` (the package's main command)."""
    return predict_main(argv)


if __name__ == "__main__":
    sys.exit(predict_main())
