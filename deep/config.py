"""ModelConfig: the small typed config that travels with every CNN (stored as JSON beside it)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from deep.errors import DeepError

ARCHS = ("small", "densenet169", "mobilenetv3small")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings of a CNN; everything needed to rebuild it.

    Parameters
    ----------
    arch : {"small", "densenet169", "mobilenetv3small"}
        "small" is a compact separable CNN trained from scratch (default); the others are
        ``keras.applications`` backbones built with ``weights=None`` or a local weights file.
    size : int
        Input side S in pixels; the model maps float32 (B, S, S, 1) in [0, 1] to (B, 1).
    width : int
        Channels of the stem of the "small" arch (stages use 2x, 4x, 8x). 16 (67k parameters)
        trains ~2x faster on 2 CPU cores than 32 (253k) and learned as well per epoch on the
        synthetic default.
    dropout : float
        Dropout rate between global average pooling and the sigmoid unit (training only).
    bn_momentum : float
        BatchNorm moving-average momentum. 0.9 (not Keras' 0.99) so the moving statistics
        catch up within a short fit; otherwise inference-mode outputs collapse to a constant.
    """

    arch: str = "small"
    size: int = 128
    width: int = 16
    dropout: float = 0.2
    bn_momentum: float = 0.9

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise DeepError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if not 32 <= int(self.size) <= 1024:
            raise DeepError(f"model size must be within 32..1024 px, got {self.size}")
        if self.width < 4 or not 0.0 <= self.dropout < 1.0 or not 0.0 < self.bn_momentum < 1.0:
            raise DeepError(f"invalid model config: {self}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise DeepError(f"unknown ModelConfig keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            return cls.from_dict(json.loads(text))
        except (json.JSONDecodeError, TypeError) as e:
            raise DeepError(f"invalid ModelConfig JSON: {e}") from None
