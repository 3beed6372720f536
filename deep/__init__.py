"""deep: the Keras CNN on image arrays (tf.data pipeline, training, CAM/Grad-CAM).

Knows nothing of MURA's files; takes uint8 image caches and writes models.

The names below are loaded on first use (PEP 562), so ``from deep.config import TrainConfig``
(e.g. to show the training defaults in a CLI's ``--help``) does not import TensorFlow.
"""

import importlib

_EXPORTS = {
    "deep.config": ("ARCHS", "AugmentConfig", "ModelConfig", "TrainConfig"),
    "deep.data": ("augment_batch", "make_dataset"),
    "deep.errors": ("DeepError",),
    "deep.explain": ("cam", "gradcam", "pointing_game", "upsample"),
    "deep.gate": ("block_sizes", "gate_layers", "pooled_model", "with_gate"),
    "deep.model": ("build_model", "cam_model", "load_model", "part_output", "probability_model"),
    "deep.training": ("TrainResult", "auroc", "check_resumable", "class_weights", "get_strategy",
                   "is_complete", "part_indices", "passes_per_epoch", "predict", "predict_outputs", "read_state", "recover",
                   "schedule_step", "stop_message", "train"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ARCHS",
    "AugmentConfig",
    "DeepError",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "augment_batch",
    "auroc",
    "block_sizes",
    "build_model",
    "cam",
    "cam_model",
    "check_resumable",
    "class_weights",
    "gate_layers",
    "get_strategy",
    "gradcam",
    "is_complete",
    "load_model",
    "make_dataset",
    "part_indices",
    "part_output",
    "passes_per_epoch",
    "pointing_game",
    "pooled_model",
    "predict",
    "predict_outputs",
    "probability_model",
    "read_state",
    "recover",
    "schedule_step",
    "stop_message",
    "train",
    "upsample",
    "with_gate",
]

assert sorted(__all__) == sorted(_WHERE)  # one list of names, checked at import


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        try:
            value = importlib.import_module(f"deep.{name}")  # a submodule, e.g. deep.explain
        except ModuleNotFoundError:
            raise AttributeError(f"module 'deep' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
