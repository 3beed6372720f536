"""Choose between input-gate variants on validation evidence only (no OOD test image, no test split).

Usage::

    python benchmarks/gate_validation.py --run RUN [--C 0.1 0.3] [--oof]

RUN needs a prepared cache and a trained CNN (``RUN/cnn/best.keras``). Every held-out image is
ranked among the validation radiographs' gate scores (never fitted on):

- the "val" OOD set (``murakit.evaluation.ood``: sources in neither "fit" nor "test"), AUROC
  per category;
- leave one source out: each real CT/MR/US/SEG DICOM file and each real medical picture of the
  "fit" set in turn is left out of the fit and scored (AUROC per category, mean over sources;
  and how many of those images score above the top 1 % of val radiographs, i.e. are refused).

Variants: the CNN's pooled statistics alone (the first gate) and with the block of model-input
statistics (``deep.gate.input_statistics``, shipped), at each ``--C``. ``--oof`` also prints the
check behind the threshold rule: the quantiles of the validation radiographs' scores beside
out-of-fold scores of the training radiographs (5 folds by patient, gate refitted per fold), and
the share of val radiographs the rule would refuse if it read those out-of-fold scores (export
ships the higher of the val-only and the val + out-of-fold thresholds, ``export.gate.fit_gate``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOSO_CATEGORIES = ("modality", "medical")


def _group(name: str) -> str:
    """The source of an OOD image's name: the file, or the drawing kind."""
    if name.startswith("drawn/"):
        return "drawn/" + re.sub(r"\d+$", "", name[6:])
    return name.split("#")[0].split("[")[0].split(":")[0]


def _oof(gate, train_v, val_v, ood_v, sizes, patients, folds: int = 5) -> np.ndarray:
    """Out-of-fold gate scores of the training radiographs (folds of whole patients)."""
    uniq, inv = np.unique(np.asarray(patients).astype(str), return_inverse=True)
    fold = (np.random.default_rng(0).permutation(len(uniq)) % folds)[inv]
    out = np.empty(len(train_v))
    for k in range(folds):
        p, _ = gate.fit_gate(train_v[fold != k], val_v, ood_v, sizes)
        out[fold == k] = gate.gate_scores(train_v[fold == k], p)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--C", type=float, nargs="+", default=[0.1], help="logistic inverse regularisation(s)")
    ap.add_argument("--oof", action="store_true", help="also compare out-of-fold training scores with val's")
    args = ap.parse_args(argv)

    import deep
    from export import gate
    from murakit.data.prepared import load_prepared
    from murakit.evaluation.metrics import auroc
    from murakit.evaluation.ood import ood_images
    from murakit.pipeline.export import MAX_GATE_TRAIN, cache_inputs, first_by_path, ood_inputs, pooled_statistics

    prep = load_prepared(args.run)
    model = deep.load_model(Path(args.run) / "cnn" / "best.keras")
    pooled, sizes = deep.pooled_model(model), deep.block_sizes(model)
    train = first_by_path(prep, "train", MAX_GATE_TRAIN)
    val = np.asarray(sorted(prep.select("val"), key=lambda i: prep.path[i]), dtype=np.int64)
    train_v, val_v = (pooled_statistics(pooled, cache_inputs(prep, p)) for p in (train, val))
    fit_items, val_items = ood_images("fit"), ood_images("val")
    fit_v, oval_v = (pooled_statistics(pooled, ood_inputs(s, prep.config)) for s in ("fit", "val"))
    gf, cf = np.array([_group(o.name) for o in fit_items]), np.array([o.category for o in fit_items])
    cv = np.array([o.category for o in val_items])
    held = sorted({g for g, c in zip(gf, cf) if c in LOSO_CATEGORIES and not g.startswith("drawn/")})

    def auc(i, o):
        return auroc(np.r_[np.zeros(len(i)), np.ones(len(o))], np.r_[i, o])

    print(f"{args.run}: {len(train)} training / {len(val)} validation radiographs; left out in turn: "
          + ", ".join(held))
    cats = sorted(set(cv))
    print("| variant | " + " | ".join(f"val {c}" for c in cats) + " | " + " | ".join(f"left out: {c}" for c in
          LOSO_CATEGORIES) + " | left-out images passing | threshold |")
    print("|---|" + "---|" * (len(cats) + len(LOSO_CATEGORIES) + 2))
    width = sum(sizes[:-1])  # the input-statistics block is the last one
    for C in args.C:
        gate.LOGISTIC_C = C
        for label, cols, sz in (("CNN statistics only", slice(0, width), sizes[:-1]),
                                ("+ input statistics (shipped)", slice(None), sizes)):
            tr, va, fi, ov = train_v[:, cols], val_v[:, cols], fit_v[:, cols], oval_v[:, cols]
            p, info = gate.fit_gate(tr, va, fi, sz)
            inlier = gate.gate_scores(va, p)
            out = gate.gate_scores(ov, p)
            per_cat, passing = {c: [] for c in LOSO_CATEGORIES}, 0
            for g in held:
                pg, _ = gate.fit_gate(tr, va, fi[gf != g], sz)
                s_in, s_out = gate.gate_scores(va, pg), gate.gate_scores(fi[gf == g], pg)
                per_cat[cf[gf == g][0]].append(auc(s_in, s_out))
                passing += int(np.sum(s_out <= np.quantile(s_in, 0.99)))
            print(f"| {label}, C={C} | " + " | ".join(f"{auc(inlier, out[cv == c]):.4f}" for c in cats) + " | "
                  + " | ".join(f"{np.mean(per_cat[c]):.4f}" for c in LOSO_CATEGORIES)
                  + f" | {passing}/{int(np.isin(gf, held).sum())} | {info['threshold']:.3f} |", flush=True)
            if args.oof:
                oof = _oof(gate, tr, va, fi, sz, prep.patient[train])
                t_oof, t_both = gate.threshold_rule(oof)[0], gate.threshold_rule(np.r_[oof, inlier])[0]
                q = [0.5, 0.99, 1.0]
                print(f"|   out-of-fold check | val q50/q99/max {np.round(np.quantile(inlier, q), 2).tolist()}, "
                      f"out-of-fold {np.round(np.quantile(oof, q), 2).tolist()}; rule on out-of-fold {t_oof:.3f} "
                      f"refuses {np.mean(inlier > t_oof):.1%} of val, on both {t_both:.3f}: "
                      f"{np.mean(inlier > t_both):.1%}; val alone {info['threshold_rule']['val_threshold']:.3f}, "
                      f"shipped (the higher) {max(t_both, info['threshold_rule']['val_threshold']):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
