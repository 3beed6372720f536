"""Measure input-gate candidates on a trained run: which statistic tells radiographs from the rest.

Usage::

    python benchmarks/gate_candidates.py --run RUN

RUN needs a prepared cache and a trained CNN (``RUN/cnn/best.keras``). Every candidate is fitted
on the training split's radiographs (and, for the outlier-exposure ones, murakit's "fit"
non-radiographs, ``murakit.evaluation.ood``), thresholded on the validation radiographs
(``export.gate.threshold_rule``), and scored on the test split's radiographs against the "test"
non-radiographs (disjoint sources). Prints a Markdown table: OOD AUROC per category, over all,
the test radiographs refused and the OOD images let through at that threshold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _logit(p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    args = ap.parse_args(argv)

    import keras

    import deep
    from edge.preprocess import preprocess, to_model_input
    from export.gate import fit_gate, gate_scores, threshold_rule, whitening
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import auroc
    from murakit.evaluation.ood import CATEGORIES, ood_images

    prep = load_prepared(args.run)
    model = deep.load_model(Path(args.run) / "cnn" / "best.keras")
    pooled = deep.pooled_model(model)
    sizes = deep.block_sizes(model)
    head = keras.Model(model.input, model.get_layer("head").output)
    u8 = {s: np.stack([prep.image(int(i)) for i in prep.select(s)]) for s in ("train", "val", "test")}
    oods = {s: ood_images(s) for s in ("fit", "test")}
    for s, items in oods.items():
        u8[f"ood_{s}"] = np.stack([preprocess(o.image, prep.config) for o in items])

    def run(m, x):
        return np.concatenate([np.asarray(m(to_model_input(x[i:i + 64]), training=False)) for i in range(0, len(x), 64)])

    V = {k: run(pooled, x).astype(np.float64) for k, x in u8.items()}
    P = {k: run(head, x).reshape(-1).astype(np.float64) for k, x in u8.items()}
    last = slice(sum(sizes[:-2]), sum(sizes[:-1]))  # mean of the last feature map (= GAP)

    def maha(block):
        mu, w = whitening(V["train"][:, block])
        return lambda k: np.sqrt((((V[k][:, block] - mu) @ w) ** 2).mean(1))

    gap = maha(last)
    full, _ = fit_gate(V["train"], V["val"], V["ood_fit"], sizes)
    maha_only = {**full, "coef": np.r_[np.zeros(V["train"].shape[1]), np.ones(len(sizes))],
                 "x_mean": np.zeros(V["train"].shape[1] + len(sizes)),
                 "x_scale": np.ones(V["train"].shape[1] + len(sizes)), "intercept": np.zeros(1)}
    candidates = {
        "max-logit (-|logit|)": lambda k: -np.abs(_logit(P[k])),
        "energy (-log(1+e^logit))": lambda k: -np.logaddexp(0, _logit(P[k])),
        "Mahalanobis, last feature map (GAP)": gap,
        "sum of log Mahalanobis, 5 layers x (mean, std)": lambda k: gate_scores(V[k], maha_only),
        "OE logistic + per-layer Mahalanobis (shipped)": lambda k: gate_scores(V[k], full),
    }
    cats = [c for c in CATEGORIES if any(o.category == c for o in oods["test"])]
    sel = {c: np.array([o.category == c for o in oods["test"]]) for c in cats}
    print("| candidate | " + " | ".join(cats) + " | all | test radiographs refused | OOD let through |")
    print("|---|" + "---|" * (len(cats) + 3))
    for name, f in candidates.items():
        ind, ood, t = f("test"), f("ood_test"), threshold_rule(f("val"))[0]

        def auc(o, ind=ind):
            return auroc(np.r_[np.zeros(len(ind)), np.ones(len(o))], np.r_[ind, o])

        row = " | ".join(f"{auc(ood[sel[c]]):.3f}" for c in cats)
        print(f"| {name} | {row} | {auc(ood):.3f} | {np.mean(ind > t):.1%} | {np.mean(ood <= t):.1%} |")
    print(f"\n{len(u8['test'])} test radiographs, {len(oods['test'])} OOD test images; "
          f"fit on {len(u8['train'])} training radiographs and {len(oods['fit'])} fit non-radiographs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
