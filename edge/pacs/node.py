"""``edge-serve --dicom-port``: a DICOM node in the same process as the HTTP service.

In: a C-STORE SCP (pynetdicom) with C-ECHO. It accepts Computed Radiography, Digital X-Ray
For Presentation and For Processing images; any other storage SOP class is negotiated but
refused with status 0122 (SOP class not supported), so the sender learns why. Calling AE
titles outside ``--dicom-allow`` are rejected at association; the called AE title must be
``--ae-title``. Each instance is bounded like an HTTP upload (``--max-body-mb`` bytes,
``--max-pixels`` pixels; beyond: status A700; an association streaming far more is aborted
mid-transfer) and goes to the spool, the only place the node writes (:mod:`edge.pacs.spool`).

Scoring: a study is complete once ``--study-quiet-s`` seconds passed without a new instance of
it. Its views are scored together (the MURA protocol, as ``edge-predict STUDY`` does) and the
answer becomes a TID 1500 SR (and, with ``--dicom-cam``, CAM Secondary Captures) by
:mod:`edge.pacs.results`. Instances of the study arriving later start a new result.

Out: each result is queued in the spool for every destination - C-STORE to ``--dicom-dest
AET@HOST:PORT`` and/or STOW-RS to ``--stow-url`` (bearer token from ``--stow-token-file``) - and
deleted only once that destination confirmed it. A failed send is retried with exponential
backoff (``--retry-base-s`` doubling up to ``--retry-max-s``), also after a restart; it is
never dropped, and each failure is one log line and a ``/metrics`` count.

Metrics (Prometheus, in edge-serve's registry): ``edge_serve_dicom_received_total`` (instances
accepted), ``edge_serve_dicom_refused_total{reason}``, ``edge_serve_dicom_scored_total``
(studies), ``edge_serve_dicom_sent_total{destination}`` (objects delivered),
``edge_serve_dicom_retried_total{destination}`` (attempts after a failure),
``edge_serve_dicom_failed_total{stage}`` (failed send attempts, unscorable studies) and the
gauge ``edge_serve_dicom_spool_pending`` (results waiting).

Logs never hold a patient value: study UIDs, SOP class names, counts and status codes only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import EdgeError, first_line
from edge.pacs.spool import Spool, safe_uid

log = logging.getLogger("edge.serve.dicom")

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
ACCEPTED_CLASSES = (CR, DX_PRESENTATION, DX_PROCESSING)
# C-STORE statuses (PS3.4 B.2.3 and PS3.7 C.4.2.1.4)
SUCCESS, REFUSED_CLASS, OUT_OF_RESOURCES, NOT_MATCHING, CANNOT_UNDERSTAND = 0x0000, 0x0122, 0xA700, 0xA900, 0xC000
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image
TICK_S = 0.1
MAX_SEND_BATCH = 64  # results per association / sending round
ABORT_SLACK = 1024 * 1024  # bytes beyond --max-body-mb an association may send before it is aborted


@dataclass(frozen=True)
class Destination:
    """A C-STORE peer: ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        aet, sep, addr = text.partition("@")
        host, _, port = addr.rpartition(":")
        ok = sep and 1 <= len(aet) <= 16 and host and port.isdigit() and 0 < int(port) < 65536
        if not ok or any(c in aet for c in "\\") or not aet.isprintable():
            raise EdgeError(f"--dicom-dest must be AET@HOST:PORT (AE title of 1-16 characters), got {text!r}")
        return cls(aet, host.strip("[]"), int(port))


