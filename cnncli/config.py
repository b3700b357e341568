"""YAML -> validated, resolved config. (Placeholder until the config issue lands.)"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import ConfigError


def load_config(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config: {err.strerror}", file=path) from None
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("config must be a mapping", file=path)
    return data


def model_section(cfg: dict) -> dict:
    section = cfg.get("model", cfg)
    if not isinstance(section, dict) or "layers" not in section or "input_shape" not in section:
        raise ConfigError("config needs model.input_shape and model.layers")
    return section
