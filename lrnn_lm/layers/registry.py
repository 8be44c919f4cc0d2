"""The one registry of mixers: ``LRNNConfig.mixer`` names resolve here, and so do their fields and defaults."""

from __future__ import annotations

from typing import Any

from .base import Mixer

MIXERS: dict[str, type[Mixer]] = {}


def register_mixer(name: str):
    """Class decorator: make ``cls`` available as ``LRNNConfig(mixer=name)``."""

    def register(cls: type[Mixer]) -> type[Mixer]:
        if name in MIXERS and MIXERS[name] is not cls:
            raise ValueError(f"mixer {name!r} is already registered by {MIXERS[name].__qualname__}")
        for field, default in cls.config_fields.items():
            for other in MIXERS.values():
                if field in other.config_fields and other.config_fields[field] != default:
                    raise ValueError(
                        f"mixer {name!r} declares field {field!r} with default {default!r}, but mixer "
                        f"{other.name!r} declares it with {other.config_fields[field]!r}"
                    )
        cls.name = name
        MIXERS[name] = cls
        return cls

    return register


def get_mixer(name: str) -> type[Mixer]:
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; registered: {sorted(MIXERS)}")
    return MIXERS[name]


def mixer_field_defaults() -> dict[str, Any]:
    """Every mixer field with its default, in registration order."""
    fields: dict[str, Any] = {}
    for cls in MIXERS.values():
        for field, default in cls.config_fields.items():
            fields.setdefault(field, default)
    return fields
