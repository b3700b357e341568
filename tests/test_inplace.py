"""In-place work between neighbouring layers (ReLU on a conv/dense output) changes no number."""

import numpy as np
import pytest

from cnncli.nn.layers.activation import ReLU
from cnncli.nn.model import model_from_entries
from cnncli.parallel.plan import apply_plan

NETS = {
    "mlp": ((12,), [{"type": "dense", "units": 9, "activation": "relu"},
                    {"type": "dense", "units": 7, "activation": "relu"},
                    {"type": "dense", "units": 3}]),
    "cnn": ((2, 8, 8), [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1,
         "activation": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 5, "kernel_size": 3, "activation": "relu"},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 6, "activation": "relu"},
        {"type": "dense", "units": 3}]),
    # batch norm takes its conv's output over (x_hat in its place) and hands its own output
    # to the ReLU after it; a dense layer's batchnorm1d the same
    "bn": ((2, 8, 8), [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "batchnorm2d"}, {"type": "relu"},
        {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
        {"type": "batchnorm2d", "affine": False},
        {"type": "flatten"},
        {"type": "dense", "units": 6}, {"type": "batchnorm1d"}, {"type": "relu"},
        {"type": "dense", "units": 3}]),
}


def _step(model, x, dlogits):
    model.zero_grad()
    logits = model.forward(x, train=True)
    dx = model.backward(dlogits)
    return logits, dx, model.grads()


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_model_matches_copying_model(net, dtype, monkeypatch):
    from cnncli.parallel.plan import ThreadSplitter

    # The plan's folded conv bias sums in another order (tests/test_speedups.py): off here.
    monkeypatch.setattr(ThreadSplitter, "fold_bias", False)
    shape, entries = NETS[net]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5,) + shape).astype(dtype)
    x_before = x.copy()
    fast = apply_plan(model_from_entries(shape, entries, dtype=dtype, seed=1))
    slow = model_from_entries(shape, entries, dtype=dtype, seed=1)  # no plan: no overwrites
    assert any(layer.may_overwrite_input for layer in fast.layers)
    assert not any(layer.may_overwrite_input or layer.may_overwrite_grad
                   for layer in slow.layers)
    dlogits = rng.standard_normal((5, 3)).astype(dtype)
    for _ in range(2):  # twice: reused buffers must not leak between steps
        logits_f, dx_f, grads_f = _step(fast, x, dlogits.copy())
        logits_s, dx_s, grads_s = _step(slow, x, dlogits.copy())
        np.testing.assert_array_equal(logits_f, logits_s)
        np.testing.assert_array_equal(dx_f, dx_s)
        for key in grads_s:
            np.testing.assert_array_equal(grads_f[key], grads_s[key], err_msg=key)
    np.testing.assert_array_equal(x, x_before)


def test_relu_after_relu_does_not_overwrite_the_first_cache():
    _, entries = NETS["cnn"]
    model = apply_plan(model_from_entries((2, 8, 8), entries, seed=0))
    kinds = [type(layer).__name__ for layer in model.layers]
    second = kinds.index("ReLU", kinds.index("ReLU") + 1) + 1
    assert kinds[second] == "ReLU" and not model.layers[second].may_overwrite_input


def test_relu_on_its_own_leaves_its_arguments_alone():
    relu = ReLU()
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
    dy = np.ones_like(x)
    y = relu.forward(x.copy())
    keep_x, keep_dy = x.copy(), dy.copy()
    relu.forward(x)
    relu.backward(dy)
    np.testing.assert_array_equal(x, keep_x)
    np.testing.assert_array_equal(dy, keep_dy)
    np.testing.assert_array_equal(y, np.maximum(keep_x, 0))


def test_batch_norm_works_in_place_between_a_conv_and_a_relu():
    shape, entries = NETS["bn"]
    model = apply_plan(model_from_entries(shape, entries, seed=0))
    kinds = [type(layer).__name__ for layer in model.layers]
    norm = kinds.index("BatchNorm2d")
    assert model.layers[norm].may_overwrite_input          # the conv's output becomes x_hat
    assert model.layers[norm + 1].may_overwrite_input      # the ReLU overwrites norm's output
    assert model.layers[norm].may_overwrite_grad           # and hands its dx over
