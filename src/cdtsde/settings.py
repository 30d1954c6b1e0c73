"""Configuration dataclasses <-> plain data (JSON/YAML), one generic conversion for every section.

`from_plain(cls, data, what)` builds dataclass `cls` from a mapping: nested dataclass fields are built
from nested mappings, lists become tuples where a field is annotated as a tuple, and values are checked
against the annotations (int, float, str, bool, tuples, unions, None), so a typo or a wrong type names
the option instead of failing later; after the class's own range checks, no number may be NaN or
infinite and no integer negative. `to_plain(obj)` is the inverse (tuples become lists).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from functools import cache

# annotation -> (what the message calls it, whether a plain value is one); bools are not numbers here
SCALARS = {
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
}


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _check(value, annotation, name: str):
    """`value` converted to `annotation` (nested dataclasses, tuples) or a ValueError naming `name`."""
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        # an optional setting that is given is checked as what it is optional to, with that type's message
        for option in [arg for arg in typing.get_args(annotation) if value is None or arg is not type(None)]:
            try:
                return _check(value, option, name)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[-1] if len(errors) == 1 else f"{name}: {value!r} matches none of {annotation}")
    if annotation is type(None):
        if value is not None:
            raise ValueError(f"{name} must be null, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return value if isinstance(value, annotation) else from_plain(annotation, value, name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(annotation)
        item = args[0] if args else typing.Any
        return tuple(_check(v, item, f"{name}[{i}]") for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if annotation in SCALARS:
        description, accepts = SCALARS[annotation]
        if not accepts(value):
            raise ValueError(f"{name} must be {description}, got {value!r}")
        return float(value) if annotation is float else value
    return value


def from_plain(cls, data, what: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name (`what` says
    which section, e.g. "train")."""
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"{what} options must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    hints = _hints(cls)
    values = {key: _check(value, hints[key], f"{what}.{key}") for key, value in data.items()}
    built = cls(**values)  # the class's own range checks first: their messages say what is allowed
    for key, value in values.items():
        _check_plausible(value, f"{what}.{key}")
    return built


def _check_plausible(value, name: str) -> None:
    """What no setting may be: a NaN or infinite number, a negative integer (integer settings count
    things: steps, channels, layers, seeds)."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plausible(item, f"{name}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value}")


def to_plain(obj):
    """A dataclass (or nested structure of them) as JSON-ready plain data; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def check_count(name: str, value) -> None:
    """A setting that counts something (sampler steps, ...): an integer >= 1, never a bool."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_positive(name: str, value) -> None:
    """A scale that must be > 0 (a learning rate, a data scale)."""
    if not float(value) > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_unit_interval(name: str, value) -> None:
    """A setting in [0, 1] (eta, gamma, ...)."""
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
