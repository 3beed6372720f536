"""``edge-serve``: an exported murakit model as a small HTTP service with a page.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client). Importing
this package imports none of them: :mod:`edge.serve.cli` checks for them first and names the
extra in one line when they are missing.

Modules: :mod:`~edge.serve.limits` (the bounds and the bind/token rule),
:mod:`~edge.serve.batcher` (concurrent requests -> one onnxruntime call),
:mod:`~edge.serve.app` (the FastAPI app), :mod:`~edge.serve.cli` (``edge-serve``),
``page.html`` (the page served at ``/``).
"""
