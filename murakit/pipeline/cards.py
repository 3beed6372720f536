"""Model cards of freshly trained models (the one place murakit fills one in)."""

from __future__ import annotations

from edge.card import ModelCard


def split_metrics(val: dict, test: dict) -> dict:
    """A card's ``metrics``: image and study metrics on val, and on test with kappa per part."""
    return {"val": {k: val[k] for k in ("image", "study")},
            "test": {k: test[k] for k in ("image", "study", "by_part")}}


def training_card(kind: str, prep, *, threshold: float, arch: str, weights_sha256: str,
                  metrics: dict, model_config: dict | None = None, hog=None, val=None) -> ModelCard:
    """The card of a model just trained on the prepared cache ``prep``.

    Parameters
    ----------
    kind : {"cnn", "baseline"}
    prep : murakit.data.prepared.Prepared
        Gives the preprocessing config and the data fingerprint.
    threshold : float
        Chosen on val (study level).
    arch : str
    weights_sha256 : str
        Hash of the trained weights (the ``.keras`` file, or the baseline's ONNX graph).
    metrics : dict
        See :func:`split_metrics`.
    model_config : dict, optional
    hog : HogConfig, optional
        For the baseline.
    val : (labels, probs, studies, parts), optional
        The validation split's image labels, raw probabilities, study ids and parts: the
        calibrators and operating points are fitted on them (``murakit.evaluation.calibration``).
    """
    from murakit import __version__
    from murakit.evaluation.metrics import json_safe

    trust = {} if val is None else trust_fields(*val, threshold)
    return ModelCard(kind=kind, preprocess=prep.config, threshold=float(threshold), arch=arch,
                     model_config=model_config or {}, hog=hog, metrics=json_safe(metrics),
                     data_fingerprint=prep.fingerprint(), weights_sha256=weights_sha256,
                     version=__version__, **trust)


def trust_fields(labels, probs, studies, parts, threshold: float) -> dict:
    """A card's ``calibration`` and ``operating_points`` (JSON-safe), fitted on the validation
    split's image labels, raw probabilities, study ids and parts (``murakit.evaluation.calibration``);
    ``threshold`` is the shipped (``youden``) one. Training and ``murakit calibrate`` both fit them here."""
    from murakit.evaluation.calibration import fit_calibration, fit_operating_points
    from murakit.evaluation.metrics import json_safe

    return json_safe({"calibration": fit_calibration(labels, probs, studies),
                      "operating_points": fit_operating_points(labels, probs, studies, parts, float(threshold))})
