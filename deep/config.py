"""Typed, frozen configs of the CNN: the model (travels with it), augmentation and training.

``ModelConfig`` is stored as JSON beside every CNN. ``TrainConfig`` (with its
``AugmentConfig``) is stored in the checkpoint folder's ``state.json``; everything in it but
``max_epochs`` must match to resume a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from deep.errors import DeepError

ARCHS = ("small", "densenet169", "mobilenetv3small", "small-s8")


class _JsonMixin:
    """``to_dict`` / ``from_dict`` (unknown keys refused) / ``to_json`` / ``from_json``."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DeepError(f"unknown {cls.__name__} keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError) as e:
            raise DeepError(f"invalid {cls.__name__} JSON: {e}") from None


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Architecture settings of a CNN; everything needed to rebuild it.

    Parameters
    ----------
    arch : {"small", "densenet169", "mobilenetv3small", "small-s8"}
        "small" is a compact separable CNN trained from scratch (default); "small-s8" the same
        family at output stride 8 (a 16 x 16 CAM at 128 px; docs/cam.md); the others are
        ``keras.applications`` backbones built with ``weights=None`` or a local weights file.
    size : int
        Input side S in pixels; the model maps float32 (B, S, S, 1) in [0, 1] to (B, 1).
    width : int
        Channels of the stem of the "small" arch (stages use 2x, 4x, 8x). 16 (67k parameters)
        trains faster on 2 CPU cores than 32 (253k) and learned as well per epoch on the
        synthetic default (docs/performance.md, "Design choices").
    dropout : float
        Dropout rate between global average pooling and the sigmoid unit (training only).
    bn_momentum : float
        BatchNorm moving-average momentum. 0.9 (not Keras' 0.99) so the moving statistics
        catch up within a short fit; otherwise inference-mode outputs collapse to a constant.
    parts : tuple of str
        Body-part names of the auxiliary part head (``Dense(K, softmax, "part")`` on the pooled
        features, trained jointly), in the order of its outputs; the card's ``part_labels``.
        Empty: no part head (a model trained before the head existed).
    """

    arch: str = "small"
    size: int = 128
    width: int = 16
    dropout: float = 0.2
    bn_momentum: float = 0.9
    parts: tuple = ()

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise DeepError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not 32 <= int(self.size) <= 1024:
            raise DeepError(f"model size must be within 32..1024 px, got {self.size}")
        if self.width < 4 or not 0.0 <= self.dropout < 1.0 or not 0.0 < self.bn_momentum < 1.0:
            raise DeepError(f"invalid model config: {self}")
        parts = self.parts
        if not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) and p for p in parts):
            raise DeepError(f"model parts must be a list of body-part names, got {parts!r}")
        object.__setattr__(self, "parts", tuple(parts))  # a JSON list -> a tuple (frozen, hashable)
        if len(self.parts) == 1 or len(set(self.parts)) != len(self.parts):
            raise DeepError(f"the part head needs >= 2 distinct body parts, got {list(self.parts)}")

    def to_dict(self) -> dict:
        """JSON types only (``parts`` as a list): the dict goes into cards and state.json as is."""
        return {**super().to_dict(), "parts": list(self.parts)}


@dataclass(frozen=True)
class AugmentConfig(_JsonMixin):
    """Random changes applied to training batches only (never at validation or inference).

    The defaults were chosen from measured runs (docs/training.md): what a radiograph can
    plausibly look like in another acquisition, not what suits one data set.

    Parameters
    ----------
    hflip : bool
        Mirror left/right with probability 1/2 (left and right limbs are both common).
    vflip : bool
        Mirror top/bottom with probability 1/2 (off: radiographs are rarely upside down).
    max_rotation : float
        Rotation drawn uniformly in [-max_rotation, max_rotation] degrees (0..180).
    scale : float
        Isotropic zoom drawn in [1 - scale, 1 + scale] (0..0.5).
    shift : float
        Translation per axis drawn in [-shift, shift] times the image side (0..0.5).
    brightness : float
        Additive offset drawn in [-brightness, brightness] on [0, 1] intensities (0..0.5).
    contrast : float
        Contrast factor about the image mean drawn in [1 - contrast, 1 + contrast] (0..0.9).
    """

    hflip: bool = True
    vflip: bool = False
    max_rotation: float = 20.0
    scale: float = 0.1
    shift: float = 0.05
    brightness: float = 0.1
    contrast: float = 0.2

    def __post_init__(self):
        bounds = {"max_rotation": 180.0, "scale": 0.5, "shift": 0.5, "brightness": 0.5,
                  "contrast": 0.9}
        for name, hi in bounds.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= hi:
                raise DeepError(f"augmentation {name} must be within 0..{hi:g}, got {v!r}")
        if not isinstance(self.hflip, bool) or not isinstance(self.vflip, bool):
            raise DeepError("augmentation hflip / vflip must be true or false")


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """Optimisation settings; all but ``max_epochs`` must match to resume a run.

    The defaults train until converged: training ends when the validation study AUROC has
    not improved for ``patience`` epochs (early stopping), and the learning rate drops by
    ``lr_factor`` after ``lr_patience`` epochs without a gain. ``max_epochs`` is a cap that a
    normal run does not reach; lower it only to bound the time (the demo does).

    Parameters
    ----------
    max_epochs : int
        Hard cap on epochs (>= 1).
    min_steps : int
        An epoch is at least this many optimiser steps: a small training split is passed
        over several times per "epoch", so patience and the learning-rate schedule measure
        the same amount of learning on 500 images as on 5,000.
    batch_size : int
    seed : int
        Seeds the initial weights, shuffling, augmentation and dropout of every epoch.
    lr : float
        Initial Adam learning rate.
    patience : int
        Early stopping: epochs without a gain of the monitored validation AUROC.
    lr_patience, lr_factor, min_lr
        Reduce-on-plateau schedule on the monitored validation AUROC.
    warmup_epochs : int
        For this many epochs the learning rate stays at ``lr`` and training does not stop:
        the plateau counters start after them. On a small or hard training set the validation
        AUROC can sit at chance for several epochs before the model finds the signal; a
        plateau there is not convergence, and a learning-rate drop would stall it for good.
    smooth : int
        The monitored value (early stopping, learning-rate plateaus, best epoch) is the mean
        validation study AUROC of the last ``smooth`` epochs: one lucky epoch on a small
        validation split does not end training early.
    auroc_tolerance : float
        Monitored values within this of the highest so far are ties, won by the lower
        validation loss (AUROC differences this small are noise on ~100 validation studies).
    min_loss_delta : float
        A tie resets the patience only when it lowers the validation loss by more than this.
    augment : AugmentConfig or None
        None trains without augmentation.
    part_weight : float
        Lambda of the joint loss ``BCE(abnormal) + part_weight * CE(body part)`` when the model
        has a part head (``ModelConfig.parts``); the sample weights apply to the BCE only.
        0.1 was chosen on validation part accuracy and AUROC (docs/training.md).
    """

    max_epochs: int = 100
    min_steps: int = 50
    batch_size: int = 32
    seed: int = 0
    lr: float = 1e-3
    patience: int = 10
    lr_patience: int = 4
    lr_factor: float = 0.3
    min_lr: float = 1e-5
    warmup_epochs: int = 15
    smooth: int = 3
    auroc_tolerance: float = 0.005
    min_loss_delta: float = 0.001
    augment: AugmentConfig | None = AugmentConfig()
    part_weight: float = 0.1

    def __post_init__(self):
        ints = {"max_epochs": 1, "min_steps": 1, "batch_size": 1, "patience": 1, "lr_patience": 1,
                "smooth": 1, "warmup_epochs": 0}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise DeepError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not (math.isfinite(self.lr) and self.lr > 0 and 0 < self.lr_factor < 1
                and 0 <= self.min_lr <= self.lr):
            raise DeepError(f"invalid learning-rate settings: lr {self.lr}, factor {self.lr_factor}, "
                            f"min {self.min_lr}")
        if not (0 <= self.auroc_tolerance < 0.5 and 0 <= self.min_loss_delta < 1):
            raise DeepError(f"auroc_tolerance must be in [0, 0.5) and min_loss_delta in [0, 1), got "
                            f"{self.auroc_tolerance}, {self.min_loss_delta}")
        if isinstance(self.part_weight, bool) or not (isinstance(self.part_weight, (int, float))
                                                      and 0.0 <= self.part_weight <= 10.0):
            raise DeepError(f"part_weight must be within 0..10, got {self.part_weight!r}")
        if isinstance(self.augment, dict):  # from_dict / JSON
            object.__setattr__(self, "augment", AugmentConfig.from_dict(self.augment))
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise DeepError(f"augment must be an AugmentConfig or None, got {self.augment!r}")

    def resume_key(self) -> dict:
        """The settings a checkpoint must have been trained with to be resumed (all but the cap)."""
        d = self.to_dict()
        d.pop("max_epochs")
        return d
