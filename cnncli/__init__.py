"""cnncli: train convolutional neural networks written in pure NumPy from a YAML file."""

from . import layers  # noqa: F401  (fills the registry)
from .errors import CheckpointError, CnncliError, ConfigError, DataError, ShapeError
from .model import Model, model_from_entries

__version__ = "0.1.0"


def build_model(config, *, dtype="float32", seed=None) -> Model:
    """Build a model from a YAML path or a config dict (full config, or just its ``model:``)."""
    from .config import load_config, model_section

    cfg = load_config(config) if not isinstance(config, dict) else config
    section = model_section(cfg)
    if seed is None:
        seed = cfg.get("seed", 0) if isinstance(cfg.get("seed", 0), int) else 0
    return model_from_entries(section["input_shape"], section["layers"], dtype=dtype, seed=seed)


__all__ = ["build_model", "Model", "model_from_entries", "CnncliError", "ConfigError",
           "ShapeError", "DataError", "CheckpointError", "__version__"]
