"""What the inspecting commands read: a config file, a checkpoint (.npz), or a run directory
(standing for its last.npz)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnncli.config import CheckedConfig, check_config, check_data
from cnncli.errors import ShapeError
from cnncli.inspect.walk import walk
from cnncli.training.checkpoint import is_checkpoint, load_checkpoint


def checked_source(path, input_shape=None, sets=()) -> CheckedConfig:
    """Check a config file, or the config stored in a checkpoint; ``input_shape`` overrides
    the model's (a checkpoint's dense weights must still fit it), ``sets`` any value."""
    if is_checkpoint(path):
        ckpt = load_checkpoint(path)
        checked = check_data(ckpt.config, file=str(path), input_shape=input_shape, sets=sets)
        if input_shape is not None:
            _check_dense_inputs(checked, ckpt.state, path, input_shape,
                                ckpt.run.model.input_shape)
        return checked
    return check_config(path, input_shape=input_shape, sets=sets)


def _check_dense_inputs(checked, state: dict, path, input_shape, trained_shape) -> None:
    """Trained dense weights fix their input size: an --input-shape must keep it."""
    for step in walk(checked.layers, checked.shapes[0], checked.shapes):
        weight = state.get(f"{step.layer.name}.weight")
        if step.layer.type_name != "dense" or weight is None or weight.ndim != 2:
            continue
        features = math.prod(step.in_shape)
        if weight.shape[1] != features:
            given = ",".join(map(str, input_shape))
            trained = ",".join(map(str, trained_shape))
            raise ShapeError(f"its input size changed: the checkpoint's weights take "
                             f"{weight.shape[1]} features, input_shape={given} gives it "
                             f"{features}", file=str(path), layer=checked.labels[step.index],
                             hint=f"dense layers fix the input size; this model was trained "
                                  f"on {trained}")


@dataclass
class ModelSource:
    """A built model and what its checkpoint knows about its inputs and outputs."""

    model: object
    normalization: dict        # {} for a config: inputs are used as given
    class_names: list | None
    trained: bool              # False for a config: initial weights


def model_source(path) -> ModelSource:
    """The model of a checkpoint (its weights) or of a config (initial weights)."""
    if is_checkpoint(path):
        ckpt = load_checkpoint(path)
        return ModelSource(ckpt.model(), ckpt.normalization, ckpt.class_names, True)
    from cnncli import build_model

    return ModelSource(build_model(str(path)), {}, None, False)


def source_normalization(path) -> dict:
    """A checkpoint's input statistics; {} for a config (inputs are used as given)."""
    return load_checkpoint(path).normalization if is_checkpoint(path) else {}
