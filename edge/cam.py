"""Class activation map heatmaps drawn over the preprocessed image (OpenCV only).

The CNN's ONNX graph already outputs the CAM (last feature maps weighted by the dense layer),
so the device only normalises, upsamples and colours it.

The contract: ``Prediction.cam`` (the graph's ``cam`` output) upsampled by :func:`upsample_cam`
to S is aligned with the preprocessed S x S canvas - the value drawn at a canvas pixel is the
evidence of the feature cells whose receptive fields are centred around that pixel. A feature
cell's receptive field is not centred on the square a plain resize would draw it over (Keras
``padding="same"`` pads stride-2 layers on the right and bottom only, 1x1 stride-2 shortcuts
read the top-left pixel, border cells see part padding), so the exporter measures each row's
and column's centre on the architecture and bakes the placement into the graph
(:func:`placement_matrix`): the graph's ``cam`` is already S x S and ``upsample_cam`` only
normalises it (``deep.gradcam`` places its maps the same way). A coarser map (from a model
exported before the placement) is drawn with its cells centred: the old, approximate drawing.
``murakit explain``, ``edge-predict --cam``, ``edge-serve ?cam=1`` and its page all draw with
:func:`overlay`, hence with ``upsample_cam``. :func:`canvas_to_original` maps a canvas point
back through the preprocessing's resize and padding to the original image.
"""

from __future__ import annotations

import numpy as np


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """Min-max scale a CAM to [0, 1].

    Parameters
    ----------
    cam : ndarray, shape (h, w), any float values (logit contributions)

    Returns
    -------
    ndarray of float32, shape (h, w), in [0, 1]; all zeros for a flat or non-finite map.
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"expected a (h, w) CAM, got shape {cam.shape}")
    if not np.all(np.isfinite(cam)):
        return np.zeros_like(cam)
    lo, hi = float(cam.min()), float(cam.max())
    if hi - lo < 1e-12:  # flat map: no location stands out, so draw no heat
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo)


def placement_matrix(centres, size: int) -> np.ndarray:
    """Linear interpolation weights from grid cells at ``centres`` to ``size`` canvas pixels.

    Parameters
    ----------
    centres : float (n,), non-decreasing
        Each cell's centre in canvas pixels (pixel i spans [i, i + 1), its centre is i + 0.5).
        Cells with the same centre (their evidence comes from the same place) share its weight.
    size : int
        Canvas side S.

    Returns
    -------
    ndarray of float32, shape (S, n): row p weights the cells for pixel p (rows sum to 1;
    pixels beyond the outer centres take the outer cell's value). A (h, w) map ``m`` lands on
    the canvas as ``A_y @ m @ A_x.T``.
    """
    c = np.asarray(centres, np.float64)
    if c.ndim != 1 or len(c) == 0 or np.any(np.diff(c) < 0) or not np.all(np.isfinite(c)):
        raise ValueError(f"centres must be finite and non-decreasing, got {c}")
    pix = np.arange(int(size)) + 0.5
    u, group, count = np.unique(c, return_inverse=True, return_counts=True)
    eye = np.eye(len(u))
    per_group = np.stack([np.interp(pix, u, eye[k]) for k in range(len(u))], axis=1)
    return (per_group[:, group] / count[group]).astype(np.float32)


def canvas_to_original(x, y, info):
    """Map canvas coordinates back to the original image through the resize and padding.

    Parameters
    ----------
    x, y : float or ndarray
        Continuous canvas coordinates (pixel i spans [i, i + 1)), e.g. a CAM peak at pixel
        (px, py) is (px + 0.5, py + 0.5).
    info : edge.preprocess.PreprocessInfo
        From ``preprocess_with_info`` of the same image.

    Returns
    -------
    (x, y) in continuous original-image coordinates (pixel i spans [i, i + 1)).
    """
    # The resize rounds each side to whole pixels, so each axis has its own exact scale.
    nw, nh = max(1, round(info.orig_w * info.scale)), max(1, round(info.orig_h * info.scale))
    return ((np.asarray(x, np.float64) - info.offset_x) * info.orig_w / nw,
            (np.asarray(y, np.float64) - info.offset_y) * info.orig_h / nh)


def upsample_cam(cam: np.ndarray, size: int) -> np.ndarray:
    """Normalise and bilinearly resize a CAM to ``size`` x ``size`` (the one drawing of a CAM).

    A graph's S x S ``cam`` is already placed (see the module docstring) and only normalised
    here; a coarser map is resized with its cells centred.

    Returns
    -------
    ndarray of float32, shape (size, size), in [0, 1]
    """
    import cv2

    up = cv2.resize(normalise_cam(cam), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.clip(up, 0.0, 1.0)


def overlay(gray_u8: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a JET-coloured CAM over a grey image.

    Parameters
    ----------
    gray_u8 : ndarray of uint8, shape (S, S)
        The preprocessed image (what the model saw).
    cam : ndarray of float, shape (h, w)
        Raw CAM from the model; normalised and upsampled to S here.
    alpha : float
        Weight of the heatmap in [0, 1].

    Returns
    -------
    ndarray of uint8, shape (S, S, 3), BGR (ready for ``cv2.imwrite``).
    """
    import cv2

    gray_u8 = np.asarray(gray_u8)
    if gray_u8.dtype != np.uint8 or gray_u8.ndim != 2 or gray_u8.shape[0] != gray_u8.shape[1]:
        raise ValueError(f"expected a uint8 (S, S) image, got {gray_u8.dtype} {gray_u8.shape}")
    heat = np.round(upsample_cam(cam, gray_u8.shape[0]) * 255.0).astype(np.uint8)
    colour = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    grey = cv2.cvtColor(gray_u8, cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(colour, float(alpha), grey, 1.0 - float(alpha), 0.0)
