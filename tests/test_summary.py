"""Summary: shapes agree with a real forward pass; MACs, receptive fields and memory by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncli.config import check_text
from cnncli.inspect.summary import receptive_fields, summarize
from cnncli.nn.model import model_from_entries


def config_text(input_shape, layers, train=None) -> str:
    cfg = {"model": {"input_shape": list(input_shape), "layers": layers}}
    if train:
        cfg["train"] = train
    return yaml.safe_dump(cfg, sort_keys=False)


def summary_of(input_shape, layers, **kwargs):
    return summarize(check_text(config_text(input_shape, layers)), **kwargs)


# ---------------------------------------------------------------- against a real forward pass

@st.composite
def small_networks(draw):
    """A valid-looking stack of spatial layers, then optional global pooling, flatten, dense."""
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(5, 12)), draw(st.integers(5, 12))
    layers, channels = [], c
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv2d", "maxpool2d", "avgpool2d", "lppool2d", "relu",
                                     "batchnorm2d", "dropout"]))
        k = draw(st.integers(1, 3))
        if kind == "conv2d":
            groups = draw(st.sampled_from([g for g in (1, 2) if channels % g == 0]))
            out = groups * draw(st.integers(1, 3))
            entry = {"type": "conv2d", "out_channels": out, "groups": groups,
                     "kernel_size": [k, draw(st.integers(1, 3))],
                     "stride": draw(st.integers(1, 2)),
                     "padding": draw(st.sampled_from([0, 1, [1, 0], "valid"])),
                     "dilation": draw(st.integers(1, 2)), "bias": draw(st.booleans())}
            if draw(st.booleans()):
                entry["activation"] = draw(st.sampled_from(["relu", "tanh", "gelu"]))
            channels = out
        elif kind in ("maxpool2d", "avgpool2d"):
            entry = {"type": kind, "kernel_size": k, "stride": draw(st.integers(1, 2)),
                     "padding": draw(st.integers(0, k // 2)),
                     "ceil_mode": draw(st.booleans())}
        elif kind == "lppool2d":
            entry = {"type": kind, "norm_type": 2, "kernel_size": k}
        else:
            entry = {"type": kind}
        layers.append(entry)
    if draw(st.booleans()):
        layers.append({"type": draw(st.sampled_from(["global_avg_pool2d",
                                                     "global_max_pool2d"]))})
    layers.append({"type": "flatten"})
    layers.append({"type": "dense", "units": draw(st.integers(1, 5)),
                   "activation": draw(st.sampled_from(["relu", "sigmoid"]))})
    layers.append({"type": "dense", "units": draw(st.integers(1, 3))})
    return (c, h, w), layers


@settings(max_examples=25)
@given(small_networks())
def test_summary_shapes_and_params_match_a_real_model(net):
    input_shape, layers = net
    try:
        checked = check_text(config_text(input_shape, layers))
    except Exception as err:  # a drawn stack may shrink the map to nothing: must be ConfigError
        from cnncli.errors import ConfigError
        assert isinstance(err, ConfigError), repr(err)
        return
    summary = summarize(checked)
    model = model_from_entries(input_shape, layers, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((2, *input_shape))
    h = x.transpose(1, 2, 3, 0).copy()
    for layer, row in zip(model.layers, summary.layers, strict=True):
        h = layer.forward(h, train=False)
        assert list(h.shape[:-1]) == row.output_shape, row.name
        assert row.params == sum(v.size for v in layer.params.values()), row.name
    assert summary.total_params == sum(v.size for _, v, _ in model.parameters())


# ---------------------------------------------------------------- MACs by hand

def test_macs_by_layer_type():
    rows = summary_of([3, 10, 10], [
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},   # 8x10x10
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2,
         "groups": 2},                                                          # 4x4x4
        {"type": "maxpool2d", "kernel_size": 2},                                 # 4x2x2
        {"type": "flatten"},
        {"type": "dense", "units": 5},
    ]).layers
    assert rows[0].macs == 8 * 10 * 10 * 3 * 3 * 3          # O*H'*W'*C*kh*kw
    assert rows[1].macs == 4 * 4 * 4 * (8 // 2) * 3 * 3     # groups: C/groups per output
    assert rows[2].macs == 4 * 2 * 2 * 2 * 2                 # C*H'*W'*kh*kw comparisons
    assert rows[3].macs == 0
    assert rows[4].macs == 16 * 5                            # in*out
    assert rows[0].params == (3 * 3 * 3 + 1) * 8
    assert rows[1].params == (3 * 3 * 4 + 1) * 4
    assert rows[4].params == 16 * 5 + 5


# Every registered type on a 6x9x7 input: its entry and its MACs counted by hand.
# Windowed layers count one MAC per window read, norms a multiply and an add per value,
# element-wise and reshaping layers none.
HAND_MACS = {
    "conv2d": ({"out_channels": 4, "kernel_size": [3, 2], "stride": 2, "groups": 2},
               4 * 4 * 3 * (6 // 2) * 3 * 2),                      # O*H'*W'*(C/g)*kh*kw
    "dense": ({"units": 5}, 6 * 9 * 7 * 5),                         # in*out (flattened input)
    "maxpool2d": ({"kernel_size": 2}, 6 * 4 * 3 * 2 * 2),          # C*H'*W'*kh*kw
    "avgpool2d": ({"kernel_size": [3, 2], "stride": 1, "padding": 1},
                  6 * 9 * 8 * 3 * 2),
    "lppool2d": ({"norm_type": 2, "kernel_size": 3, "stride": 2}, 6 * 4 * 3 * 3 * 3),
    "global_avg_pool2d": ({}, 6 * 9 * 7),                           # one read per value
    "global_max_pool2d": ({}, 6 * 9 * 7),
    "batchnorm2d": ({}, 2 * 6 * 9 * 7),                             # scale and shift
    "batchnorm1d": ({}, 2 * 6 * 9 * 7),                             # after a flatten
    "dropout": ({}, 0), "flatten": ({}, 0), "relu": ({}, 0), "leaky_relu": ({}, 0),
    "elu": ({}, 0), "gelu": ({}, 0), "sigmoid": ({}, 0), "tanh": ({}, 0),
    "add": ({"from": ["input", "input"]}, 0), "concat": ({"from": ["input", "input"]}, 0),
}


def test_hand_macs_cover_every_registered_type():
    import cnncli.nn.layers  # noqa: F401  (fills the registry)
    from cnncli.nn.registry import LAYERS

    assert set(HAND_MACS) == set(LAYERS)


@pytest.mark.parametrize("type_name", sorted(HAND_MACS))
def test_macs_by_hand_for_each_layer_type(type_name):
    entry, expected = HAND_MACS[type_name]
    before = [{"type": "flatten"}] if type_name == "batchnorm1d" else []
    row = summary_of([6, 9, 7], before + [{"type": type_name, **entry}]).layers[-1]
    assert row.macs == expected


# ---------------------------------------------------------------- receptive field and jump

def fields(input_shape, layers):
    rows = summary_of(input_shape, layers).layers
    return [(r.receptive_field, r.jump) for r in rows]


def test_receptive_field_stride_padding_dilation():
    got = fields([1, 32, 32], [
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},  # r 3, j 1
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2},   # r 3+2*1=5, j 2
        {"type": "relu"},                                                        # unchanged
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "dilation": 2,
         "padding": 2},                                            # k_eff 5: r 5+4*2=13, j 2
        {"type": "maxpool2d", "kernel_size": 2},                                 # r 13+1*2=15, j 4
        {"type": "conv2d", "out_channels": 2, "kernel_size": [1, 3]},  # r [15, 15+2*4=23], j 4
    ])
    assert got == [([3, 3], [1, 1]), ([5, 5], [2, 2]), ([5, 5], [2, 2]), ([13, 13], [2, 2]),
                   ([15, 15], [4, 4]), ([15, 23], [4, 4])]


def test_receptive_field_of_lenet():
    # c1 5x5 -> 5; s2 2x2/2 -> 6, j2; c3 5x5 -> 6+4*2 = 14; s4 2x2/2 -> 14+1*2 = 16, j4.
    got = fields([1, 28, 28], [
        {"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "conv2d", "out_channels": 16, "kernel_size": 5},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
    ])
    assert got[:4] == [([5, 5], [1, 1]), ([6, 6], [2, 2]), ([14, 14], [2, 2]),
                       ([16, 16], [4, 4])]
    # Flat layers see the whole input: they report its [H, W].
    assert got[4:] == [([28, 28], [28, 28]), ([28, 28], [28, 28])]


def test_global_pool_without_geometry_covers_the_whole_map():
    class Layer:
        def geometry(self, shape):
            return None

    shapes = [(1, 9, 9), (4, 3, 3), (4, 1, 1)]

    class Conv(Layer):
        def geometry(self, shape):
            return ((3, 3), (3, 3), (0, 0), (1, 1))

    got = receptive_fields([Conv(), Layer()], shapes)
    # conv 3x3/3: r 3, j 3; a 3x3 -> 1x1 global pool acts as a 3x3/3 window: r 3+2*3 = 9.
    assert got == [((3, 3), (3, 3)), ((9, 9), (9, 9))]


def test_flat_layers_never_see_less_than_the_windows_before_them():
    # 4x4 input, 3x3 pad-1 conv, then a global pool: the pool's window reaches past the
    # border (r = 3 + 3 = 6 > 4). flatten and dense must not report a smaller field.
    entries = [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
               {"type": "global_avg_pool2d"}, {"type": "flatten"}, {"type": "dense", "units": 3}]
    model = model_from_entries((1, 4, 4), entries, dtype=np.float64)
    got = receptive_fields(model.layers, model.shapes)
    assert got[1][0] == (6, 6)
    assert got[2][0] == got[3][0] == (6, 6)


# ---------------------------------------------------------------- totals and memory

def test_batchnorm_running_stats_are_buffers_not_params():
    s = summary_of([4, 6, 6], [{"type": "batchnorm2d"}, {"type": "flatten"},
                               {"type": "dense", "units": 2}])
    assert s.layers[0].params == 2 * 4           # weight and bias
    assert s.layers[0].buffers == 2 * 4 + 1      # running mean/var and the batch counter
    assert s.buffers == 9
    assert s.total_params == s.trainable_params == 8 + 4 * 6 * 6 * 2 + 2


@pytest.mark.parametrize("optimizer, momentum, slots", [("sgd", 0.0, 0), ("sgd", 0.9, 1),
                                                        ("adam", 0.0, 2), ("adamw", 0.0, 2)])
def test_memory_estimate_parts(optimizer, momentum, slots):
    layers = [{"type": "conv2d", "out_channels": 4, "kernel_size": 3},   # 4x6x6
              {"type": "flatten"}, {"type": "dense", "units": 3}]
    train = {"optimizer": optimizer, "momentum": momentum} if optimizer == "sgd" else {
        "optimizer": optimizer}
    checked = check_text(config_text([2, 8, 8], layers, train))
    s = summarize(checked, batch_size=5, dtype="float64")
    mem, params = s.memory, s.total_params
    assert params == (2 * 9 + 1) * 4 + 144 * 3 + 3
    assert mem["params_bytes"] == mem["grads_bytes"] == params * 8
    assert mem["optimizer_bytes"] == slots * params * 8
    outputs = 4 * 6 * 6 + 144 + 3
    assert mem["forward_activations_bytes"] == 5 * (2 * 8 * 8 + outputs) * 8
    assert mem["backward_peak_bytes"] == 2 * 5 * 144 * 8
    assert mem["im2col_bytes"] == 5 * (2 * 3 * 3) * 6 * 6 * 8
    assert mem["total_bytes"] == sum(mem[k] for k in (
        "params_bytes", "grads_bytes", "optimizer_bytes", "forward_activations_bytes",
        "backward_peak_bytes", "im2col_bytes"))
    assert s.layers[0].activation_bytes == 4 * 6 * 6 * 8
    assert math.isclose(s.params_mb, params * 8 / 2**20)


def test_total_macs_is_the_sum():
    s = summary_of([1, 8, 8], [{"type": "conv2d", "out_channels": 3, "kernel_size": 3},
                               {"type": "flatten"}, {"type": "dense", "units": 2}])
    assert s.total_macs == 3 * 6 * 6 * 9 + 108 * 2
