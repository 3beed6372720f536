"""The embedded default: a MURA-v1.1-shaped data set of procedurally drawn radiographs.

``generate(out_dir)`` writes ``out_dir/MURA-v1.1/`` with exactly the layout and the four
header-less CSVs of the real MURA-v1.1 release, plus its quirks (AppleDouble ``._*`` junk,
1- and 3-channel and a few 16-bit PNGs, sizes from ~90 to 512 px, exposure spread, noise,
inverted images, burned-in position markers in both classes).

Each study is one synthetic patient anatomy (one of the seven upper-extremity parts) seen in
1-5 views with different poses and projections. Ground truth that the official CSVs do not
hold is written to ``MURA-v1.1/synth_annotations.csv`` (``path,inverted,finding,x0,y0,x1,y1``,
bbox in original pixel coordinates) and the generation parameters to ``MURA-v1.1/synth.json``.

The modules, in the order the generator uses them:

- ``settings``: ``SynthSettings``, every knob in one frozen dataclass, and ``PRESETS``;
- ``plan``: patients, studies, views, splits and labels (MURA's proportions), no pixels;
- ``anatomy``: the bones of each body part as geometry, and how to draw them;
- ``findings``: the abnormalities (fracture, hardware, lytic lesion, periosteal reaction) and
  the normal look-alikes;
- ``render``: one view's pixels: attenuation canvas, pose, exposure, noise, inversion, dtype;
- ``write``: every study to PNG files and the CSVs, deterministic for any number of processes.
"""
from murakit.data.synth.anatomy import CANVAS, DESIGN
from murakit.data.synth.findings import StudySpec, finding_params, study_spec
from murakit.data.synth.plan import PARTS, StudyPlan, plan_studies
from murakit.data.synth.render import render_canvas, render_view
from murakit.data.synth.settings import FINDINGS, PRESETS, SynthSettings
from murakit.data.synth.write import (
    ANNOTATION_HEADER,
    GENERATOR_VERSION,
    describe,
    existing_matches,
    generate,
    render_study,
    resolve_settings,
)

DEFAULT_STUDIES = SynthSettings().studies

__all__ = [
    "ANNOTATION_HEADER", "CANVAS", "DEFAULT_STUDIES", "DESIGN", "FINDINGS", "GENERATOR_VERSION", "PARTS",
    "PRESETS", "StudyPlan", "StudySpec", "SynthSettings", "describe", "existing_matches", "finding_params",
    "generate", "plan_studies", "render_canvas", "render_study", "render_view", "resolve_settings",
    "study_spec",
]
