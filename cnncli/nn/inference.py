"""Inference in evaluation mode: class probabilities of a batch, and each layer's output.

The batched forward is ``Model.predict_logits``; eval, predict, show and bench all go through
it or through ``layer_outputs`` here, and every softmax is ``nn.losses.softmax``.
"""

from __future__ import annotations

import numpy as np

from cnncli.nn.layers.base import to_internal
from cnncli.nn.losses import softmax
from cnncli.nn.model import is_multi_input


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, so probabilities printed to 6 places are exact."""
    return softmax(np.asarray(logits, dtype=np.float64), axis=-1)


def layer_outputs(model, x: np.ndarray):
    """Yield ``(index, output)`` after each layer of ``model`` in config order, outputs in
    NCHW (or N, F) layout, for inputs ``x`` (N, C, H, W) in evaluation mode.

    Each output is a copy: a later layer may work in place on the array it is given."""
    values = {0: to_internal(np.asarray(x, dtype=model.dtype))}
    for index, (layer, src) in enumerate(zip(model.layers, model.sources, strict=True)):
        inputs = [values[s] for s in src]
        h = layer.forward(inputs if is_multi_input(layer) else inputs[0], train=False)
        values[index + 1] = h
        yield index, np.array(np.moveaxis(h, -1, 0), order="C")
