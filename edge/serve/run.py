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


TIMEOUT_BODY = b'{"error": "request headers not received in time; the connection is closed"}'
TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
               b"content-length: " + str(len(TIMEOUT_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + TIMEOUT_BODY)


def protocol_class(header_timeout_s: float):
    """uvicorn's HTTP protocol (httptools, else h11) with a deadline on request headers.

    uvicorn bounds an idle kept-alive connection but not one that sends its headers a byte at a
    time (or nothing at all after connecting): each would hold a socket for ever. Here every
    request's headers must be complete within ``header_timeout_s`` of the connection's opening
    or of the request's first byte; otherwise the client gets 408 (silence when it sent
    nothing) and the connection is closed. The timer is armed by the transport callbacks and
    costs nothing per byte.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
        headers_done = "on_headers_complete"
    except ImportError:  # httptools missing: uvicorn's pure-Python h11 protocol
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base
        headers_done = None

    class Protocol(Base):
        _timer = None
        _awaiting = True  # between requests: the next bytes start a request's headers
        _got_bytes = False

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def data_received(self, data):
            if self._awaiting and data:
                self._got_bytes = True
                if self._timer is None:
                    self._arm()
            super().data_received(data)
            if headers_done is None and self.cycle is not None and not self.cycle.response_complete:
                self._headers_complete()  # h11: a request event was handled in data_received

        def _headers_complete(self):
            self._awaiting = False
            self._disarm()

        def on_response_complete(self):
            super().on_response_complete()
            self._awaiting, self._got_bytes = True, False  # idle now: uvicorn's keep-alive bound applies

        def connection_lost(self, exc):
            self._disarm()
            super().connection_lost(exc)

        def _arm(self):
            self._disarm()
            self._timer = self.loop.call_later(header_timeout_s, self._expired)

        def _disarm(self):
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self):
            self._timer = None
            if not self._awaiting or self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a (pipelined) request is being answered: its own limits apply
            if self._got_bytes:
                self.transport.write(TIMEOUT_408)
            self.transport.close()

    if headers_done:
        def on_headers_complete(self):
            self._headers_complete()
            Base.on_headers_complete(self)

        Protocol.on_headers_complete = on_headers_complete
    return Protocol


def serve(predictor, limits, token, sock, access_log: bool = False, node=None, audit=None) -> int:
    """Serve until SIGTERM/SIGINT on the listening socket ``sock``; returns the exit code.

    ``node`` (:class:`edge.pacs.node.NodeOptions`) adds the DICOM node: bound before the HTTP
    service announces its URL (a busy DICOM port is exit 2, not a half-started service) and
    stopped after the HTTP side drained. ``audit`` (:class:`edge.serve.audit.AuditLog`) writes
    one record per prediction request.
    """
    import uvicorn

    from edge.serve.app import create_app

    app = create_app(predictor, limits, token, audit)
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_config=LOG_CONFIG, access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=limits.timeout_s + 5, server_header=False,
                            # a backstop behind our own 503s: connections beyond this get uvicorn's 503
                            limit_concurrency=limits.max_uploading + limits.max_inflight + 64,
                            timeout_keep_alive=limits.keep_alive_s, http=protocol_class(limits.header_timeout_s))
    server = _server_class()(config)
    server.service = app.state.service
    url_host = f"[{host}]" if ":" in host else host
    dicom = _start_node(predictor, node, app.state.service.metrics.registry, audit) if node is not None else None
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


def _start_node(predictor, options, registry, audit=None):
    """The DICOM node running, or False (after one stderr line) when it cannot listen."""
    import sys

    from edge.errors import EdgeError
    from edge.pacs.node import DicomNode

    try:
        node = DicomNode(predictor, options, registry, audit)
        host, port = node.start()
    except EdgeError as e:
        print(f"edge-serve: error: {e}", file=sys.stderr)
        return False
    sends = [f"C-STORE {d.ae_title}@{d.host}:{d.port}" for d in options.dest] + \
        (["STOW-RS " + options.stow_url] if options.stow_url else [])
    node.banner = f"edge-serve: DICOM node {options.ae_title} on {host}:{port} (results by {', '.join(sends)})"
    return node
