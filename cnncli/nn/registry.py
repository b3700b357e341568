"""The layer registry: a config's ``type:`` name -> the class that builds it."""

from __future__ import annotations

import difflib
import inspect
import re

from cnncli.errors import ConfigError

LAYERS: dict[str, type] = {}
ALIASES: dict[str, str] = {}


def register(name: str, *aliases: str):
    """Class decorator: make a layer available under ``type: name`` (and its aliases)."""

    def decorate(cls):
        if name in LAYERS or name in ALIASES:
            raise ValueError(f"layer type {name!r} is registered twice")
        cls.type_name = name
        LAYERS[name] = cls
        for alias in aliases:
            ALIASES[alias] = name
        return cls

    return decorate


def canonical_type(name) -> str:
    """Resolve an alias (``linear`` -> ``dense``); raise with a suggestion if unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"layer type must be a string, got {name!r}", key="type")
    if name in LAYERS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    known = sorted(set(LAYERS) | set(ALIASES))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "run 'cnncli layers' for the list"
    raise ConfigError(f"unknown layer type {name!r}", key="type", hint=hint)


def layer_class(name: str) -> type:
    return LAYERS[canonical_type(name)]


def catalogue() -> list[dict]:
    """Every registered layer type: aliases, hyperparameters with defaults, first doc paragraph."""
    # Here, not at the top: importing the layers package registers each layer in this module.
    from cnncli.nn.layers.base import hyperparameters

    out = []
    for name in sorted(LAYERS):
        cls = LAYERS[name]
        doc = inspect.getdoc(cls) or ""
        out.append({
            "type": name,
            "aliases": sorted(a for a, t in ALIASES.items() if t == name),
            "hyperparameters": hyperparameters(cls),
            "key_aliases": dict(getattr(cls, "aliases", {}) or {}),
            "accepts_activation": bool(getattr(cls, "accepts_activation", False)),
            "is_activation": bool(getattr(cls, "is_activation", False)),
            # first paragraph, one line, plain text: ``x`` (reST literals) shown as x
            "doc": re.sub(r"``(.+?)``", r"\1", " ".join(doc.split("\n\n")[0].split())),
        })
    return out
