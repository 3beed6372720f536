"""Results where hospitals read them: DICOM SR and CAM Secondary Captures, a DICOM node.

* :mod:`edge.pacs.results` turns a JSON answer (``edge-predict --json``, ``edge-serve``,
  ``murakit score``) for a DICOM study into a TID 1500 Structured Report in the source study,
  and CAM overlays into Secondary Capture images marked derived and not for diagnosis.
* :mod:`edge.pacs.node` is ``edge-serve --dicom-port``: a C-STORE SCP that collects studies,
  scores them once they are quiet and sends the results by C-STORE or STOW-RS from a spool.

Needs the ``pacs`` extra (highdicom, pynetdicom, dicomweb-client on top of ``dicom``). Those
are imported only here, when a result is written or the node starts, so the base edge
install stays numpy + OpenCV + onnxruntime.
"""

from __future__ import annotations

from edge.errors import EdgeError

EXTRA_HINT = "pip install 'murakit[pacs]'"


def require(*modules: str) -> None:
    """Raise one :class:`EdgeError` line naming the extra when a module is not installed.

    Only looked up, not imported: highdicom takes a second or two to import, which the
    first result pays instead of every start-up.
    """
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise EdgeError(f"DICOM results need the pacs extra ({name} is missing): {EXTRA_HINT}") from None
