"""One JSON round trip for the frozen config dataclasses that travel inside models.

``PreprocessConfig``, ``HogConfig`` and ``deep.ModelConfig`` are written into model files and
read back on a device, so what comes back is untrusted: a field declared ``int`` must be an
int (not ``True``, not ``"8"``), a ``float`` must be a finite number, a ``bool`` a real bool
(``"no"`` is truthy in Python). :class:`JsonConfig` gives each dataclass the same strict
``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json``; each class declares only its ranges,
in its own ``__post_init__`` after calling :meth:`JsonConfig.check_types`.
"""

from __future__ import annotations

import dataclasses
import json
import math

from edge.errors import ConfigError

MAX_JSON_CHARS = 1 << 20  # a config is a few hundred characters; anything huge is not one
MAX_JSON_DEPTH = 16


def _depth(value, limit: int, level: int = 0) -> None:
    """Raise ValueError when ``value`` nests deeper than ``limit`` (iteratively safe for JSON)."""
    stack = [(value, level)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            raise ValueError(f"JSON nested deeper than {limit} levels")
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)


def parse_json(text, what: str = "value", max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` for untrusted text: size and depth bounded, NaN/Infinity refused.

    Raises
    ------
    ValueError
        One line saying what is wrong (never RecursionError or a JSONDecodeError traceback).
    """
    if not isinstance(text, (str, bytes, bytearray)):
        raise ValueError(f"{what}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"{what}: {len(text):,} characters of JSON, above the {MAX_JSON_CHARS:,} limit")

    def no_constant(name):
        raise ValueError(f"{what}: {name} is not a number in JSON")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    _depth(value, max_depth)
    return value


def _check_field(name: str, kind: str, value):
    """The value, normalised (int -> float for float fields), or ConfigError (a ValueError)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    elif kind == "str" and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


class JsonConfig:
    """Mixin for frozen dataclasses: strict types, JSON in and out, unknown keys refused."""

    def check_types(self) -> None:
        """Check (and normalise) every field annotated ``int``, ``float``, ``bool`` or ``str``.

        Call first thing in ``__post_init__``; raises ConfigError (a ValueError) naming the field.
        """
        for f in dataclasses.fields(self):
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            if kind in ("int", "float", "bool", "str"):
                value = _check_field(f.name, kind, getattr(self, f.name))
                object.__setattr__(self, f.name, value)  # frozen dataclass: normalise in place

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        """Build from a dict; unknown keys are an error (a model from a newer murakit)."""
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.__name__} must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} parameters: {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(parse_json(text, cls.__name__))
