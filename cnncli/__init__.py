"""cnncli: train convolutional neural networks written in pure NumPy from a YAML file."""

import os

# First: a Ctrl-C during the imports below is one line, not a traceback (cnncli/startup.py).
from cnncli import startup  # noqa: F401

# Before NumPy loads: may set BLAS threads (see cnncli/parallel/threads.py).
from cnncli.parallel import threads  # noqa: F401

# isort: split
import numpy as np

from cnncli.errors import (
    CheckpointError,
    CnncliError,
    ConfigError,
    DataError,
    MemoryLimitError,
    ShapeError,
)
from cnncli.nn import layers  # noqa: F401  (fills the registry)
from cnncli.nn.model import Model, model_from_entries
from cnncli.parallel.plan import apply_plan

__version__ = "0.1.0"


def build_model(config, *, dtype="float32", seed=None, speedups=None) -> Model:
    """Build a model from a YAML path, a config dict (full config, or just its ``model:``) or a
    RunConfig.

    A dict is checked exactly like a file, so bad values raise ConfigError, never a traceback.
    The model runs with cnncli's speed-ups unless ``speedups=False`` or CNNCLI_SPEEDUPS=off
    (docs/speed.md); ``model_from_entries`` builds one that runs the plain math.
    """
    from cnncli.config import RunConfig, resolve_config

    if isinstance(config, dict):
        model_only = "model" not in config and ("layers" in config or "input_shape" in config)
        run = resolve_config({"model": config} if model_only else config)
    elif isinstance(config, (str, os.PathLike, RunConfig)):
        run = resolve_config(config)
    else:
        raise ConfigError(f"build_model needs a YAML path or a config dict, got "
                          f"{type(config).__name__} {config!r}")
    if _dtype_name(dtype) not in ("float32", "float64"):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}", key="dtype")
    seed = run.seed if seed is None else seed
    _check_weights_fit(run, dtype)
    model = model_from_entries(run.model.input_shape, run.model.entries(), dtype=dtype, seed=seed)
    return apply_plan(model, speedups=speedups)


def _check_weights_fit(run, dtype) -> None:
    """Refuse a model whose weights and gradients (what building allocates) do not fit."""
    from cnncli.nn.memory import check_memory, estimate_memory, unbuilt_layers

    entries = run.model.entries()
    unbuilt, labels, shapes, sources = unbuilt_layers(run.model.input_shape, entries)
    check_memory(estimate_memory(unbuilt, shapes, batch_size=0, dtype=dtype, labels=labels,
                                 sources=sources),
                 what="this model", batch_key=None)


def _dtype_name(dtype) -> str | None:
    try:
        return np.dtype(dtype).name
    except TypeError:
        return None


__all__ = ["build_model", "Model", "model_from_entries", "apply_plan", "CnncliError", "ConfigError",
           "ShapeError", "DataError", "CheckpointError", "MemoryLimitError", "__version__"]
