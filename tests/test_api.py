"""The Python API: build_model (path or dict), forward/backward, state_dict/grads/load_state_dict,
layer names, and bad input as project errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import cnncli
from cnncli import CheckpointError, CnncliError, ConfigError, DataError, build_model
from cnncli.nn.registry import LAYERS, layer_class

DIGITS = Path(__file__).parents[1] / "configs" / "digits.yaml"

SECTION = {"input_shape": [4, 9, 7], "layers": [
    {"type": "conv2d", "filters": 6, "kernel_size": [3, 2], "groups": 2, "activation": "relu"},
    {"type": "batchnorm2d", "name": "bn"},
    {"type": "maxpool2d", "kernel_size": 2, "ceil_mode": True},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 1},
    {"type": "flatten"},
    {"type": "linear", "units": 5, "name": "head"},
]}


def test_a_path_a_dict_and_a_model_section_build_the_same_model():
    from_path = build_model(DIGITS)
    from_str = build_model(str(DIGITS))
    from_dict = build_model(yaml.safe_load(DIGITS.read_text()))
    from_section = build_model(yaml.safe_load(DIGITS.read_text())["model"])
    reference = from_path.state_dict()
    for other in (from_str, from_dict, from_section):
        state = other.state_dict()
        assert list(state) == list(reference)
        assert all(np.array_equal(state[k], reference[k]) for k in reference)
    assert not np.array_equal(build_model(DIGITS, seed=1).state_dict()["conv1.weight"],
                              reference["conv1.weight"])


def test_state_dict_keys_and_shapes_follow_pytorch():
    model = build_model({"model": SECTION, "seed": 3})
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {
        "conv2d_1.weight": (6, 2, 3, 2), "conv2d_1.bias": (6,),      # (O, C/groups, kh, kw)
        "bn.weight": (6,), "bn.bias": (6,), "bn.running_mean": (6,), "bn.running_var": (6,),
        "bn.num_batches_tracked": (),
        "conv2d_2.weight": (4, 6, 1, 1), "conv2d_2.bias": (4,),
        "head.weight": (5, 4 * 4 * 3), "head.bias": (5,),            # (out, in)
    }
    assert {k: v.shape for k, v in model.grads().items()} == {
        k: s for k, s in shapes.items() if k.endswith((".weight", ".bias"))}
    assert [layer.name for layer in model.layers] == [
        "conv2d_1", "relu_1", "bn", "maxpool2d_1", "conv2d_2", "flatten_1", "head"]


def test_forward_backward_accumulate_and_dtypes():
    model = build_model(SECTION, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 4, 9, 7))
    logits = model.forward(x, train=True)
    assert logits.shape == (3, 5) and logits.dtype == np.float64
    dlogits = np.random.default_rng(1).standard_normal(logits.shape)
    model.zero_grad()
    dx = model.backward(dlogits)
    assert dx.shape == x.shape and dx.dtype == np.float64 and np.abs(dx).sum() > 0
    once = model.grads()
    model.backward(dlogits)
    for key, grad in model.grads().items():
        np.testing.assert_allclose(grad, 2 * once[key], rtol=1e-12, atol=1e-12)
    assert model.forward(x, train=False).shape == (3, 5)
    assert build_model(SECTION).forward(x).dtype == np.float32


def test_load_state_dict_reproduces_another_model():
    trained = build_model(SECTION, seed=1)
    x = np.random.default_rng(2).standard_normal((4, 4, 9, 7))
    trained.forward(x, train=True)  # moves the running statistics
    fresh = build_model(SECTION, seed=2)
    assert not np.array_equal(fresh.forward(x), trained.forward(x))
    fresh.load_state_dict(trained.state_dict())
    np.testing.assert_array_equal(fresh.forward(x), trained.forward(x))
    state = trained.state_dict()
    state["head.weight"] = state["head.weight"][:, :-1]
    with pytest.raises(CheckpointError, match=r"head.weight: shape \[5, 47\]"):
        fresh.load_state_dict(state)
    with pytest.raises(CheckpointError, match="no 'bn.running_var'"):
        fresh.load_state_dict({k: v for k, v in trained.state_dict().items()
                               if k != "bn.running_var"})
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        fresh.load_state_dict({**trained.state_dict(), "extra.weight": np.zeros(1)})


def test_generated_names_are_unique_and_stable():
    layers = [{"type": "dense", "units": 3}, {"type": "dense", "units": 3, "name": "dense_1"},
              {"type": "dense", "units": 2, "activation": "relu"}]
    names = [[layer.name for layer in build_model({"input_shape": [4], "layers": layers},
                                                  seed=s).layers] for s in (0, 1)]
    assert names[0] == names[1] == ["dense_2", "dense_1", "dense_3", "relu_1"]


@pytest.mark.parametrize("call, error, words", [
    (lambda: build_model(42), ConfigError, "YAML path or a config dict, got int 42"),
    (lambda: build_model({"input_shape": "abc", "layers": [{"type": "relu"}]}), ConfigError,
     "model.input_shape must be [C, H, W]"),
    (lambda: build_model({"model": SECTION, "seed": "x"}), ConfigError, "seed must be an int"),
    (lambda: build_model({"modle": SECTION}), ConfigError, "unknown key 'modle'"),
    (lambda: build_model(SECTION, dtype="int8"), ConfigError, "float32 or float64, got 'int8'"),
    (lambda: build_model({"input_shape": [1, 4, 4], "layers": [
        {"type": "conv2d", "filters": 2, "kernel_size": 5}]}), ConfigError,
     "layer 1 (conv2d): kernel 5"),
    (lambda: build_model(SECTION).forward(np.zeros((2, 4, 7, 9))), DataError,
     "expects input of shape (N, 4, 9, 7), got (2, 4, 7, 9)"),
    (lambda: build_model(SECTION).backward(np.zeros((2, 5))), DataError,
     "backward needs a forward pass first"),
])
def test_bad_input_is_a_one_line_project_error(call, error, words):
    with pytest.raises(error) as err:
        call()
    assert words in str(err.value) and len(str(err.value).splitlines()) == 1


def test_backward_with_the_wrong_shape_is_a_data_error():
    model = build_model(SECTION)
    model.forward(np.zeros((2, 4, 9, 7)), train=True)
    with pytest.raises(DataError, match=r"shape of the last forward output \(2, 5\), got \(3, 5\)"):
        model.backward(np.zeros((3, 5)))


def test_public_names():
    assert {"build_model", "Model", "CnncliError", "__version__"} <= set(cnncli.__all__)
    assert issubclass(ConfigError, CnncliError)


# Smallest hyperparameters for each registered layer type, for the layers-alone tests.
LAYER_ARGS = {"conv2d": {"out_channels": 2, "kernel_size": 3}, "dense": {"units": 3},
              "maxpool2d": {"kernel_size": 2}, "avgpool2d": {"kernel_size": 2},
              "lppool2d": {"norm_type": 2, "kernel_size": 2}}
FLAT_INPUT = {"dense", "batchnorm1d"}


def _layer_alone(type_name):
    layer = layer_class(type_name)(**LAYER_ARGS.get(type_name, {}))
    layer.build((5,) if type_name in FLAT_INPUT else (2, 4, 4), np.random.default_rng(0))
    return layer


@pytest.mark.parametrize("type_name", sorted(name for name, cls in LAYERS.items()
                                       if not getattr(cls, "multi_input", False)))
def test_a_layer_alone_checks_backward_against_its_last_forward(type_name):
    """(add and concat, which take several inputs: tests/test_graph.py)"""
    layer = _layer_alone(type_name)
    x = np.random.default_rng(1).standard_normal(layer.input_shape + (3,)).astype(np.float32)
    with pytest.raises(DataError, match=f"^{type_name} backward needs a forward pass first$"):
        layer.backward(np.ones(layer.output_shape(layer.input_shape) + (3,), np.float32))
    y = layer.forward(x, train=True)
    with pytest.raises(DataError, match=r"dy must have the shape of the last forward's output"):
        layer.backward(np.ones(y.shape[:-1] + (4,), np.float32))
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape
