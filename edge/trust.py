"""What makes an answer worth trusting beyond the ranking: the input gate's verdict, calibrated
probabilities and operating points, all read from the model card.

- **Gate.** A CNN exported by murakit >= card format 2 has a ``gate`` output (B,): how unlike
  the training radiographs a view is. A view scoring above the card's ``gate.threshold`` is
  refused (``--gate refuse``, the default), scored with a warning (``warn``), or the gate is
  ignored (``off``). A model without a gate (the baseline, format-1 cards) refuses nothing and
  its answers carry no ``gate`` verdict.
- **Calibration.** The model's raw output stays in answers as ``score``; ``probability`` is the
  card's Platt calibrator applied to it (view calibrator for a view, study calibrator for the
  mean of a study's scores). Calibrators are increasing, so decisions and AUROC are unchanged:
  a label compares the raw score with the operating point's raw threshold, and the
  ``threshold`` an answer shows is that threshold through the same calibrator.
- **Operating points.** Named thresholds on the raw study score, chosen on val at training
  (``youden``: the card's ``threshold``; ``sensitivity>=0.90``; ``specificity>=0.90``; ``.../part``
  variants with one threshold per body part, used when the view's part is known).
"""

from __future__ import annotations

import math

from edge.errors import ModelError

GATE_MODES = ("refuse", "warn", "off")
DEFAULT_OPERATING_POINT = "youden"
NOT_A_RADIOGRAPH = "does not look like an upper-extremity radiograph"


def add_trust_arguments(p, refused: str) -> None:
    """``--gate`` and ``--operating-point``, declared once for edge-predict, edge-serve and
    murakit score; ``refused`` says what a refusal means for that command."""
    p.add_argument("--gate", choices=GATE_MODES, default="refuse",
                   help="the input gate (CNN models exported with one): refuse inputs that do not look like an "
                        f"upper-extremity radiograph (default; {refused}), warn and score them anyway (the gate "
                        "verdict says passed: false), or off")
    p.add_argument("--operating-point", metavar="NAME",
                   help="one of the model card's operating points (default: the card's, youden unless the card "
                        "marks another; e.g. 'sensitivity>=0.90', 'specificity>=0.90', their '/part' variants)")


def check_gate_mode(mode: str) -> str:
    if mode not in GATE_MODES:
        raise ModelError(f"--gate must be one of {', '.join(GATE_MODES)}, got {mode!r}")
    return mode


def gate_verdict(card, score) -> dict | None:
    """``{"score", "threshold", "passed"}`` for a view's gate output, None when the model has no gate."""
    if card.gate is None or score is None:
        return None
    s, t = float(score), float(card.gate["threshold"])
    if not math.isfinite(s):  # a damaged model: nothing it says about this view can be trusted
        return {"score": None, "threshold": t, "passed": False}
    return {"score": round(s, 6), "threshold": round(t, 6), "passed": bool(s <= t)}


def refusal_text(path: str, gate: dict) -> str:
    """The one line of a refused view: ``PATH: not scored: does not look like ... (gate score S > T)``."""
    s = "nan" if gate["score"] is None else f"{gate['score']:.3f}"
    return f"{path}: not scored: {NOT_A_RADIOGRAPH} (gate score {s} > {gate['threshold']:.3f})"


_LOW, _HIGH = 2.2250738585072014e-308, 1.0 - 2.0 ** -53  # clip only 0 and 1: no ties made


def _logit(p: float) -> float:
    p = min(max(float(p), _LOW), _HIGH)
    return math.log(p) - math.log1p(-p)


def calibrate(card, score: float, level: str) -> float:
    """The calibrated probability of a raw score (``level``: "image" or "study"); the raw score
    when the card has no calibrators."""
    if card.calibration is None:
        return float(score)
    c = card.calibration[level]
    z = c["a"] * _logit(score) + c["b"]
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def operating_points(card) -> dict:
    """The card's operating points; a card without them has ``youden`` = its threshold."""
    return card.operating_points or {DEFAULT_OPERATING_POINT: {"threshold": card.threshold}}


def default_operating_point(card) -> str:
    """The card's default: the operating point marked ``"default": true`` (per-part thresholds that
    won on val by the fixed margin), else ``youden``."""
    marked = sorted(n for n, op in operating_points(card).items() if op.get("default") is True)
    return marked[0] if marked else DEFAULT_OPERATING_POINT


def check_operating_point(card, name: str | None) -> str:
    """``name`` (default: :func:`default_operating_point`) when the card has it, else a ModelError
    listing those it has."""
    name = name or default_operating_point(card)
    points = operating_points(card)
    if name not in points:
        raise ModelError(f"--operating-point {name!r} is not in this model's card (it has: "
                         f"{', '.join(sorted(points))})")
    return name


def raw_threshold(card, name: str, part: str | None) -> float:
    """The raw study-score threshold of operating point ``name`` for a view/study of ``part``."""
    op = operating_points(card)[name]
    return float(op.get("thresholds_by_part", {}).get(part, op["threshold"]))
