"""``--set KEY.PATH=VALUE``: change any config value by its dotted path before the check.

The valid paths are the schema's keys (``cnncli.config.schema``) and, under
``model.layers.N``, that layer's hyperparameters (the registry); list items go by index. Values
are YAML (``0.01``, ``false``, ``[3, 32, 32]``, ``null``) and are then checked exactly as if the
file held them; an error about an override names the ``--set`` text instead of a line.
"""

from __future__ import annotations

import dataclasses
import difflib

import yaml

from cnncli.config.schema import (
    AugmentConfig,
    DataConfig,
    EarlyStoppingConfig,
    ScheduleConfig,
    TrainConfig,
)
from cnncli.config.yaml_file import parse_yaml
from cnncli.errors import ConfigError

#: Sections whose keys are the fields of a schema dataclass.
SECTION_FIELDS = {("data",): DataConfig, ("data", "augment"): AugmentConfig,
                  ("train",): TrainConfig, ("train", "lr_schedule"): ScheduleConfig,
                  ("train", "early_stopping"): EarlyStoppingConfig}
TOP_KEYS = ("name", "seed", "model", "data", "train")
#: Keys that hold lists whose items may be set by index.
LIST_KEYS = {("model", "input_shape"), ("model", "layers"), ("data", "path"), ("train", "betas"),
             ("train", "lr_schedule", "milestones")}


class SetPosition(tuple):
    """Where an overridden value came from: no line and column, the ``--set`` text instead."""

    def __new__(cls, text: str):
        made = super().__new__(cls, (None, None))
        made.text = text
        return made


def set_source(text: str) -> str:
    return f"--set {text}"


def parse_set(text: str) -> tuple[tuple, object]:
    """``"train.lr=0.01"`` -> (("train", "lr"), 0.01); indices become ints."""
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"{text!r} is not KEY.PATH=VALUE", file=set_source(text),
                          hint="e.g. --set train.lr=0.01")
    key, _, raw = text.partition("=")
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"{key.strip()!r} is not a dotted key path", file=set_source(text),
                          hint="e.g. train.lr or model.layers.0.out_channels")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"cannot read the value {raw!r} as YAML ({problem})",
                          file=set_source(text), hint="quote strings with spaces") from None
    if value is not None:   # read again as a file is, with its rules (1:10 is refused)
        try:
            value = parse_yaml(raw, file=set_source(text))[0]
        except ConfigError as err:
            raise ConfigError(err.message, file=set_source(text), hint=err.hint) from None
    path = tuple(int(p) if p.isdigit() else p for p in parts)
    return path, value


def _keys_at(data, path: tuple) -> tuple[str, ...] | None:
    """The keys a mapping at ``path`` may hold (None: not a known mapping)."""
    if path == ():
        return TOP_KEYS
    if path == ("model",):
        return ("input_shape", "layers")
    if path in SECTION_FIELDS:
        return tuple(f.name for f in dataclasses.fields(SECTION_FIELDS[path]))
    if len(path) == 3 and path[:2] == ("model", "layers") and isinstance(path[2], int):
        return _layer_keys(_get(data, path))
    return None


def _layer_keys(entry) -> tuple[str, ...]:
    from cnncli.nn import layers as _layers  # noqa: F401  (fills the registry)
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import LAYERS, canonical_type

    keys = ["type", "name"]
    try:
        cls = LAYERS[canonical_type(entry.get("type") if isinstance(entry, dict) else None)]
    except ConfigError:
        return tuple(keys)
    keys += list(hyperparameters(cls)) + list(getattr(cls, "aliases", {}) or {})
    if getattr(cls, "accepts_activation", False):
        keys.append("activation")
    return tuple(dict.fromkeys(keys))


def _get(data, path: tuple):
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _check_path(data, path: tuple) -> None:
    """Refuse a path that names no key, with the closest valid one."""
    text = _dotted(path)
    for depth, part in enumerate(path):
        parent = path[:depth]
        if parent in LIST_KEYS:
            items = _get(data, parent)
            size = len(items) if isinstance(items, list) else 0
            if not isinstance(part, int) or part >= size:
                what = f"index {part}" if isinstance(part, int) else f"{part!r}"
                raise ConfigError(f"no such item ({what}; "
                                  f"{_dotted(parent)} has {size} item{'s' * (size != 1)})",
                                  file=set_source(text),
                                  hint=f"indices 0 to {size - 1}" if size else None)
            continue
        keys = _keys_at(data, parent)
        if keys is None:
            raise ConfigError(f"{_dotted(parent)} holds a value, not keys",
                              file=set_source(text), hint=f"set {_dotted(parent)}=VALUE")
        if part not in keys:
            close = difflib.get_close_matches(str(part), list(keys), n=1)
            hint = (f"did you mean {_dotted(parent + (close[0],))}?" if close
                    else "valid keys: " + ", ".join(keys))
            raise ConfigError(f"no such key; {hint}", file=set_source(text))


def _set(data, path: tuple, value) -> None:
    node = data
    for depth, part in enumerate(path[:-1]):
        child = node[part] if isinstance(node, list) else node.get(part)
        if isinstance(child, str) and path[:depth + 1] == ("train", "lr_schedule"):
            child = {"type": child}          # `lr_schedule: cosine` written as a name
        elif not isinstance(child, (dict, list)):
            child = {}                       # a section left out or null
        else:
            child = dict(child) if isinstance(child, dict) else list(child)
        node[part] = child
        node = child
    node[path[-1]] = value


def apply_overrides(data, locations: dict, sets) -> dict:
    """``data`` (parsed config) with every ``KEY.PATH=VALUE`` of ``sets`` applied, in order.

    ``locations`` (path -> position) is updated so that errors about an overridden value name
    its ``--set`` text. ``data`` is not changed; a copy is returned.
    """
    if not sets:
        return data
    if not isinstance(data, dict):
        return data                      # the check reports the file's own problem
    data = dict(data)
    for text in sets:
        path, value = parse_set(text)
        _check_path(data, path)
        _set(data, path, value)
        for written in [p for p in locations if p[:len(path)] == path]:
            del locations[written]
        locations[path] = SetPosition(set_source(text))
    return data


#: The keys the train arguments ``epochs=``, ``batch_size=``, ``lr=``, ``seed=`` stand for.
SHORTHANDS = {"epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
              "seed": "seed"}


def refuse_both(sets, **shorthands) -> None:
    """A key given both as a shorthand (``lr=0.1``) and in ``sets`` is ambiguous: refuse it."""
    changed = {_dotted(parse_set(text)[0]) for text in sets}
    for name, value in shorthands.items():
        if value is not None and SHORTHANDS[name] in changed:
            raise ConfigError(f"{name}={value} and --set {SHORTHANDS[name]}=... both set "
                              f"{SHORTHANDS[name]}", hint="give one of them")


def refuse_all_but_data(sets) -> None:
    """A trained checkpoint's config may change only in ``data.*`` keys: the weights fix the
    model, and training is over."""
    for text in sets:
        path, _ = parse_set(text)
        if path[0] != "data":
            raise ConfigError(f"only data.* keys can change for a trained checkpoint, not "
                              f"{_dotted(path)}", file=set_source(text),
                              hint="e.g. --set data.cache_dir=/data/cache")
