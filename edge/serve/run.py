"""Run the app under uvicorn with graceful shutdown and logs on stdout only.

Logs go to stdout, never stderr: the image decoder may capture file descriptor 2 while it
decodes (to turn a codec's warning into an error), and a log line written there from another
thread at that moment would be taken for the codec's.
"""

from __future__ import annotations

import signal

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s edge-serve %(levelname)s: %(message)s"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["stdout"], "level": "WARNING"},  # any other library's warning: stdout too
    "loggers": {
        "uvicorn": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "edge.serve": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
    },
}


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn.Server that marks the service as draining on SIGTERM/SIGINT, then exits 0.

        uvicorn stops accepting connections and waits for requests in flight; ``draining``
        makes ``/readyz`` and new predictions on kept-alive connections answer 503 meanwhile.
        """

        service = None

        def handle_exit(self, sig, frame):
            if self.service is not None:
                self.service.draining = True
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal after its graceful shutdown (the process would die
            # by SIGTERM); the shutdown was clean, so the process exits 0 instead.
            if sig == signal.SIGTERM and hasattr(self, "_captured_signals"):
                self._captured_signals.clear()

    return Server


def serve(predictor, limits, token, sock, access_log: bool = False, node=None) -> int:
    """Serve until SIGTERM/SIGINT on the listening socket ``sock``; returns the exit code.

    ``node`` (:class:`edge.pacs.node.NodeOptions`) adds the DICOM node: bound before the HTTP
    service announces its URL (a busy DICOM port is exit 2, not a half-started service) and
    stopped after the HTTP side drained.
    """
    import uvicorn

    from edge.serve.app import create_app

    app = create_app(predictor, limits, token)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_config=LOG_CONFIG, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=limits.timeout_s + 5, server_header=False,
                            # a backstop below our own 503: connections beyond this get uvicorn's 503
                            limit_concurrency=4 * limits.max_inflight + 64, timeout_keep_alive=5)
    server = _server_class()(config)
    server.service = app.state.service
    url_host = f"[{host}]" if ":" in host else host
    dicom = _start_node(predictor, node, app.state.service.metrics.registry) if node is not None else None
    if dicom is False:
        return 2
    print(f"edge-serve: serving {predictor.model_path.name} ({predictor.kind}) on http://{url_host}:{port}/",
          flush=True)
    if dicom:
        print(dicom.banner, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        if dicom:
            dicom.stop()
    return 0


def _start_node(predictor, options, registry):
    """The DICOM node running, or False (after one stderr line) when it cannot listen."""
    import sys

    from edge.errors import EdgeError
    from edge.pacs.node import DicomNode

    try:
        node = DicomNode(predictor, options, registry)
        host, port = node.start()
    except EdgeError as e:
        print(f"edge-serve: error: {e}", file=sys.stderr)
        return False
    sends = [f"C-STORE {d.ae_title}@{d.host}:{d.port}" for d in options.dest] + \
        (["STOW-RS " + options.stow_url] if options.stow_url else [])
    node.banner = f"edge-serve: DICOM node {options.ae_title} on {host}:{port} (results by {', '.join(sends)})"
    return node
