"""Configs: YAML read with positions, validated and resolved, errors located at file:line:col."""

from cnncli.config.loader import (
    CheckedConfig,
    check_config,
    check_data,
    check_text,
    dump_config,
    load_config,
    load_config_text,
    parse_yaml,
    read_config_text,
)

__all__ = ["CheckedConfig", "check_config", "check_data", "check_text", "dump_config",
           "load_config", "load_config_text", "parse_yaml", "read_config_text"]