@dataclass(frozen=True)
class NodeOptions:
    """Everything ``edge-serve``'s DICOM flags say (see :func:`edge.serve.cli.build_parser`)."""

    port: int
    spool: Path
    host: str = "127.0.0.1"
    ae_title: str = "MURAKIT"
    allow: tuple = ()
    quiet_s: float = 10.0
    dest: tuple = ()  # of Destination
    stow_url: str | None = None
    stow_token: str | None = None
    cam: bool = False
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 36_000_000
    spool_max_bytes: int = 2 * 1024 ** 3
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    destinations: tuple = field(init=False, default=())

    def __post_init__(self):
        if not 1 <= len(self.ae_title) <= 16:
            raise EdgeError(f"--ae-title must have 1-16 characters, got {self.ae_title!r}")
        if not self.dest and not self.stow_url:
            raise EdgeError("--dicom-port needs somewhere to send results: --dicom-dest AET@HOST:PORT and/or --stow-url URL")
        if self.stow_url is not None and not self.stow_url.startswith(("http://", "https://")):
            raise EdgeError(f"--stow-url must be an http:// or https:// DICOMweb base URL, got {self.stow_url!r}")
        if not 0.05 <= self.quiet_s <= 3600:
            raise EdgeError(f"--study-quiet-s must be in [0.05, 3600], got {self.quiet_s}")
        if not 0.01 <= self.retry_base_s <= self.retry_max_s <= 86400:
            raise EdgeError("--retry-base-s and --retry-max-s: 0.01 <= base <= max <= 86400")
        names = tuple(f"dimse-{d.ae_title}@{d.host}:{d.port}" for d in self.dest) + (("stow",) if self.stow_url else ())
        object.__setattr__(self, "destinations", tuple(_safe_name(n) for n in names))


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in text)


class NodeMetrics:
    """The node's counters, registered in edge-serve's Prometheus registry."""

    def __init__(self, registry):
        from prometheus_client import Counter, Gauge

        self.received = Counter("edge_serve_dicom_received", "DICOM instances accepted by C-STORE", registry=registry)
        self.refused = Counter("edge_serve_dicom_refused", "DICOM instances refused", ["reason"], registry=registry)
        self.scored = Counter("edge_serve_dicom_scored", "DICOM studies scored", registry=registry)
        self.sent = Counter("edge_serve_dicom_sent", "Result objects delivered", ["destination"], registry=registry)
        self.retried = Counter("edge_serve_dicom_retried", "Send attempts after a failure", ["destination"],
                               registry=registry)
        self.failed = Counter("edge_serve_dicom_failed", "Failed send attempts and unscorable studies", ["stage"],
                              registry=registry)
        self.pending = Gauge("edge_serve_dicom_spool_pending", "Result objects waiting to be sent", registry=registry)


