"""``murakit score INPUT... --model M --out DIR``: score an archive of radiographs (resumable)."""

from __future__ import annotations

from edge.trust import add_trust_arguments
from murakit.errors import MurakitError
from murakit.scoring.run import DEFAULT_BATCH, ENGINES
from murakit.scoring.tables import FORMATS


def add_arguments(p) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (walked; a folder of views is a study; a MURA-v1.1 root works), "
                        "or CSV lists of image paths (MURA's *_image_paths.csv works as is)")
    p.add_argument("--model", help="exported .onnx model (default: $MURAKIT_MODEL, else runs/default/export/cnn.onnx)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: images.<fmt>, studies.<fmt>, failures.csv; rerun to resume")
    p.add_argument("--format", default="csv", choices=FORMATS, help="table format (default: %(default)s; "
                   "parquet needs the 'scale' extra)")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="local worker processes, or Ray Data (RAY_ADDRESS, else a local Ray; 'scale' extra)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="parallel decode/preprocess/score workers (default: all usable cores)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="B",
                   help="images per onnxruntime call (default: %(default)s)")
    p.add_argument("--part-rows", type=int, default=4096, metavar="R",
                   help="rows per committed part: after a kill, at most this many images (or 10 s of work) are "
                        "scored again (default: %(default)s)")
    p.add_argument("--labels", nargs="?", const="auto", default=None, metavar="CSV",
                   help="then print the MURA protocol's metrics: labels from CSV (study,label), or, with no "
                        "CSV, from the *_labeled_studies.csv next to the data")
    p.add_argument("--dicom-out", metavar="DIR",
                   help="also write, per DICOM study, a TID 1500 Structured Report of its result into "
                        "DIR/<StudyInstanceUID>/ (same study, a new series; needs the pacs extra)")
    p.add_argument("--dicom-cam", action="store_true",
                   help="with --dicom-out: one CAM Secondary Capture per view too (CNN models; NOT FOR DIAGNOSTIC USE)")
    add_trust_arguments(p, "failures.csv rows with reason 'gate'")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")


def run(args) -> int:
    """Score, print where the results are (and the metrics with --labels). 0 ok (images the input
    gate refused are listed in failures.csv, not errors), 1 some images could not be scored."""
    from edge.cli import default_model
    from murakit.scoring.evaluate import evaluate_folder, format_metrics
    from murakit.scoring.run import score

    if args.dicom_cam and not args.dicom_out:
        raise MurakitError("--dicom-cam needs --dicom-out DIR (the Secondary Captures go there)")
    if args.dicom_out:
        from edge.pacs import require

        require("pydicom", "highdicom")
    s = score(args.inputs, args.model or default_model(), args.out, fmt=args.format, engine=args.engine,
              workers=args.workers, batch_size=args.batch_size, progress=not args.no_progress,
              part_rows=args.part_rows, gate=args.gate, operating_point=args.operating_point)
    refused = f" ({s.n_refused} refused by the input gate: not upper-extremity radiographs)" if s.n_refused else ""
    print(f"{s.n_images} images -> {s.images}\n{s.n_studies} studies -> {s.studies}\n"
          f"{s.n_failed} failures{refused} -> {s.failures}")
    if s.n_scored_now:
        print(f"scored {s.n_scored_now} images in {s.seconds:.1f} s ({s.images_per_second:.0f} images/s)")
    else:
        print("nothing left to score: every image already has a result in the output folder")
    failed_sr = 0
    if args.dicom_out:
        from murakit.scoring.dicom_out import write_dicom_results

        n, failed_sr = write_dicom_results(s, args.format, args.model or default_model(), args.dicom_out,
                                           cam=args.dicom_cam)
        print(f"{n} DICOM result objects -> {args.dicom_out}")
    if args.labels:
        metrics, files = evaluate_folder(args.out, None if args.labels == "auto" else args.labels)
        print(f"labels: {', '.join(map(str, files))}\n{format_metrics(metrics)}")
    return 1 if s.n_failed > s.n_refused or failed_sr else 0  # an archive has views the gate refuses: not an error
