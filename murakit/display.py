"""How murakit's results show: HTML and text tables, PNG pictures, matplotlib figures.

The Python API's results (:mod:`murakit.results`) are plain data; this module gives them a face
in Jupyter (``_repr_html_``, ``_repr_png_``) and in a terminal (``repr``), and gives every plot
of the project its figure.

Figures are :class:`matplotlib.figure.Figure` objects made by :func:`new_figure`, never pyplot:
pyplot keeps a global list of open figures and draws through the process's one backend, so a
stage that used it had to switch the backend to Agg and a notebook had to get its own back
afterwards (``%matplotlib inline`` does not survive a ``matplotlib.use``). A ``Figure`` renders
PNG through Agg on ``savefig`` whatever backend is selected, and leaves it alone.

Only the standard library is imported here; matplotlib, OpenCV and numpy inside the functions.
"""

from __future__ import annotations

import contextlib
import html
import math
from dataclasses import dataclass, field
from pathlib import Path


def shown(path) -> str:
    """A path as a reader should see it: relative to the working folder when inside it."""
    if path is None:
        return ""
    p = Path(path)
    with contextlib.suppress(ValueError):
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    return str(p)


def fmt(v, nd: int = 3) -> str:
    """``v`` with ``nd`` decimals; a dash for an undefined value (None or NaN)."""
    return "–" if v is None or math.isnan(v) else f"{v:.{nd}f}"


def interval(pair) -> str:
    """`` [lo, hi]`` of a confidence interval, or nothing when it is undefined."""
    if not pair or pair[0] is None:
        return ""
    return f" [{pair[0]:.3f}, {pair[1]:.3f}]"


def html_table(header, rows, caption: str = "") -> str:
    """A small HTML table (cells are escaped text)."""
    esc = html.escape
    head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text_table(header, rows) -> str:
    """The same table as aligned plain text (for terminals and text-only viewers)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


class Displayed:
    """Mixin: an HTML table (``_repr_html_``) and the same table as text (``repr``), both built
    from one ``_rows()`` -> (header, rows, caption). Subclasses are ``@dataclass(repr=False)``:
    their fields stay plain data, their repr is the table (not a dump of every nested dict)."""

    def _rows(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return html_table(*self._rows())

    def __repr__(self) -> str:
        header, rows, caption = self._rows()
        return (caption + "\n" if caption else "") + text_table(header, rows)


@dataclass
class Picture:
    """A PNG picture: shown inline by Jupyter, saved or decoded on demand.

    Attributes
    ----------
    png : bytes
        The encoded PNG.
    title : str
    path : Path or None
        The file it was read from, when it came from the run folder.
    """

    png: bytes = field(repr=False)
    title: str = ""
    path: Path | None = None

    @classmethod
    def from_file(cls, path, title: str = "") -> Picture:
        path = Path(path)
        return cls(path.read_bytes(), title or path.stem, path)

    @classmethod
    def from_array(cls, image, title: str = "") -> Picture:
        """From uint8 (H, W) grey or (H, W, 3) BGR pixels (OpenCV's order)."""
        import cv2

        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise ValueError(f"cannot encode an image of shape {getattr(image, 'shape', None)} as PNG")
        return cls(buf.tobytes(), title)

    def to_array(self):
        """uint8 (H, W, 3) BGR pixels (or (H, W, 4) with alpha), decoded from the PNG."""
        import cv2
        import numpy as np

        return cv2.imdecode(np.frombuffer(self.png, np.uint8), cv2.IMREAD_UNCHANGED)

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.png)
        return path

    def _repr_png_(self) -> bytes:
        return self.png


def pictures(folder: Path, names) -> dict:
    """{stem: Picture} of the PNG files ``names`` that exist in ``folder``."""
    return {Path(n).stem: Picture.from_file(folder / n) for n in names if (folder / n).is_file()}


def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` of its own (``kwargs`` as ``Figure``'s: ``figsize``, ...).

    Not in pyplot's list of open figures (nothing to close, nothing a notebook's
    ``plt.show()`` would pick up) and drawn without touching the selected backend.
    """
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def grid_png(images, titles, boxes=None, ncols: int = 4) -> bytes:
    """One PNG of BGR uint8 images in a grid with titles (and green boxes where given)."""
    import io

    import cv2

    n = max(1, len(images))
    nrows = (n + ncols - 1) // ncols
    fig = new_figure(figsize=(2.3 * ncols, 2.5 * nrows))
    for k, (img, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), interpolation="nearest")
        box = boxes[k] if boxes is not None else None
        if box is not None:
            ax.add_patch(_rect(*box))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return buf.getvalue()


def _rect(x0, y0, x1, y1):
    from matplotlib.patches import Rectangle

    # pixel centres are integers in imshow: a box edge at x lies between pixels x-1 and x
    return Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", lw=1.2)


__all__ = ["Displayed", "Picture", "fmt", "grid_png", "html_table", "interval", "new_figure", "pictures",
           "shown", "text_table"]
