"""Branching models: merge layers, the graph forward/backward (finite differences, float64),
and the execution plan on graphs."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import _numeric

from cnncli.errors import ConfigError, DataError, ShapeError
from cnncli.nn.layers.merge import Add, Concat
from cnncli.nn.model import model_from_entries
from cnncli.parallel.plan import ExecutionPlan, apply_plan


def check_model_gradients(model, x, *, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Analytic dL/dx and dL/dparams of ``sum(w * model(x))`` against central differences."""
    rng = np.random.default_rng(1)
    y = model.forward(x, train=True)
    w = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(w * model.forward(x, train=True)))

    model.zero_grad()
    model.forward(x, train=True)
    dx = model.backward(w.copy())
    np.testing.assert_allclose(dx, _numeric(loss, x, eps), rtol=rtol, atol=atol, err_msg="dx")
    for name, value, grad in model.parameters():
        np.testing.assert_allclose(grad, _numeric(loss, value, eps), rtol=rtol, atol=atol,
                                   err_msg=name)


def build(entries, shape=(2, 5, 5), seed=0):
    return model_from_entries(shape, entries, dtype=np.float64, seed=seed)


RESIDUAL = [
    {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1, "name": "c1",
     "activation": "tanh"},
    {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1, "name": "c2"},
    {"type": "conv2d", "out_channels": 3, "kernel_size": 1, "name": "proj", "from": ["input"]},
    {"type": "add", "from": [1, 2], "activation": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 4},
]


@pytest.mark.parametrize("entries", [
    RESIDUAL,
    # concat of the input and a conv of it; a layer (c1) read by two layers
    [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1, "name": "c1"},
     {"type": "conv2d", "out_channels": 3, "kernel_size": 1, "from": [0]},
     {"type": "sigmoid", "from": [0]},
     {"type": "concat", "from": [1, 2, "input"], "activation": "tanh"},
     {"type": "flatten"}, {"type": "dense", "units": 3}],
    # one array added to itself, and a max pool after a branch point
    [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "name": "c1"},
     {"type": "add", "from": [0, 0, 0]},
     {"type": "max_pool2d", "kernel_size": 2, "from": [0]},
     {"type": "avg_pool2d", "kernel_size": 2, "from": [1]},
     {"type": "add", "from": [2, 3]},
     {"type": "flatten"}, {"type": "dense", "units": 2}],
])
def test_graph_gradients_match_finite_differences(entries):
    model = build(entries)
    assert not model.is_chain
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    check_model_gradients(model, x)


def test_a_layer_with_two_readers_gets_the_sum_of_their_gradients():
    """d/dx of conv(x) + x: the input's gradient is the conv's input gradient plus dy."""
    entries = [{"type": "conv2d", "out_channels": 2, "kernel_size": 1, "bias": False},
               {"type": "add", "from": [0, "input"]}]
    model = build(entries)
    x = np.random.default_rng(2).standard_normal((3, 2, 5, 5))
    model.forward(x)
    dy = np.random.default_rng(3).standard_normal((3, 2, 5, 5))
    weight = model.layers[0].params["weight"][:, :, 0, 0]
    expected = np.einsum("oc,nohw->nchw", weight, dy) + dy
    np.testing.assert_allclose(model.backward(dy), expected, rtol=1e-12)


