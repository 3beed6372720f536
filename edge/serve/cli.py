"""``edge-serve``: serve an exported murakit model over HTTP (the ``serve`` extra).

Exit codes: 0 after a clean shutdown (SIGTERM / Ctrl-C: requests in flight finish, new
connections are refused); 2 when the server cannot start (extra missing, bad model, unsafe
bind, port in use, bad limit). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import socket
import sys

from edge.cli import DEFAULT_MODEL, MODEL_ENV, default_model
from edge.errors import EdgeError
from edge.serve.limits import Limits, ServeError, check_bind, read_token
from edge.trust import add_trust_arguments

PROG = "edge-serve"
EXTRA_MODULES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
                 "prometheus_client": "prometheus-client"}
MB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    d = Limits()
    p = argparse.ArgumentParser(
        prog=PROG, description="Serve an exported murakit model: POST /v1/predict, GET /v1/model, /healthz, "
                               "/readyz, /metrics and a page at /.",
        epilog=f"Model: --model, else ${MODEL_ENV}, else {DEFAULT_MODEL}. A --host other than loopback needs "
               "--token-file (or --insecure). Exit codes: 0 clean shutdown, 2 cannot start.")
    p.add_argument("--model", help="exported .onnx model (CNN float/INT8 or baseline)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--token-file", help="file holding a bearer token that clients must send")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads (default 1: requests already run in parallel, and "
                        "onnxruntime's own pool spins between runs, taking CPU from decoding)")
    p.add_argument("--workers", type=int, default=d.workers, help="decode/preprocess threads (default %(default)s)")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / MB, help="request body limit in MiB (default %(default)g)")
    p.add_argument("--max-files", type=int, default=d.max_files, help="files (views) per request (default %(default)s)")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="pixels per decoded image (default %(default)s)")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help="requests being scored at once; beyond: 503 + Retry-After (default %(default)s)")
    p.add_argument("--max-uploading", type=int, default=d.max_uploading,
                   help="requests still receiving their body at once; beyond: 503 + Retry-After (default %(default)s)")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                   help="seconds to send a request's headers; beyond: 408 and close (default %(default)g)")
    p.add_argument("--min-upload-kbps", type=float, default=d.min_upload_kbps,
                   help="lowest average upload rate in kilobits/s after the first --header-timeout seconds; "
                        "beyond: 408 and close; 0 = off (default %(default)g)")
    p.add_argument("--keep-alive", type=float, default=d.keep_alive_s,
                   help="seconds an idle kept-alive connection stays open (default %(default)g)")
    p.add_argument("--timeout", type=float, default=d.timeout_s,
                   help="seconds for the upload (beyond: 408), then for scoring (beyond: 504) (default %(default)g)")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per onnxruntime call (default %(default)s)")
    p.add_argument("--max-wait-ms", type=float, default=d.max_wait_ms, help="longest wait to fill a batch (default %(default)g)")
    p.add_argument("--no-batching", action="store_true", help="one onnxruntime call per request")
    p.add_argument("--access-log", action="store_true", help="log every request (stdout)")
    add_dicom_arguments(p)
    p.add_argument("--audit-log", metavar="FILE",
                   help="append one JSON line per prediction request (inputs' SHA-256, model hash, answer; never a "
                        "file name or patient value); a line that cannot be written makes the request a 503")
    p.add_argument("--audit-max-mb", type=float, default=64, help="rotate the audit log at this size (default %(default)g)")
    p.add_argument("--audit-backups", type=int, default=5, help="rotated audit logs kept (default %(default)s)")
    add_trust_arguments(p, "JSON 422 naming the view")
    return p


def add_dicom_arguments(p) -> None:
    """The DICOM node's flags (edge.pacs.node; the pacs extra)."""
    g = p.add_argument_group("DICOM node", "with --dicom-port, this process is also a C-STORE SCP: studies in, "
                             "TID 1500 SR (and CAM SC) results out by C-STORE and/or STOW-RS")
    g.add_argument("--dicom-port", type=int, help="TCP port of the C-STORE SCP (bound on --host; 0 = any free port)")
    g.add_argument("--ae-title", default="MURAKIT", help="the node's AE title (default %(default)s)")
    g.add_argument("--dicom-allow", action="append", default=[], metavar="AET",
                   help="calling AE titles allowed to associate (repeat or comma-separate); required when --host "
                        "is not loopback")
    g.add_argument("--study-quiet-s", type=float, default=10.0,
                   help="a study is complete after this many seconds without a new instance (default %(default)g)")
    g.add_argument("--dicom-dest", action="append", default=[], metavar="AET@HOST:PORT",
                   help="send results by C-STORE to this peer (repeatable)")
    g.add_argument("--stow-url", help="send results by STOW-RS to this DICOMweb base URL (e.g. http://pacs/dicom-web)")
    g.add_argument("--stow-token-file", help="file holding the bearer token for --stow-url")
    g.add_argument("--spool", metavar="DIR",
                   help="the node's spool: received instances and results not yet sent; survives a restart")
    g.add_argument("--spool-max-mb", type=float, default=2048,
                   help="spool size beyond which instances are refused with status A700 (default %(default)g)")
    g.add_argument("--dicom-cam", action="store_true", help="also send one CAM Secondary Capture per view")
    g.add_argument("--retry-base-s", type=float, default=2.0,
                   help="first retry delay of a failed send; doubles per attempt (default %(default)g)")
    g.add_argument("--retry-max-s", type=float, default=300.0, help="longest retry delay (default %(default)g)")


