"""A ReLU right before a max pool runs after it (fewer elements to touch), with the same numbers
as the config's order: outputs, input gradients and weight gradients, bit for bit."""

import numpy as np
import pytest

from cnncli.nn.model import model_from_entries
from cnncli.parallel.plan import apply_plan

# No bias: the plan's folded bias (its gradient from the weight-gradient product) agrees with
# the plain sum only to rounding, and this file is about the order alone.
CONV = {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1, "bias": False}
CASES = {
    "2x2": [{**CONV, "activation": "relu"}, {"type": "maxpool2d", "kernel_size": 2}],
    "padded, overlapping": [{**CONV, "activation": "relu"},
                            {"type": "maxpool2d", "kernel_size": 3, "stride": 2,
                             "padding": 1}],
    "ceil_mode, dilation": [{**CONV, "activation": "relu"},
                            {"type": "maxpool2d", "kernel_size": 2, "stride": 2,
                             "dilation": 2, "ceil_mode": True}],
    "global": [{**CONV, "activation": "relu"}, {"type": "global_max_pool2d"}],
    "relu layer then pool": [CONV, {"type": "relu"}, {"type": "maxpool2d", "kernel_size": 2}],
}
HEAD = [{"type": "flatten"}, {"type": "dense", "units": 4}]


def _run(model, x, dlogits):
    model.zero_grad()
    logits = model.forward(x, train=True)
    return logits, model.backward(dlogits), model.grads()


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_after_max_pool_changes_no_number(case, dtype):
    entries = CASES[case] + HEAD
    fast = apply_plan(model_from_entries((2, 7, 7), entries, dtype=dtype, seed=4))
    kinds = [type(layer).__name__ for layer in fast.layers]
    relu = kinds.index("ReLU")
    assert fast.run_order.index(relu) == fast.run_order.index(relu + 1) + 1  # swapped
    config_order = apply_plan(model_from_entries((2, 7, 7), entries, dtype=dtype, seed=4),
                              speedups=False)
    assert config_order.run_order == list(range(len(config_order.layers)))
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((6, 2, 7, 7)),
              # small integers: ties inside windows, all-negative and all-zero windows
              rng.integers(-2, 2, (6, 2, 7, 7)).astype(float),
              np.zeros((6, 2, 7, 7))):
        x = x.astype(dtype)
        weight = rng.integers(-1, 2, fast.layers[0].params["weight"].shape)
        for model in (fast, config_order):
            model.layers[0].params["weight"][...] = weight
        dlogits = rng.standard_normal((6, 4)).astype(dtype)
        got, want = _run(fast, x, dlogits), _run(config_order, x, dlogits)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        for key in want[2]:
            np.testing.assert_array_equal(got[2][key], want[2][key], err_msg=key)


def test_other_activations_keep_their_place():
    entries = [{**CONV, "activation": "tanh"}, {"type": "maxpool2d", "kernel_size": 2},
               {**CONV, "activation": "relu"}, {"type": "avgpool2d", "kernel_size": 2}]
    model = apply_plan(model_from_entries((2, 8, 8), entries))
    assert model.run_order == list(range(len(model.layers)))
