"""Configuration dataclasses as plain data (JSON/YAML) and back."""

from __future__ import annotations

import dataclasses


def from_plain(cls, data: dict, what: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys by name (`what` says which section)."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} options must be a mapping, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} option(s): {', '.join(sorted(unknown))}")
    return cls(**data)
