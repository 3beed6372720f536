"""Row tables on disk as CSV, JSON lines or Parquet, written atomically (temp name, then rename).

A table is a list of dicts with known columns. Column types are fixed by name: ``probability``
and ``threshold`` are float64 (None allowed: a failed image has no probability), ``n_views`` is
int64, everything else is a string. Floats round-trip exactly in every format (CSV and JSON
write ``repr``), so a table read back and written again is byte-identical; resumed runs depend
on it. CSV and JSON lines need only the standard library; Parquet needs pyarrow (the ``scale``
extra), imported only when a Parquet file is written or read.
"""

from __future__ import annotations

import csv
import json
import math

from edge.atomic import atomic_path, atomic_write

FORMATS = ("csv", "jsonl", "parquet")
FLOAT_COLUMNS = frozenset({"probability", "threshold", "score", "gate_score"})
INT_COLUMNS = frozenset({"n_views"})


def _cell(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _typed(column: str, value):
    """A cell read from CSV/JSON as its column's type (None for an empty float cell)."""
    if column in FLOAT_COLUMNS:
        return None if value in ("", None) else float(value)
    if column in INT_COLUMNS:
        return int(value)
    return "" if value is None else str(value)


def _check_floats(rows, columns) -> None:
    for row in rows:
        for c in FLOAT_COLUMNS.intersection(columns):
            v = row[c]
            if v is not None and not math.isfinite(v):
                raise ValueError(f"non-finite {c} {v!r} in a table row ({row.get('path', '')})")


def write_table(path, rows: list, columns, fmt: str) -> None:
    """Write ``rows`` (dicts with at least ``columns``) to ``path`` in ``fmt``, atomically.

    Raises
    ------
    ValueError
        Unknown format, or a NaN/infinite float (never written: a failure has no probability).
    """
    columns = tuple(columns)
    _check_floats(rows, columns)
    if fmt == "csv":
        with atomic_write(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            w.writerows([_cell(r[c]) for c in columns] for r in rows)
    elif fmt == "jsonl":
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({c: r[c] for c in columns}, allow_nan=False) + "\n" for r in rows)
    elif fmt == "parquet":
        _write_parquet(path, rows, columns)
    else:
        raise ValueError(f"unknown table format {fmt!r} (expected one of {', '.join(FORMATS)})")


def read_table(path, fmt: str) -> list:
    """Rows of a table written by :func:`write_table` (dicts, typed by column name)."""
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            return [{c: _typed(c, v) for c, v in row.items()} for row in csv.DictReader(f)]
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            return [{c: _typed(c, v) for c, v in json.loads(line).items()} for line in f if line.strip()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unknown table format {fmt!r} (expected one of {', '.join(FORMATS)})")


def require_format(fmt: str) -> None:
    """Fail now (ModuleNotFoundError naming pyarrow) rather than after scoring, for Parquet."""
    if fmt == "parquet":
        import pyarrow.parquet  # noqa: F401


def _arrow_type(pa, column: str):
    if column in FLOAT_COLUMNS:
        return pa.float64()
    return pa.int64() if column in INT_COLUMNS else pa.string()


def _write_parquet(path, rows, columns) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, _arrow_type(pa, c)) for c in columns])
    table = pa.table({c: [r[c] for r in rows] for c in columns}, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
