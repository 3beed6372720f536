"""Class activation map heatmaps drawn over the preprocessed image (OpenCV only).

The CNN's ONNX graph already outputs the CAM (last feature maps weighted by the dense layer),
so the device only normalises, upsamples and colours it.
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


def upsample_cam(cam: np.ndarray, size: int) -> np.ndarray:
    """Normalise and bilinearly resize a CAM to ``size`` x ``size``.

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
