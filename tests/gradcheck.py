"""Finite-difference gradient checks for layers, in float64."""

from __future__ import annotations

import numpy as np

from cnncli.nn.layers.base import from_internal, to_internal


def build_layer(layer, input_shape, seed=0, dtype=np.float64):
    """Build ``layer`` for a per-sample input shape in float64 and return it."""
    layer.build(tuple(input_shape), np.random.default_rng(seed), dtype)
    return layer


def check_layer_gradients(layer, x_nchw, *, train=True, eps=1e-6, rtol=1e-5, atol=1e-7,
                          seed=0, check_params=True):
    """Compare analytic dL/dx and dL/dparams with central differences.

    The loss is ``sum(w * y)`` for a fixed random ``w``, so dL/dy = w. ``layer`` must be
    built in float64. Returns the analytic (dx, grads) for further assertions.
    """
    rng = np.random.default_rng(seed)
    x = to_internal(np.asarray(x_nchw, dtype=np.float64))

    def loss():
        return float(np.sum(w * layer.forward(x.copy(), train=train)))

    y = layer.forward(x.copy(), train=train)
    w = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(w.copy())
    numeric_dx = _numeric(loss, x, eps)
    np.testing.assert_allclose(dx, numeric_dx, rtol=rtol, atol=atol, err_msg="dL/dx")
    if check_params:
        for key, value in layer.params.items():
            numeric = _numeric(loss, value, eps)
            np.testing.assert_allclose(layer.grads[key], numeric, rtol=rtol, atol=atol,
                                       err_msg=f"dL/d{key}")
    return from_internal(dx), {k: v.copy() for k, v in layer.grads.items()}


def _numeric(loss, array, eps):
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss()
        flat[i] = old - eps
        down = loss()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad
