"""Frozen dataclass configs: every field documented, checked in __post_init__, unknown keys refused."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import ConfigError


class ConfigBase:
    """Mixin for frozen dataclasses that hold a user's choices (never facts about the model)."""

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = ""):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            place = f"{where}: " if where else ""
            raise ConfigError(f"{place}unknown {cls.__name__} field(s) {unknown}; known: {sorted(names)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                value = values[f.name]
                # JSON has no tuples: restore them so a loaded config equals the saved one.
                if isinstance(value, list):
                    value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                kwargs[f.name] = value
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


def check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")
