"""The audit trail of ``edge-serve --audit-log FILE``: one JSON line per answered request.

A service that answers clinical questions keeps a record of what was asked and what it said
(the HIPAA audit-controls rule, IHE ATNA): each line ties an answer to the exact input (the
SHA-256 of every upload) and the exact model (its weights hash). It never holds a file name, a
patient value or an error message (messages may quote a file name); of DICOM it keeps the
UIDs only.

Lines are appended, written with one ``write`` each, and fsync'ed before the answer leaves:
a line that cannot be written (disk full, permission, a rotation that fails) makes the request
a 503 - the service never answers unaudited while auditing is on. The file is rotated by size
(``FILE`` -> ``FILE.1`` -> ... ``FILE.<backups>``, the oldest dropped).

:func:`audit_record` builds a record from the JSON answer itself, so fields other branches add
to the answer (``gate``, ``operating_point``) appear in the log as soon as the answer has them
(null until then); the DICOM node writes the same records.
"""

from __future__ import annotations

import errno
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from edge.serve.limits import ServeError

# keys of one view of the answer that may enter the log (never "path": a client's file name)
VIEW_KEYS = ("probability", "label", "gate", "part", "study_uid", "sop_uid")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_facts(predictor) -> dict:
    """Name and identity of the served model (the weights hash binds a line to one file)."""
    card = predictor.card
    return {"name": predictor.model_path.name, "kind": card.kind, "arch": card.arch, "version": card.version,
            "precision": card.precision, "weights_sha256": card.weights_sha256}


def audit_record(*, request_id: str, client: str | None, endpoint: str, status: int, model: dict,
                 upload_sha256: list, answer: dict | None) -> dict:
    """One audit line from the request's facts and its JSON answer (None when refused).

    Parameters
    ----------
    upload_sha256 : list of str
        SHA-256 (hex) of each upload, in the order sent (empty when the body was never parsed).
    answer : dict or None
        The JSON answer (``edge-predict --json`` keys): one image, or a study with ``views``.

    Returns
    -------
    dict with ``time, request_id, client, endpoint, status, model, operating_point, probability,
    label, threshold, gate, study_uid, views``; ``views`` is one dict per upload: ``sha256`` and
    the :data:`VIEW_KEYS` the answer holds for it (null when it does not).
    """
    answer = answer or {}
    views = answer.get("views") if answer.get("type") == "study" else ([answer] if answer else [])
    per_view = []
    for i, digest in enumerate(upload_sha256):
        view = views[i] if i < len(views) else {}
        per_view.append({"sha256": digest, **{k: view.get(k) for k in VIEW_KEYS}})
    return {"time": utc_now(), "request_id": request_id, "client": client, "endpoint": endpoint, "status": status,
            "model": model, "operating_point": answer.get("operating_point"),
            "probability": answer.get("probability"), "label": answer.get("label"),
            "threshold": answer.get("threshold"), "gate": answer.get("gate"), "study_uid": answer.get("study_uid"),
            "views": per_view}


class AuditLog:
    """An append-only JSON-lines file, fsync'ed per line and rotated by size.

    Parameters
    ----------
    path : path-like
    max_bytes : int
        Rotate before a line would take the file past this size.
    backups : int
        Rotated files kept (``FILE.1`` the newest).

    Raises
    ------
    ServeError
        The file cannot be opened for appending (checked at start, so the service never runs
        with an audit trail it cannot keep).
    """

    def __init__(self, path, max_bytes: int = 64 * 2**20, backups: int = 5):
        self.path = Path(path)
        self.max_bytes, self.backups = int(max_bytes), int(backups)
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ServeError(f"--audit-log {self.path}: cannot open for appending ({e.strerror or e})") from None

    def write(self, record: dict) -> None:
        """Append one line and sync it to disk. Raises OSError when it cannot be kept."""
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._fd = self._open_again()
            size = os.fstat(self._fd).st_size
            if size and size + len(line) > self.max_bytes and self.path.is_file():
                self._rotate()
            written = os.write(self._fd, line)
            if written != len(line):  # a short write: the disk filled up mid-line
                raise OSError(errno.ENOSPC, "short write to the audit log")
            try:
                os.fsync(self._fd)
            except OSError as e:
                if e.errno != errno.EINVAL:  # EINVAL: the file cannot be synced (a device); it was written
                    raise

    def _open_again(self) -> int:
        try:
            return self._open()
        except ServeError as e:
            raise OSError(errno.EIO, str(e)) from None

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = None
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fd = self._open_again()

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
