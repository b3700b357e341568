"""Configs: YAML read with positions (yaml_file), every key's rule and default (schema), and the
check that turns a file into a resolved ``RunConfig`` with errors at file:line:col (resolve)."""

from cnncli.config.resolve import (
    CheckedConfig,
    check_config,
    check_data,
    check_text,
    dump_config,
    load_config,
    load_config_text,
    resolve_config,
)
from cnncli.config.schema import (
    AugmentConfig,
    DataConfig,
    EarlyStoppingConfig,
    InitFromConfig,
    LayerSpec,
    ModelConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
)
from cnncli.config.yaml_file import parse_yaml, read_config_text

__all__ = ["AugmentConfig", "CheckedConfig", "DataConfig", "EarlyStoppingConfig", "InitFromConfig",
           "LayerSpec",
           "ModelConfig", "RunConfig", "ScheduleConfig", "TrainConfig", "check_config",
           "check_data", "check_text", "dump_config", "load_config", "load_config_text",
           "parse_yaml", "read_config_text", "resolve_config"]