def node_options(args):
    """NodeOptions from the flags, or None without --dicom-port (EdgeError for bad values)."""
    if args.dicom_port is None:
        return None
    from edge.pacs import require
    from edge.pacs.node import Destination, NodeOptions
    from edge.pacs.spool import spool_error
    from edge.serve.limits import is_loopback

    require("pydicom", "highdicom", "pynetdicom", *(["dicomweb_client"] if args.stow_url else []))
    limits = limits_from(args)  # the HTTP bounds, checked, are the node's too
    if not 0 <= args.dicom_port <= 65535:
        raise ServeError(f"--dicom-port must be in [0, 65535], got {args.dicom_port}")
    if not args.spool:
        raise ServeError("--dicom-port needs --spool DIR (received studies and unsent results live there)")
    allow = tuple(a.strip() for item in args.dicom_allow for a in item.split(",") if a.strip())
    if not is_loopback(args.host) and not allow and not args.insecure:
        raise ServeError(f"--host {args.host} exposes the DICOM node: give --dicom-allow AET (or --insecure)")
    if not 1 <= args.spool_max_mb <= 2**30:
        raise ServeError(f"--spool-max-mb must be in [1, 2^30], got {args.spool_max_mb}")
    options = NodeOptions(
        port=args.dicom_port, spool=args.spool, host=args.host, ae_title=args.ae_title, allow=allow,
        quiet_s=args.study_quiet_s, dest=tuple(Destination.parse(d) for d in args.dicom_dest), stow_url=args.stow_url,
        stow_token=read_token(args.stow_token_file) if args.stow_token_file else None, cam=args.dicom_cam,
        max_bytes=limits.max_body_bytes, max_pixels=limits.max_pixels, spool_max_bytes=int(args.spool_max_mb * MB),
        retry_base_s=args.retry_base_s, retry_max_s=args.retry_max_s)
    spool_error(args.spool)  # last: a refused setting leaves no folder behind
    return options


def missing_extra() -> list:
    """Distribution names of the serve extra that are not importable."""
    return [dist for mod, dist in EXTRA_MODULES.items() if importlib.util.find_spec(mod) is None]


def limits_from(args) -> Limits:
    body = args.max_body_mb * MB  # NaN / inf stay floats, which Limits refuses in one line
    return Limits(max_body_bytes=int(body) if math.isfinite(body) else body, max_files=args.max_files,
                  max_pixels=args.max_pixels,
                  max_inflight=args.max_inflight, max_uploading=args.max_uploading,
                  header_timeout_s=args.header_timeout, min_upload_kbps=args.min_upload_kbps,
                  keep_alive_s=args.keep_alive, timeout_s=args.timeout, max_batch=args.max_batch,
                  max_wait_ms=args.max_wait_ms, batching=not args.no_batching, workers=args.workers)


def listen(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (so a busy port is one clear line, and port 0 works)."""
    if not 0 <= port <= 65535:
        raise ServeError(f"--port must be in [0, 65535], got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
    except OSError as e:
        raise ServeError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def prepare(args):
    """Check everything that can fail before serving; returns (predictor, limits, token, socket, audit)."""
    from edge.predictor import Predictor

    limits = limits_from(args)
    check_bind(args.host, args.token_file, args.insecure)
    token = read_token(args.token_file) if args.token_file else None
    audit = open_audit(args)
    predictor = Predictor(args.model or default_model(), threads=args.threads, gate=args.gate,
                          operating_point=args.operating_point)
    warm_up(predictor, limits.max_batch)
    return predictor, limits, token, listen(args.host, args.port), audit


def open_audit(args):
    """The audit log of ``--audit-log`` (None without it); refuses what it cannot keep."""
    if not args.audit_log:
        return None
    from edge.serve.audit import AuditLog

    if not (0.001 <= args.audit_max_mb <= 1e6) or not 0 <= args.audit_backups <= 1000:
        raise ServeError("--audit-max-mb must be in [0.001, 1e6] and --audit-backups in [0, 1000]")
    return AuditLog(args.audit_log, int(args.audit_max_mb * MB), args.audit_backups)


def warm_up(predictor, max_batch: int) -> None:
    """Run the model at batch 1 and at ``max_batch`` once: a model that cannot run fails here."""
    import numpy as np

    size = predictor.config.size
    for n in sorted({1, max_batch}):
        x = predictor.model_input(np.zeros((n, size, size), np.uint8))
        try:
            predictor.probabilities(predictor.run(x))
        except Exception as e:  # noqa: BLE001  onnxruntime raises private exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ServeError(f"{predictor.model_path}: the model does not run on a batch of {n} ({first[:160]})") \
                from None


def main(argv=None) -> int:
    """Entry point of ``edge-serve``; returns the exit code."""
    args = build_parser().parse_args(argv)
    missing = missing_extra()
    if missing:
        print(f"{PROG}: error: the HTTP service needs the serve extra ({', '.join(missing)} missing): "
              "pip install 'murakit[serve]'", file=sys.stderr)
        return 2
    try:
        node = node_options(args)
        predictor, limits, token, sock, audit = prepare(args)
    except EdgeError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    from edge.serve.run import serve

    return serve(predictor, limits, token, sock, access_log=args.access_log, node=node, audit=audit)


if __name__ == "__main__":
    sys.exit(main())
