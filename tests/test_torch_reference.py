"""Every layer against PyTorch 2.13 fixtures (tests/fixtures/layer_reference.npz).

The fixtures come from tests/fixtures/make_layer_fixtures.py; this test never imports torch.
Each case builds the cnncli layer from the same entry, copies PyTorch's weights in, runs
forward/backward on the internal batch-last layout and compares outputs and gradients.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cnncli.nn.layers.base import from_internal, to_internal
from cnncli.nn.losses import softmax_cross_entropy
from cnncli.nn.model import make_layers, model_from_entries

FIXTURES = Path(__file__).parent / "fixtures" / "layer_reference.npz"
_DATA = np.load(FIXTURES, allow_pickle=False)
CASES = [str(name) for name in _DATA["cases"]]
# rtol, atol (atol is scaled by the largest reference magnitude, at least 1)
TOLERANCE = {"float32": (1e-5, 1e-6), "float64": (1e-10, 1e-10)}


def case_arrays(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    prefix = name + "__"
    arrays = {k[len(prefix):]: _DATA[k] for k in _DATA.files if k.startswith(prefix)}
    return json.loads(str(arrays.pop("hparams")[0])), arrays


def assert_close(actual, expected, dtype: str, what: str) -> None:
    """|a - e| <= rtol*|e| + atol*max(1, max|e|), with the worst element in the message."""
    rtol, atol = TOLERANCE[dtype]
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values"
    if expected.size == 0:
        return
    expected64, actual64 = expected.astype(np.float64), actual.astype(np.float64)
    scale = max(1.0, float(np.abs(expected64).max()))
    err = np.abs(actual64 - expected64)
    bound = rtol * np.abs(expected64) + atol * scale
    if np.all(err <= bound):
        return
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    raise AssertionError(f"{what}: {int(np.sum(err > bound))}/{err.size} elements off; at "
                         f"{tuple(int(i) for i in worst)} got {actual64[worst]!r}, torch "
                         f"{expected64[worst]!r} (max abs err {err.max():.3g}, scale {scale:.3g})")


def build(entry: dict, input_shape, dtype: str):
    (layer,) = make_layers(dict(entry))
    layer.build(tuple(int(s) for s in input_shape), np.random.default_rng(0), np.dtype(dtype))
    return layer


def load_params(layer, arrays: dict[str, np.ndarray]) -> None:
    assert set(layer.params) == {k for k in ("weight", "bias") if k in arrays}, (
        f"cnncli params {sorted(layer.params)} vs torch {sorted(arrays)}")
    for key in layer.params:
        assert layer.params[key].shape == arrays[key].shape, key
        layer.params[key][...] = arrays[key]
    layer.zero_grad()


def forward_backward(layer, x, dy, train: bool):
    y = layer.forward(to_internal(x), train=train)
    dx = layer.backward(to_internal(dy))
    return from_internal(y), from_internal(dx)


def case_kind(name: str) -> str:
    return case_arrays(name)[0]["kind"]


LAYER_CASES = [c for c in CASES if case_kind(c) == "layer"]
BN_CASES = [c for c in CASES if case_kind(c) == "batchnorm"]
CE_CASES = [c for c in CASES if case_kind(c) == "cross_entropy"]
NETWORK_CASES = [c for c in CASES if case_kind(c) == "network"]


def test_fixture_file_is_small_and_covers_every_family():
    assert FIXTURES.stat().st_size < 2_000_000
    types = {case_arrays(c)[0].get("entry", {}).get("type") for c in CASES}
    assert {"conv2d", "maxpool2d", "avgpool2d", "lppool2d", "global_avg_pool2d",
            "global_max_pool2d", "dense", "flatten", "relu", "leaky_relu", "elu", "gelu",
            "tanh", "sigmoid", "dropout", "batchnorm2d", "batchnorm1d"} <= types
    assert CE_CASES and NETWORK_CASES


@pytest.mark.parametrize("name", LAYER_CASES)
def test_layer_matches_torch(name):
    hp, a = case_arrays(name)
    dtype = hp["dtype"]
    layer = build(hp["entry"], a["x"].shape[1:], dtype)
    load_params(layer, a)
    assert layer.output_shape(a["x"].shape[1:]) == a["y"].shape[1:]
    # train=True where it is harmless, so layers that cache only in training can backprop;
    # dropout is compared in eval mode (its masks come from a different random stream).
    train = hp["entry"]["type"] != "dropout"
    y, dx = forward_backward(layer, a["x"], a["dy"], train)
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    assert_close(y, a["y"], dtype, f"{name} output")
    assert_close(dx, a["dx"], dtype, f"{name} input grad")
    for key in layer.params:
        assert_close(layer.grads[key], a["d" + key], dtype, f"{name} {key} grad")


@pytest.mark.parametrize("name", BN_CASES)
def test_batchnorm_matches_torch_over_training_then_eval(name):
    hp, a = case_arrays(name)
    dtype = hp["dtype"]
    tags = [f"step{i}" for i in range(hp["steps"])] + ["eval"]
    layer = build(hp["entry"], a["step0_x"].shape[1:], dtype)
    load_params(layer, a)
    for tag in tags:
        layer.zero_grad()
        y, dx = forward_backward(layer, a[f"{tag}_x"], a[f"{tag}_dy"], train=tag != "eval")
        assert_close(y, a[f"{tag}_y"], dtype, f"{name} {tag} output")
        assert_close(dx, a[f"{tag}_dx"], dtype, f"{name} {tag} input grad")
        for key in layer.params:
            assert_close(layer.grads[key], a[f"{tag}_d{key}"], dtype, f"{name} {tag} {key} grad")
        tracked = f"{tag}_num_batches_tracked" in a
        assert set(layer.buffers) == ({"running_mean", "running_var", "num_batches_tracked"}
                                      if tracked else set()), f"{name} buffers"
        if tracked:
            for key in ("running_mean", "running_var"):
                assert_close(layer.buffers[key], a[f"{tag}_{key}"], dtype, f"{name} {tag} {key}")
            assert int(layer.buffers["num_batches_tracked"]) == int(
                a[f"{tag}_num_batches_tracked"]), f"{name} {tag} num_batches_tracked"


@pytest.mark.parametrize("name", CE_CASES)
def test_cross_entropy_matches_torch(name):
    hp, a = case_arrays(name)
    dtype = hp["dtype"]
    loss, dlogits = softmax_cross_entropy(a["logits"], a["labels"], hp["label_smoothing"])
    assert dlogits.dtype == np.dtype(dtype)
    # The loss is a Python float; compare it at the precision of the logits.
    assert_close(np.float64(loss), a["loss"], dtype, f"{name} loss")
    assert_close(dlogits, a["dlogits"], dtype, f"{name} dlogits")


@pytest.mark.parametrize("name", NETWORK_CASES)
def test_network_step_matches_torch(name):
    """A whole model: logits, loss, dx, every parameter grad and running stat, then eval."""
    hp, a = case_arrays(name)
    dtype = hp["dtype"]
    model = model_from_entries(a["x"].shape[1:], hp["entries"], dtype=np.dtype(dtype))
    params = list(model.parameters())
    assert len(params) == len([k for k in a if k.startswith("p")]), "parameter count"
    for i, (key, value, _) in enumerate(params):
        assert value.shape == a[f"p{i}"].shape, f"{key}: {value.shape} vs {a[f'p{i}'].shape}"
        value[...] = a[f"p{i}"]
    model.zero_grad()
    logits = model.forward(a["x"], train=True)
    assert_close(logits, a["logits"], dtype, f"{name} logits")
    loss, dlogits = softmax_cross_entropy(logits, a["labels"])
    assert_close(np.float64(loss), a["loss"], dtype, f"{name} loss")
    assert_close(dlogits, a["dlogits"], dtype, f"{name} dlogits")
    dx = model.backward(dlogits)
    assert_close(dx, a["dx"], dtype, f"{name} input grad")
    # Re-read the grads: zero_grad may replace the arrays parameters() yielded before.
    for i, (key, _, grad) in enumerate(model.parameters()):
        assert_close(grad, a[f"dp{i}"], dtype, f"{name} {key} grad")
    stats = [(f"{layer.name}.{key}", layer.buffers[key]) for layer in model.layers
             for key in ("running_mean", "running_var") if key in layer.buffers]
    assert len(stats) == len([k for k in a if k.startswith("b")]), "running-stat count"
    for i, (key, value) in enumerate(stats):
        assert_close(value, a[f"b{i}"], dtype, f"{name} {key}")
    assert_close(model.forward(a["x_eval"], train=False), a["logits_eval"], dtype,
                 f"{name} eval logits")
