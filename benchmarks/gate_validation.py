"""Choose between input-gate variants on validation evidence only (no OOD test image, no test split).

Usage::

    python benchmarks/gate_validation.py --run RUN [--C 0.1 0.3]

RUN needs a prepared cache and a trained CNN (``RUN/cnn/best.keras``). The weak spot of the gate
is other modalities (CT, MR, US, NM), so the evidence is on real ones the fit did not see:

- leave one source out: each real DICOM file of the "fit" set (CT, MR, US, SEG) in turn is left
  out of the fit and scored;
- the "val" set's real modality images (matplotlib's MR slice, pydicom's big-endian US file),
  in neither "fit" nor "test".

Each held-out image is ranked among the validation radiographs' scores (never fitted on). Printed
per variant: the pooled AUROC (mean share of val radiographs scoring below a held-out image),
how many held-out images score below the top 1 % of val radiographs, the AUROC per held-out
source, and the AUROC of the rest of the "val" set (photographs, pages, drawn frames).
Variants: outlier exposure without / with the drawn CT/MR/US/NM frames, at each ``--C``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DRAWN_MODALITIES = ("drawn/ct", "drawn/mr", "drawn/us", "drawn/nm")
VAL_REAL = ("matplotlib/s1045.ima.gz", "pydicom/ExplVR_BigEnd.dcm")


def _group(name: str) -> str:
    """The source of an OOD image's name: the file, or the drawing kind."""
    if name.startswith("drawn/"):
        return "drawn/" + re.sub(r"\d+$", "", name[6:])
    return name.split("#")[0].split("[")[0].split(":")[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--C", type=float, nargs="+", default=[0.1], help="logistic inverse regularisation(s)")
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
    gf = np.array([_group(o.name) for o in fit_items])
    gv = np.array([_group(o.name) for o in val_items])
    real = sorted({g for g, o in zip(gf, fit_items) if o.category == "modality" and not g.startswith("drawn/")})
    drawn = np.isin(gf, DRAWN_MODALITIES)
    real_val = np.isin(gv, VAL_REAL)

    def auc(i, o):
        return auroc(np.r_[np.zeros(len(i)), np.ones(len(o))], np.r_[i, o])

    print(f"{args.run}: {len(train)} training / {len(val)} validation radiographs; held out: {', '.join(real)}, "
          f"{', '.join(g for g in VAL_REAL if g in set(gv))}")
    print("| variant | pooled AUROC | held-out below val's top 1% | per held-out source | rest of val set |")
    print("|---|---|---|---|---|")
    for C in args.C:
        gate.LOGISTIC_C = C
        for label, use in (("no drawn modalities", ~drawn), ("with drawn CT/MR/US/NM", np.ones(len(gf), bool))):
            held = []
            for g in real:
                p, _ = gate.fit_gate(train_v, val_v, fit_v[use & (gf != g)], sizes)
                held.append((gate.gate_scores(val_v, p), gate.gate_scores(fit_v[gf == g], p)))
            p, _ = gate.fit_gate(train_v, val_v, fit_v[use], sizes)
            inlier = gate.gate_scores(val_v, p)
            held.append((inlier, gate.gate_scores(oval_v[real_val], p)))
            above = np.concatenate([[np.mean(i >= x) for x in o] for i, o in held])
            print(f"| {label}, C={C} | {1 - above.mean():.4f} | {(above > 0.01).sum()}/{len(above)} | "
                  + ", ".join(f"{auc(i, o):.3f}" for i, o in held)
                  + f" | {auc(inlier, gate.gate_scores(oval_v[~real_val], p)):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
