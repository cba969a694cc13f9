"""Typed settings from plain dicts (YAML, checkpoints): a dataclass per section, every
default in the dataclass, unknown keys and values of the wrong type refused naming the key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Collection, TypeVar

T = TypeVar("T")
# Float settings must be finite; one that may be infinite says so in its field's metadata
# (``field(default=..., metadata={ALLOWS_INFINITY: True})``). NaN is never a setting.
ALLOWS_INFINITY = "allows_infinity"


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    """Refuse a setting that is not one of ``choices``, naming the setting and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_argument(call: str, name: str, value: Any, expected: type, example: str) -> None:
    """Refuse a Python API argument of the wrong type (``seed="3"``, ``fine_tune="no"``, which
    Python would take as True) with a TypeError naming the call, the argument and a right form."""
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise TypeError(f"{call}: {name}={value!r} must be {expected.__name__}, e.g. {name}={example}")


def check_text_list(call: str, name: str, value: Any, example: str) -> None:
    """Refuse a Python API argument that should be a list of strings but is one string (which
    Python would iterate letter by letter) or holds something else."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{call}: {name}={value!r} must be a list of strings, e.g. {name}={example}")


def dataclass_from_dict(cls: type[T], data: dict[str, Any], source: str) -> T:
    """Build a config dataclass from a dict: unknown keys and values of the wrong type raise,
    naming the key. Missing keys take the dataclass defaults.

    Numbers are read once, here: an int is accepted for a float field, and so is a numeric
    string, because YAML 1.1 reads ``2e-4`` (no dot) as text. For the same reason a boolean
    given to a text field is read back as the word YAML took it for (``off`` -> "off").
    Every float (also in a list) must be finite: NaN compares false with every bound, so a
    range check in ``__post_init__`` alone would let it through. A field whose metadata has
    ``ALLOWS_INFINITY`` may be infinite.
    """
    if isinstance(data, cls):
        return data  # typed already (task folders written when build_datasets got a dict parse again)
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in data.items():
        values[key] = _typed(hints[key], value, f"{source}.{key}")
        _check_finite(values[key], f"{source}.{key}", fields[key].metadata.get(ALLOWS_INFINITY, False))
    return cls(**values)


def _check_finite(value: Any, name: str, allows_infinity: bool) -> None:
    """Refuse a NaN (or, unless allowed, infinite) float, alone or in a list."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, float) and (math.isnan(item) or (math.isinf(item) and not allows_infinity)):
            raise ValueError(f"{name} must be a finite number, got {item}")


class SettingTypeError(TypeError, ValueError):
    """A setting of the wrong type: a mistake in the user's configuration (hence also a ValueError)."""


def _typed(hint: Any, value: Any, name: str) -> Any:
    """``value`` checked against the annotation ``hint`` (numbers converted to float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if value is None:
            return None
        if len(options) != 1:
            return value  # a real union: left to the dataclass's own checks
        hint, origin = options[0], typing.get_origin(options[0])
    expected = origin or hint
    if expected is str and isinstance(value, bool):
        return "on" if value else "off"
    if expected is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SettingTypeError(f"{name} must be a number, got {value!r}")
    if expected is list and isinstance(value, str):
        raise SettingTypeError(f"{name} must be a list, got {value!r}: write a list in brackets, [{value}]")
    if expected in (int, bool, str, list, dict) and (
        not isinstance(value, expected) or (expected is int and isinstance(value, bool))
    ):
        raise SettingTypeError(f"{name} must be {expected.__name__}, got {value!r}")
    return value