def test_merge_shapes_and_errors():
    assert Add().output_shape([(3, 4, 4), (3, 4, 4)]) == (3, 4, 4)
    assert Concat().output_shape([(3, 4, 4), (5, 4, 4)]) == (8, 4, 4)
    assert Concat().output_shape([(3,), (5,)]) == (8,)
    with pytest.raises(ShapeError, match=r"\[3, 4, 4\] \(from\[0\]\) and \[5, 4, 4\] "
                                         r"\(from\[1\]\)") as err:
        Add().output_shape([(3, 4, 4), (5, 4, 4)])
    assert "project from[1] to 3 channels" in err.value.hint
    assert "out_channels 3" in err.value.hint
    with pytest.raises(ShapeError, match=r"\[3, 2, 2\] \(from\[2\]\)") as err:
        Add().output_shape([(3, 4, 4), (3, 4, 4), (3, 2, 2)])
    assert err.value.hint == "make the branches end in one shape"
    with pytest.raises(ShapeError, match=r"spatial sizes.*\[3, 4, 4\] \(from\[0\]\) and "
                                         r"\[3, 2, 2\] \(from\[1\]\)"):
        Concat().output_shape([(3, 4, 4), (3, 2, 2)])
    with pytest.raises(ShapeError, match="at least two inputs"):
        Add().output_shape([(3, 4, 4)])


def test_entries_from_must_name_earlier_entries():
    with pytest.raises(ConfigError, match="earlier entries"):
        build([{"type": "relu"}, {"type": "add", "from": [0, 1]}])


def test_a_chain_stays_a_chain():
    model = build([{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, {"type": "flatten"}])
    assert model.is_chain and "from" not in model.layer_entries()[0]


def test_layer_entries_rebuild_the_same_graph():
    model = build(RESIDUAL)
    again = build(model.layer_entries())
    assert again.sources == model.sources
    assert list(again.state_dict()) == list(model.state_dict())


def test_plan_keeps_shared_arrays_and_gives_equal_results():
    entries = [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
               {"type": "relu"},
               {"type": "max_pool2d", "kernel_size": 2, "from": [0]},
               {"type": "relu", "from": [0]},
               {"type": "max_pool2d", "kernel_size": 2},
               {"type": "add", "from": [2, 4], "activation": "relu"},
               {"type": "flatten"}, {"type": "dense", "units": 3}]
    x = np.random.default_rng(0).standard_normal((4, 2, 8, 8)).astype(np.float32)
    plain = model_from_entries((2, 8, 8), entries, seed=3)
    fast = apply_plan(model_from_entries((2, 8, 8), entries, seed=3), speedups=True)
    plan = ExecutionPlan(fast, speedups=True)
    assert plan.run_order == list(range(len(fast.layers)))
    # conv2d's output has two readers (the relu of entry 1 and the pool of entry 2)
    assert not any(plan.may_overwrite_input[k] for k in (1, 2, 3))
    y_plain, y_fast = plain.forward(x, train=True), fast.forward(x, train=True)
    np.testing.assert_array_equal(y_plain, y_fast)
    dy = np.ones_like(y_plain)
    np.testing.assert_allclose(plain.backward(dy), fast.backward(dy), rtol=1e-6, atol=1e-6)
    for (name, _, g1), (_, _, g2) in zip(plain.parameters(), fast.parameters(), strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("cls", [Add, Concat])
def test_a_merge_layer_alone_checks_its_calls(cls):
    layer = cls()
    layer.build([(2, 4, 4), (2, 4, 4)], np.random.default_rng(0))
    xs = [np.random.default_rng(k).standard_normal((2, 4, 4, 3)) for k in range(2)]
    with pytest.raises(DataError, match="backward needs a forward pass first"):
        layer.backward(np.ones((2, 4, 4, 3)))
    with pytest.raises(DataError, match="takes a list of arrays"):
        layer.forward(xs[0])
    y = layer.forward(xs)
    with pytest.raises(DataError, match="dy must have the shape"):
        layer.backward(np.ones(y.shape[:-1] + (4,)))
    dxs = layer.backward(np.ones_like(y))
    assert [dx.shape for dx in dxs] == [x.shape for x in xs]


def test_entries_may_count_back_as_config_yaml_writes_them():
    absolute = build(RESIDUAL)
    relative = build([{**e, "from": [r if r == "input" else r - k for r in e["from"]]}
                      if "from" in e else e for k, e in enumerate(RESIDUAL)])
    assert relative.sources == absolute.sources
    with pytest.raises(ConfigError, match="counting back"):
        build([{"type": "relu"}, {"type": "relu", "from": -3}])
