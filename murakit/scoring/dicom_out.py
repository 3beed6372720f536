"""``murakit score ... --dicom-out DIR``: the run's DICOM studies as TID 1500 SRs (+ CAM SCs).

Runs after scoring, from the finished tables, so every SR holds exactly the probabilities of
``images.<fmt>`` and ``studies.<fmt>``: per DICOM study (rows whose study is a
StudyInstanceUID) an answer dict is rebuilt - the study row's probability and label, each
view's probability and SOP Instance UID - and :mod:`edge.pacs.results` writes it. With
``--dicom-cam`` the views are run once more through the model for their CAM overlays (the
tables are not touched). PNG/JPEG studies cannot have an SR: one line says how many.
"""

from __future__ import annotations

import sys

from edge.errors import EdgeError, first_line

PROG = "murakit score"


def _gate(row: dict) -> dict:
    """The row's gate verdict as the answer's ``gate`` dict: a ``gate`` column (dict or JSON
    text) or flat ``gate_score`` / ``gate_threshold`` / ``gate_passed`` columns; {} when absent."""
    import json

    gate = row.get("gate")
    if isinstance(gate, str) and gate.startswith("{"):
        gate = json.loads(gate)
    if not isinstance(gate, dict) and row.get("gate_passed") not in (None, ""):
        passed = row["gate_passed"]
        gate = {"score": row.get("gate_score"), "threshold": row.get("gate_threshold"),
                "passed": passed if isinstance(passed, bool) else str(passed).lower() in ("true", "1")}
    return {"gate": gate} if isinstance(gate, dict) else {}


def _answers(images: list, studies: list, threshold: float) -> tuple:
    """(DICOM study answers, number of studies that are not DICOM)."""
    from edge.predictor import dicom_info

    by_study: dict = {}
    for r in images:
        by_study.setdefault(str(r["study"]), []).append(r)
    out, plain = [], 0
    for s in studies:
        rows = by_study.get(str(s["study"]), [])
        infos = [dicom_info(r["path"]) for r in rows]
        if not rows or any(i is None or i.study_uid != str(s["study"]) or not i.sop_uid for i in infos):
            plain += 1
            continue
        views = [{"path": r["path"], "probability": float(r["probability"]), "study_uid": i.study_uid,
                  "sop_uid": i.sop_uid, **_gate(r)} for r, i in zip(rows, infos)]
        answer = {"path": str(s["study"]), "type": "study", "study_uid": str(s["study"]),
                  "probability": float(s["probability"]), "label": s["label"], "threshold": float(threshold),
                  "n_views": len(views), "views": views}
        if "operating_point" in rows[0] and rows[0]["operating_point"] not in (None, ""):
            answer["operating_point"] = rows[0]["operating_point"]
        out.append(answer)
    return out, plain


def write_dicom_results(summary, fmt: str, model, out_dir, cam: bool = False) -> tuple:
    """Write the SRs (and SCs) of a finished scoring run; returns (objects written, studies failed).

    Parameters
    ----------
    summary : murakit.scoring.store.Summary
    fmt : str
        The tables' format.
    model : str or Path
        The model that scored them (its card names the algorithm in the SR).
    out_dir : str or Path
    cam : bool
        Also one CAM Secondary Capture per view (CNN models).
    """
    from edge.cam import overlay
    from edge.pacs import require
    from edge.pacs.results import NOT_DICOM, write_study_results
    from edge.predictor import Predictor
    from murakit.scoring.tables import read_table

    require("pydicom", "highdicom")
    predictor = Predictor(model, threads=1)
    answers, plain = _answers(read_table(summary.images, fmt), read_table(summary.studies, fmt), predictor.threshold)
    if plain:
        print(f"{PROG}: note: {plain} studies are {NOT_DICOM}", file=sys.stderr)
    if cam and not predictor.has_cam:
        print(f"{PROG}: note: CAM is not available for {predictor.kind} models; no Secondary Captures written",
              file=sys.stderr)
    written, failed = 0, 0
    for answer in answers:
        try:
            overlays = None
            if cam and predictor.has_cam:
                preds = [predictor.predict(v["path"], cam=True) for v in answer["views"]]
                overlays = [overlay(p.image, p.cam) for p in preds]
            written += len(write_study_results(answer, predictor.card, out_dir, overlays))
        except EdgeError as e:
            failed += 1
            print(f"{PROG}: error: {first_line(e, 300)}", file=sys.stderr)
    return written, failed
