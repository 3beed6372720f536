"""``murakit score``: an archive of radiographs -> per-image and per-study results, resumable.

Runs with the edge runtime's dependencies only (numpy, OpenCV, onnxruntime); Parquet output and
the Ray engine need the ``scale`` extra. See docs/scoring.md.
"""

from murakit.scoring.inputs import Job, collect_jobs, study_key
from murakit.scoring.run import score

__all__ = ["Job", "collect_jobs", "score", "study_key"]
