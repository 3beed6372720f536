"""deep: the Keras CNN on image arrays (tf.data pipeline, training, CAM/Grad-CAM).

Knows nothing of MURA's files; takes uint8 image caches and writes models.
"""

from deep.config import ARCHS, AugmentConfig, ModelConfig, TrainConfig
from deep.data import augment_batch, make_dataset
from deep.errors import DeepError
from deep.explain import cam, gradcam, pointing_game, upsample
from deep.model import build_model, cam_model, load_model
from deep.train import (
    TrainResult,
    auroc,
    check_resumable,
    class_weights,
    get_strategy,
    is_complete,
    passes_per_epoch,
    predict,
    read_state,
    recover,
    stop_message,
    train,
)

__all__ = [
    "ARCHS", "AugmentConfig", "DeepError", "ModelConfig", "TrainConfig", "TrainResult", "augment_batch",
    "auroc", "build_model", "cam", "cam_model", "check_resumable", "class_weights", "get_strategy",
    "gradcam", "is_complete", "load_model", "make_dataset", "passes_per_epoch", "pointing_game",
    "predict", "read_state", "recover", "stop_message", "train", "upsample",
]