def quiet_libraries() -> None:
    """pynetdicom and dicomweb-client log per association / request (and, at debug, data set
    contents): the node logs for them, one line per event that matters."""
    for name in ("pynetdicom", "dicomweb_client", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


class DicomNode:
    """The C-STORE SCP, the study assembler and one sender per destination.

    Parameters
    ----------
    predictor : edge.predictor.Predictor
    options : NodeOptions
    registry : prometheus_client.CollectorRegistry
    audit : edge.serve.audit.AuditLog, optional
        edge-serve's ``--audit-log``: one record per scored study (endpoint ``dicom:c-store``,
        the calling AE and address, each instance's SHA-256, the answer). A record that cannot
        be written keeps the study in the spool unsent (it is scored again after a restart):
        the node never sends a result it could not audit.
    """

    def __init__(self, predictor, options: NodeOptions, registry, audit=None):
        self.predictor, self.options, self.audit = predictor, options, audit
        self.senders: dict = {}  # study UID -> "AET@address" of the association that sent it last
        self.metrics = NodeMetrics(registry)
        self.spool = Spool(options.spool, options.spool_max_bytes)
        self.spool.recover_work()
        self.last_seen = {uid: time.monotonic() for uid in self.spool.incoming_studies()}
        self.seen_lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads: list = []
        self.server = None
        self.inbound: dict = {}  # association -> bytes received since its last C-STORE
        self.banner = ""  # what edge-serve prints once the node listens
        self.metrics.pending.set(self.spool.n_pending())

    # ------------------------------------------------------------ lifecycle
    def start(self) -> tuple:
        """Bind the SCP and start the threads; returns the bound (host, port)."""
        from pynetdicom import AE, evt

        quiet_libraries()
        ae = AE(ae_title=self.options.ae_title)
        ae.require_called_aet = True
        if self.options.allow:
            ae.require_calling_aet = list(self.options.allow)
        ae.maximum_associations = 8
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        _support_storage(ae)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: SUCCESS),
                    (evt.EVT_DATA_RECV, self._on_data), (evt.EVT_CONN_CLOSE, lambda e: self.inbound.pop(e.assoc, None))]
        try:
            self.server = ae.start_server((self.options.host, self.options.port), block=False, evt_handlers=handlers)
        except OSError as e:
            raise EdgeError(f"cannot listen for DICOM on {self.options.host}:{self.options.port} "
                            f"({e.strerror or e})") from None
        self._thread(self._assemble, "edge-serve-dicom-studies")
        for dest in self.options.destinations:
            self._thread(lambda d=dest: self._send_loop(d), f"edge-serve-dicom-send-{dest[:20]}")
        return self.server.server_address[:2]

    def _thread(self, fn, name: str) -> None:
        t = threading.Thread(target=self._guarded(fn), name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _guarded(self, fn):
        def run():
            while not self.stopping.is_set():
                try:
                    fn()
                    return
                except Exception as e:  # noqa: BLE001  a loop must outlive one bad study or peer
                    log.error("DICOM node: %s failed (%s); continuing", threading.current_thread().name,
                              type(e).__name__)
                    self.stopping.wait(1.0)
        return run

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(timeout=10)

    # ------------------------------------------------------------ in
    def _refuse(self, reason: str, status: int) -> int:
        self.metrics.refused.labels(reason).inc()
        return status

    def _on_data(self, event) -> None:
        """Every PDU: an association sending far more than one instance's byte bound before its
        C-STORE completes is aborted, so no peer can make the node buffer an unbounded data set
        (pynetdicom assembles the whole data set in memory before the C-STORE handler runs)."""
        n = self.inbound.get(event.assoc, 0) + len(event.data)
        self.inbound[event.assoc] = n
        if n > self.options.max_bytes + ABORT_SLACK:
            self.inbound[event.assoc] = -(1 << 62)  # abort once
            self.metrics.refused.labels("too_large").inc()
            log.warning("DICOM node: aborted an association sending more than %d bytes for one instance",
                        self.options.max_bytes)
            event.assoc.abort(block=False)

    def _on_store(self, event) -> int:
        """C-STORE: check class, size, pixels and UIDs; spool; never raise (status instead)."""
        self.inbound[event.assoc] = 0
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in ACCEPTED_CLASSES:
            log.warning("DICOM node: refused a %s instance (not CR/DX)", _class_name(sop_class))
            return self._refuse("sop_class", REFUSED_CLASS)
        raw = event.request.DataSet.getbuffer().nbytes
        if raw > self.options.max_bytes:
            return self._refuse("too_large", OUT_OF_RESOURCES)
        try:
            ds = event.dataset
            rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
            study, sop = safe_uid(ds.get("StudyInstanceUID")), safe_uid(ds.get("SOPInstanceUID"))
        except Exception:  # noqa: BLE001  any parse error of a peer's bytes is a status, not a crash
            return self._refuse("unreadable", CANNOT_UNDERSTAND)
        if rows * cols > self.options.max_pixels:
            return self._refuse("too_many_pixels", OUT_OF_RESOURCES)
        if not study or not sop or not rows or not cols or sop != str(event.request.AffectedSOPInstanceUID):
            return self._refuse("missing_uid_or_pixels", NOT_MATCHING)
        data = event.encoded_dataset(include_meta=True)
        try:
            stored = self.spool.add_instance(study, sop, data)
        except OSError:
            stored = False
        if not stored:
            log.warning("DICOM node: spool full or unwritable; refused an instance (status A700)")
            return self._refuse("spool_full", OUT_OF_RESOURCES)
        with self.seen_lock:
            self.last_seen[study] = time.monotonic()
            requestor = event.assoc.requestor
            self.senders[study] = f"{str(requestor.ae_title).strip()}@{requestor.address}"
        self.metrics.received.inc()
        return SUCCESS

    # ------------------------------------------------------------ scoring
    def _due_studies(self) -> list:
        now = time.monotonic()
        with self.seen_lock:
            due = [uid for uid, t in self.last_seen.items() if now - t >= self.options.quiet_s]
            for uid in due:
                del self.last_seen[uid]
        return due

    def _assemble(self) -> None:
        while not self.stopping.wait(TICK_S):
            for uid in self._due_studies():
                folder = self.spool.claim(uid)
                if folder is not None:
                    self._score(uid, folder)

    def _score(self, uid: str, folder: Path) -> None:
        from edge.cam import overlay
        from edge.pacs.results import study_results
        from edge.predictor import StudyGroup

        views = sorted(folder.glob("*.dcm"))
        try:
            result = self.predictor.predict_group(StudyGroup(folder, uid, views), cam=self._want_cam())
            overlays = [overlay(v.image, v.cam) for v in result.views] if self._want_cam() else None
            answer = result.to_dict()
            objects = study_results(answer, self.predictor.card, overlays=overlays)
        except Exception as e:  # noqa: BLE001  one study the model or highdicom cannot take must not stop the node
            why = _no_path(e, folder) if isinstance(e, EdgeError) else f"unexpected {type(e).__name__}"
            self.metrics.failed.labels("score").inc()
            log.error("DICOM node: study %s (%d views) not scored: %s", uid, len(views), why)
            if self._audited(uid, views, 422 if isinstance(e, EdgeError) else 500, None):
                self.spool.release(folder)
            return
        if not self._audited(uid, views, 200, answer):
            return  # kept in the spool's work folder: scored again (and audited) after a restart
        for ds in objects:
            self.spool.add_result(list(self.options.destinations), ds.SOPInstanceUID, _encode(ds))
        self.spool.release(folder)
        self.metrics.scored.inc()
        self.metrics.pending.set(self.spool.n_pending())
        log.info("DICOM node: study %s scored (%d views, p=%.4f, %s); %d result objects queued", uid,
                 len(views), result.probability, result.label, len(objects))

    def _audited(self, uid: str, views: list, status: int, answer: dict | None) -> bool:
        """Write the study's audit record (when auditing is on); False when it could not be kept."""
        if self.audit is None:
            return True
        import hashlib
        import uuid

        from edge.serve.audit import audit_record, model_facts

        with self.seen_lock:
            client = self.senders.pop(uid, None)
        record = audit_record(request_id=uuid.uuid4().hex, client=client, endpoint="dicom:c-store", status=status,
                              model=model_facts(self.predictor), answer=answer,
                              upload_sha256=[hashlib.sha256(v.read_bytes()).hexdigest() for v in views])
        try:
            self.audit.write(record)
            return True
        except (OSError, ValueError) as e:
            self.metrics.failed.labels("audit").inc()
            log.error("DICOM node: the audit log cannot be written (%s); study %s kept unsent in the spool",
                      getattr(e, "strerror", None) or type(e).__name__, uid)
            return False

    def _want_cam(self) -> bool:
        return self.options.cam and self.predictor.has_cam

    # ------------------------------------------------------------ out
    def _send_loop(self, dest: str) -> None:
        """Send what is due, oldest first. Each result's retry time is read from the spool once
        and then kept in memory, so thousands of results waiting for a PACS that is down cost a
        directory listing per tick, not thousands of file reads."""
        due_at: dict = {}
        while not self.stopping.wait(TICK_S):
            now = time.time()
            pending = self.spool.pending(dest)
            due_at = {p: due_at[p] if p in due_at else float(self.spool.state(p).get("next", 0)) for p in pending}
            due = [p for p in pending if due_at[p] <= now][:MAX_SEND_BATCH]
            if due:
                for path, next_time in self._send(dest, due).items():
                    due_at[path] = next_time

    def _backoff(self, attempts: int) -> float:
        return min(self.options.retry_max_s, self.options.retry_base_s * 2 ** max(0, attempts - 1))

    def _send(self, dest: str, paths: list) -> dict:
        """Send ``paths`` to ``dest``; returns {path: next attempt time} of those that failed."""
        states = {p: self.spool.state(p) for p in paths}
        for p in paths:
            if states[p].get("attempts", 0):
                self.metrics.retried.labels(dest).inc()
        sender = self._stow if dest == "stow" else self._cstore
        retry = {}
        for path, error in zip(paths, sender(dest, paths)):
            if error is None:
                self.spool.delivered(path)
                self.metrics.sent.labels(dest).inc()
                continue
            wait = self._backoff(int(states[path].get("attempts", 0)) + 1)
            attempts = self.spool.failed(path, wait, error)
            retry[path] = time.time() + wait
            self.metrics.failed.labels("send").inc()
            log.warning("DICOM node: sending a result to %s failed (attempt %d: %s); retrying in %.1f s",
                        dest, attempts, error, wait)
        self.metrics.pending.set(self.spool.n_pending())
        return retry

    def _cstore(self, dest: str, paths: list) -> list:
        """One association for the batch; per file None (sent) or the error text."""
        import pydicom
        from pynetdicom import AE

        peer = next(d for d in self.options.dest if dest == _safe_name(f"dimse-{d.ae_title}@{d.host}:{d.port}"))
        ae = AE(ae_title=self.options.ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        for uid in (SR_CLASS, SC_CLASS):
            ae.add_requested_context(uid, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
        if not assoc.is_established:
            return ["association refused or peer unreachable"] * len(paths)
        out = []
        try:
            for path in paths:
                try:
                    status = assoc.send_c_store(pydicom.dcmread(path))
                except Exception as e:  # noqa: BLE001  a broken association mid-batch
                    out.append(f"C-STORE failed ({type(e).__name__})")
                    continue
                code = int(getattr(status, "Status", -1)) if status else -1
                ok = code == 0 or 0xB000 <= code <= 0xBFFF  # success, or success with a warning
                out.append(None if ok else ("no response" if code < 0 else f"C-STORE status {code:04X}"))
        finally:
            if assoc.is_established:
                assoc.release()
        return out

    def _stow(self, dest: str, paths: list) -> list:
        import pydicom
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.trust_env = False  # no proxy from the environment: the URL is the PACS
        headers = {"Authorization": f"Bearer {self.options.stow_token}"} if self.options.stow_token else None
        client = DICOMwebClient(self.options.stow_url, session=session, headers=headers, timeout=30)
        client.set_http_retry_params(retry=False)  # the spool retries: counted, persisted, with its own backoff
        out = []
        for path in paths:
            try:
                client.store_instances([pydicom.dcmread(path)])
                out.append(None)
            except requests.HTTPError as e:
                out.append(f"STOW-RS HTTP {getattr(e.response, 'status_code', '?')}")
            except Exception as e:  # noqa: BLE001  connection refused, timeouts, bad responses
                out.append(f"STOW-RS failed ({type(e).__name__})")
        session.close()
        return out


def _support_storage(ae) -> None:
    """Every storage SOP class is negotiable (so a refusal is a C-STORE status the sender can
    read, not a silently rejected presentation context), plus Verification for C-ECHO."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)


def _class_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name != uid else "unknown-class"


def _encode(ds) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _no_path(error: Exception, folder: Path) -> str:
    """The error's line without the spool path (a log names the study, not files)."""
    return first_line(error, 300).replace(str(folder) + "/", "").replace(str(folder), "<study>")
