"""Receptive-field boxes against hand computation and brute force; the `show` command's pictures."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnncli.errors import ConfigError, ShapeError
from cnncli.inspect import pictures, receptive
from cnncli.nn.layers.base import Layer, conv_output_size


class Window(Layer):
    """A stand-in conv/pool: only the geometry matters for receptive fields."""

    def __init__(self, k, s=1, p=0, d=1, name=None):
        super().__init__(name)
        pair = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v, v)  # noqa: E731
        self.k, self.s, self.p, self.d = pair(k), pair(s), pair(p), pair(d)

    def output_shape(self, shape):
        c, h, w = shape
        return (c,) + tuple(conv_output_size(n, self.k[a], self.s[a], self.p[a], self.p[a],
                                             self.d[a]) for a, n in enumerate((h, w)))

    def geometry(self, shape):
        return self.k, self.s, self.p, self.d


class Same(Layer):
    """An activation-like layer: no geometry, same shape."""


class Flat(Layer):
    def output_shape(self, shape):
        return (int(np.prod(shape)),)


def named(*layers):
    for i, layer in enumerate(layers):
        layer.name = layer.name or f"l{i}"
    return list(layers)


# ---------------------------------------------------------------- hand-computed boxes

def test_single_3x3_pad_1_centre_and_corner():
    layers = named(Window(3, 1, 1))
    box = receptive.input_box(layers, (1, 8, 8), 0)
    assert box.unit == (3, 3)
    assert (box.top, box.left, box.bottom, box.right) == (2, 2, 4, 4)
    assert not box.is_clipped and box.size == (3, 3) and box.jump == (1, 1)
    corner = receptive.input_box(layers, (1, 8, 8), 0, (0, 7))
    assert (corner.top, corner.left, corner.bottom, corner.right) == (-1, 6, 1, 8)
    assert corner.is_clipped and corner.clipped == (0, 6, 1, 7)


def test_conv_conv_pool_stack():
    # conv3 p1, conv3 p1, maxpool 2: unit 1 -> pool [2, 3] -> conv2 [1, 4] -> conv1 [0, 5]
    layers = named(Window(3, 1, 1), Same(), Window(3, 1, 1), Same(), Window(2, 2))
    box = receptive.input_box(layers, (1, 8, 8), 4, (1, 2))
    assert (box.top, box.bottom) == (0, 5)
    assert (box.left, box.right) == (2, 7)
    assert box.size == (6, 6) and box.jump == (2, 2) and box.output_shape == (1, 4, 4)


def test_stride_two_with_padding():
    layers = named(Window(3, 2, 1))
    for i in range(4):
        box = receptive.input_box(layers, (1, 8, 8), 0, (i, i))
        assert (box.top, box.bottom) == (2 * i - 1, 2 * i + 1)


def test_dilation_widens_the_box():
    layers = named(Window(3, 1, 0, 2))
    box = receptive.input_box(layers, (1, 9, 9), 0, (0, 4))
    assert (box.top, box.bottom, box.left, box.right) == (0, 4, 4, 8)


def test_non_square_geometry_per_axis():
    layers = named(Window((3, 1), (1, 2), (0, 0), (1, 1)))
    box = receptive.input_box(layers, (1, 6, 6), 0, (2, 1))
    assert (box.top, box.bottom, box.left, box.right) == (2, 4, 2, 2)
    assert box.jump == (1, 2)


def test_box_entirely_in_the_padding():
    layers = named(Window(1, 1, 2))          # 1x1 conv with padding 2: border units see zeros
    box = receptive.input_box(layers, (1, 4, 4), 0, (0, 0))
    assert (box.top, box.left) == (-2, -2) and box.clipped is None
    assert "entirely in the padding" in "\n".join(box.describe())


def test_describe_reports_clipped_and_unclipped_extents():
    box = receptive.input_box(named(Window(5, 1, 2)), (1, 8, 8), 0, (0, 0))
    text = "\n".join(box.describe())
    assert "input rows -2..2, columns -2..2" in text
    assert "clipped by the border to rows 0..2, columns 0..2 (3x3)" in text
    assert "receptive field 5x5" in text


def test_default_layer_is_the_last_spatial_one():
    layers = named(Window(3), Same(), Window(2, 2), Flat(), Same())
    assert receptive.last_spatial_index(layers, (1, 8, 8)) == 2


class GlobalPool(Layer):
    """A global pool that reports no geometry: it sees its whole input."""

    def output_shape(self, shape):
        return (shape[0], 1, 1)


def test_global_pool_sees_the_whole_input():
    layers = named(Window(3, 1, 1), GlobalPool(), Flat())
    assert receptive.last_spatial_index(layers, (2, 6, 5)) == 1
    box = receptive.input_box(layers, (2, 6, 5), 1)
    assert (box.top, box.left, box.bottom, box.right) == (-1, -1, 6, 5)


def test_bad_unit_and_flat_layers_are_errors():
    layers = named(Window(3), Flat())
    with pytest.raises(ConfigError, match="outside"):
        receptive.input_box(layers, (1, 8, 8), 0, (6, 0))
    with pytest.raises(ShapeError, match="flat output"):
        receptive.input_box(layers, (1, 8, 8), 1)
    with pytest.raises(ShapeError):
        receptive.last_spatial_index(named(Flat()), (1, 4, 4))


# ---------------------------------------------------------------- brute force

def brute_force_span(stack, unit):
    """Propagate the exact set of input positions a unit depends on, one axis."""
    positions = {unit}
    for k, s, p, d in reversed(stack):
        positions = {i * s - p + d * t for i in positions for t in range(k)}
    return min(positions), max(positions)


window = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2))


@given(st.lists(window, min_size=1, max_size=4), st.integers(12, 40), st.data())
def test_box_matches_brute_force_and_the_summary_recurrence(stack, size, data):
    layers, shape = [], (1, size, size)
    for k, s, p, d in stack:
        p = min(p, k // 2 * d)
        layer = Window(k, s, p, d, name=f"w{len(layers)}")
        out = layer.output_shape(shape)
        if out[1] <= 0:
            break
        shape = out
        layers.append(layer)
    if not layers:
        return
    geometry = [(l.k[0], l.s[0], l.p[0], l.d[0]) for l in layers]
    unit = data.draw(st.integers(0, shape[1] - 1))
    box = receptive.input_box(layers, (1, size, size), len(layers) - 1, (unit, unit))
    assert (box.top, box.bottom) == brute_force_span(geometry, unit)
    r, j = 1, 1
    for k, s, _, d in geometry:  # the standard recurrence the summary uses
        r, j = r + (d * (k - 1)) * j, j * s
    assert box.size == (r, r) and box.jump == (j, j)


# ---------------------------------------------------------------- the picture of a box

def test_receptive_picture_tints_the_clipped_box_and_shows_the_padding():
    box = receptive.input_box(named(Window(5, 1, 2)), (1, 8, 8), 0, (0, 1))
    image, scale, (pad_top, pad_left) = pictures.receptive_picture(box)
    assert (pad_top, pad_left) == (2, 1)           # the canvas grew to hold the whole box
    assert image.shape[:2] == ((8 + 2) * scale, (8 + 1) * scale)

    def at(y, x):  # centre of input pixel (y, x)
        return image[(y + pad_top) * scale + scale // 2, (x + pad_left) * scale + scale // 2]

    inside, outside = at(1, 1), at(5, 5)
    assert inside[0] > inside[1] and tuple(outside) == pictures.WHITE
    assert tuple(at(-1, 1)) == pictures.PADDING_COLOR  # padding row above the input
    red = np.all(image == pictures.BOX_COLOR, axis=-1)
    assert red[pad_top * scale:, :].any() and red[:pad_top * scale, :].any()


def test_jump_lines_mark_where_units_start_unless_they_would_crowd_a_big_input():
    layers = named(Window(3, 1, 1), Window(2, 2))   # jump 2; centre unit (2, 2) sees rows 3..6
    box = receptive.input_box(layers, (1, 12, 12), 1)
    image, scale, _ = pictures.receptive_picture(box)
    blue = np.all(image == pictures.JUMP_COLOR, axis=-1)
    blue_rows = np.nonzero(blue.mean(axis=1) > 0.5)[0]   # lines cross the whole grid
    assert list(blue_rows) == [r * scale for r in range(1, 12, 2)]   # 1, 3, 5..: through row 3
    big = receptive.input_box(layers, (1, 600, 600), 1)
    image, scale, _ = pictures.receptive_picture(big)
    assert scale == 1 and not np.all(image == pictures.JUMP_COLOR, axis=-1).any()
    assert np.all(image == pictures.BOX_COLOR, axis=-1).any()


def test_receptive_picture_over_an_image_keeps_the_image_outside_the_box():
    box = receptive.input_box(named(Window(3, 1, 1)), (1, 6, 6), 0, (2, 2))
    background = np.zeros((6, 6, 3), np.uint8)
    background[..., 1] = 77
    image, scale, pad = pictures.receptive_picture(box, background)
    assert pad == (0, 0)
    assert tuple(image[2 * scale + scale // 2, 2 * scale + scale // 2]) == (0, 77, 0)  # as is
    faded = image[5 * scale + 1, 5 * scale + 1].astype(int)
    assert np.all(faded > (0, 77, 0)) and faded[1] > faded[0]  # lighter, still greenish
    nothing = receptive.input_box(named(Window(1, 1, 2)), (1, 6, 6), 0, (0, 0))
    image, scale, (pad_top, pad_left) = pictures.receptive_picture(nothing, background)
    assert nothing.clipped is None and (pad_top, pad_left) == (2, 2)
    seen = image[pad_top * scale:, pad_left * scale:].reshape(-1, 3)
    assert not np.any(np.all(seen == (0, 77, 0), axis=-1))    # a box in the padding sees no pixel


# ---------------------------------------------------------------- real layers and the CLI

def real_layers(entries, input_shape):
    from cnncli.nn.model import model_from_entries

    return model_from_entries(input_shape, entries, dtype=np.float64)


@pytest.mark.parametrize("entries", [
    [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1},
     {"type": "relu"},
     {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2, "padding": 1},
     {"type": "avgpool2d", "kernel_size": 2, "stride": 1}],
    [{"type": "conv2d", "out_channels": 2, "kernel_size": [3, 2], "dilation": 2, "padding": 1},
     {"type": "avgpool2d", "kernel_size": 3, "stride": 2, "padding": 1}],
])
def test_box_is_exactly_where_the_unit_gradient_reaches(entries):
    """Positive weights and inputs: d unit / d input is nonzero inside the box and zero outside."""
    from cnncli.nn.layers.base import from_internal, to_internal

    model = real_layers(entries, (1, 11, 10))
    for layer in model.layers:
        if "weight" in layer.params:
            layer.params["weight"][...] = 1.0
    x = np.random.default_rng(0).uniform(0.5, 1.0, (1, 1, 11, 10))
    target = len(model.layers) - 1
    _, oh, ow = model.shapes[-1]
    for unit in [(0, 0), (oh // 2, ow // 2), (oh - 1, ow - 1)]:
        h = to_internal(x)
        for layer in model.layers:
            h = layer.forward(h, train=True)
        g = np.zeros_like(h)
        g[:, unit[0], unit[1], :] = 1.0
        for layer in reversed(model.layers):
            g = layer.backward(g)
        reached = np.argwhere(from_internal(g)[0, 0] != 0)
        box = receptive.input_box(model.layers, (1, 11, 10), target, unit)
        top, left, bottom, right = box.clipped
        assert tuple(reached.min(axis=0)) == (top, left)
        assert tuple(reached.max(axis=0)) == (bottom, right)


def run_cli(*args):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    return CliRunner().invoke(main, [str(a) for a in args])


def write_config(path, input_shape, entries):
    import yaml

    path.write_text(yaml.safe_dump({"name": "t", "seed": 0,
                                    "model": {"input_shape": list(input_shape),
                                              "layers": entries}}))
    return path


STACK = [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "name": "conv1",
          "activation": "relu"},
         {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "name": "conv2"},
         {"type": "maxpool2d", "kernel_size": 2, "name": "pool"},
         {"type": "flatten"},
         {"type": "dense", "units": 3, "name": "fc"}]


def test_cli_receptive_field_reports_the_hand_computed_box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "net.yaml", (1, 8, 8), STACK)
    result = run_cli("show", config, "--receptive-field")
    assert result.exit_code == 0, result.output
    # pool unit (1, 1) -> pool rows 2..3 -> conv2 rows 1..4 -> conv1 rows 0..5
    assert "layer pool (output 4x4x4), unit (y=1, x=1): receptive field 6x6, jump 2x2" \
        in result.output
    assert "input rows 0..5, columns 0..5" in result.output
    assert (tmp_path / "receptive_field_pool.png").is_file()
    result = run_cli("show", config, "--receptive-field", "--layer", "conv2", "--at", "0,7",
                     "--out", tmp_path / "rf.png")
    assert result.exit_code == 0, result.output
    assert "input rows -2..2, columns 5..9" in result.output
    assert "clipped by the border to rows 0..2, columns 5..7 (3x3)" in result.output
    image = pictures_png(tmp_path / "rf.png")
    assert np.all(image == pictures.BOX_COLOR, axis=-1).any()


def pictures_png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("args, message", [
    (["--receptive-field", "--layer", "nope"], "no layer named 'nope'"),
    (["--receptive-field", "--layer", "fc"], "flat output"),
    (["--receptive-field", "--at", "9,0"], "outside the 4x4 output of layer 'pool'"),
    (["--receptive-field", "--at", "x"], "--at must be Y,X"),
    (["--filters", "--receptive-field"], "choose exactly one"),
    ([], "choose exactly one"),
    (["--filters", "--layer", "pool"], "has no conv kernels"),
    (["--filters", "--at", "1,1"], "--at does not apply to --filters"),
    (["--filters", "--index", "0"], "--index does not apply to --filters"),
    (["--features", "x.npy", "--input", "x.npy"], "--input does not apply to --features"),
    (["--features", "x.npy", "--at", "0,0"], "--at does not apply to --features"),
    (["--receptive-field", "--index", "1"], "--index does not apply to --receptive-field "
                                            "without --input"),
    (["--filters", "--out", "f.jpg"], "is not a .png file"),
])
def test_cli_show_errors_are_one_line(tmp_path, args, message):
    config = write_config(tmp_path / "net.yaml", (1, 8, 8), STACK)
    out = [] if "--out" in args else ["--out", tmp_path / "x.png"]
    result = run_cli("show", config, *args, *out)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert isinstance(result.exception, SystemExit)


def contains(image, part):
    """Whether ``part`` appears somewhere in ``image`` (anchored on one of its pixels)."""
    h, w = part.shape[:2]
    ay, ax = min(2, h - 1), min(2, w - 1)
    area = image[ay:image.shape[0] - h + 1 + ay, ax:image.shape[1] - w + 1 + ax]
    ys, xs = np.nonzero(np.all(area == part[ay, ax], axis=-1))
    return any(np.array_equal(image[y:y + h, x:x + w], part) for y, x in zip(ys, xs, strict=True))


def save_ckpt(tmp_path, input_shape, entries, seed=3, normalization=None):
    from cnncli.training.checkpoint import save_checkpoint

    model = real_layers(entries, input_shape)
    state = model.state_dict()
    rng = np.random.default_rng(seed)
    for key in state:
        if "num_batches" in key:
            continue
        value = rng.standard_normal(state[key].shape).astype(np.float32)
        state[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    config = {"name": "t", "seed": 0, "model": {"input_shape": list(input_shape),
                                                "layers": entries}}
    path = save_checkpoint(tmp_path / "run" / "best.npz", config=config, model_state=state,
                           normalization=normalization or {"mode": "none"},
                           class_names=["a", "b", "c"])
    return path, state


def test_cli_filters_draw_exactly_the_checkpoint_kernels(tmp_path):
    path, state = save_ckpt(tmp_path, (1, 8, 8), STACK)
    result = run_cli("show", path, "--filters")
    assert result.exit_code == 0, result.output
    out = path.parent / "filters_conv1.png"
    assert f"wrote {out}" in result.output
    assert "conv1: weight [4, 1, 3, 3]" in result.output
    grid, _ = pictures.filter_grid(state["conv1.weight"])
    assert contains(pictures_png(out), grid)
    result = run_cli("show", path, "--filters", "--layer", "conv2", "--out", tmp_path / "f2.png")
    assert result.exit_code == 0, result.output
    assert "rows = output channels, columns = input channels" in result.output
    grid, _ = pictures.filter_grid(state["conv2.weight"])
    assert contains(pictures_png(tmp_path / "f2.png"), grid)


def test_cli_filters_rgb_and_untrained_config(tmp_path):
    entries = [{"type": "conv2d", "out_channels": 5, "kernel_size": 3, "name": "c"},
               {"type": "flatten"}, {"type": "dense", "units": 2}]
    path, state = save_ckpt(tmp_path, (3, 6, 6), entries)
    result = run_cli("show", path, "--filters", "--out", tmp_path / "rgb.png")
    assert result.exit_code == 0, result.output
    assert "one RGB tile per output channel" in result.output
    grid, info = pictures.filter_grid(state["c.weight"])
    assert info["mode"] == "rgb" and contains(pictures_png(tmp_path / "rgb.png"), grid)
    config = write_config(tmp_path / "net.yaml", (3, 6, 6), entries)
    result = run_cli("show", config, "--filters", "--out", tmp_path / "init.png")
    assert result.exit_code == 0 and "initial, untrained weights" in result.output


@pytest.mark.parametrize("name", ["digits", "lenet5", "cifar_small", "alexnet"])
def test_box_sizes_and_jumps_agree_with_the_summary(name):
    from pathlib import Path

    from cnncli.config import check_config
    from cnncli.inspect.summary import receptive_fields

    path = Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
    checked = check_config(path)
    fields = receptive_fields(checked.layers, checked.shapes)
    last = receptive.last_spatial_index(checked.layers, checked.shapes[0])
    for i in range(last + 1):
        box = receptive.input_box(checked.layers, checked.shapes[0], i)
        assert list(box.size) == list(fields[i][0]) and list(box.jump) == list(fields[i][1])


def test_cli_features_draw_the_maps_each_layer_produces(tmp_path):
    from cnncli.training.checkpoint import load_checkpoint

    entries = [{"type": "conv2d", "out_channels": 3, "kernel_size": 1, "name": "conv1",
                "activation": "relu"},
               {"type": "maxpool2d", "kernel_size": 2, "name": "pool"},
               {"type": "flatten"}, {"type": "dense", "units": 3, "name": "fc"}]
    path, state = save_ckpt(tmp_path, (1, 8, 8), entries)
    x = np.random.default_rng(5).uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "inputs.npy", x)

    def by_hand(row):  # a 1x1 conv + relu, then 2x2 max pooling
        w, b = state["conv1.weight"][:, 0, 0, 0], state["conv1.bias"]
        conv = np.maximum(w[:, None, None] * x[row, 0][None] + b[:, None, None], 0)
        return conv, conv.reshape(3, 4, 2, 4, 2).max(axis=(2, 4))

    result = run_cli("show", path, "--features", tmp_path / "inputs.npy", "--index", 2)
    assert result.exit_code == 0, result.output
    out = path.parent / "features.png"
    assert f"wrote {out}" in result.output
    image = pictures_png(out)
    for maps in by_hand(2):
        grid, info = pictures.feature_grid(maps)
        assert contains(image, grid)
        bar = pictures.colorbar(info["high"], max(100, min(160, grid.shape[1] - 16)),
                                signed=False)
        assert contains(image, bar[:10])          # each layer's colour scale under its grid
    assert "conv1+relu_1: 3x8x8" in result.output and "pool: 3x4x4" in result.output
    logits = load_checkpoint(path).model().forward(x[2:3])[0]
    assert f"prediction: {'abc'[int(np.argmax(logits))]}" in result.output

    result = run_cli("show", path, "--features", tmp_path / "inputs.npy", "--layer", "pool",
                     "--out", tmp_path / "pool.png")
    assert result.exit_code == 0, result.output
    image = pictures_png(tmp_path / "pool.png")
    assert contains(image, pictures.feature_grid(by_hand(0)[1])[0])
    assert not contains(image, pictures.feature_grid(by_hand(0)[0])[0])
    assert contains(image, pictures.input_picture(x[0]))   # the input stays beside one layer
    assert "prediction:" in result.output

    result = run_cli("show", path, "--features", tmp_path / "inputs.npy", "--index", 9)
    assert result.exit_code == 2 and "--index 9 is out of range" in result.output


def test_cli_receptive_field_over_an_input_row(tmp_path):
    config = write_config(tmp_path / "net.yaml", (1, 8, 8), STACK)
    x = np.ones((2, 1, 8, 8), np.float32)
    x[0] = 0.0
    x[1, 0, 3, 3] = 0.0          # one dark pixel, inside the centre unit's box (rows 0..5)
    np.save(tmp_path / "x.npy", x)
    black = []
    for row in (0, 1):
        out = tmp_path / f"rf{row}.png"
        result = run_cli("show", config, "--receptive-field", "--input", tmp_path / "x.npy",
                         "--index", row, "--out", out)
        assert result.exit_code == 0, result.output
        black.append(int(np.all(pictures_png(out) == 0, axis=-1).sum()))
    scale = pictures.tile_scale(8, 256, most=32)
    assert black[1] - black[0] == scale * scale  # same title text; row 1 adds one dark pixel
    result = run_cli("show", config, "--receptive-field", "--input", tmp_path / "x.npy",
                     "--index", 2)
    assert result.exit_code == 2 and "--index 2 is out of range" in result.output


def test_cli_grouped_conv_with_three_channels_per_group_is_not_rgb(tmp_path):
    entries = [{"type": "conv2d", "out_channels": 6, "kernel_size": 3, "name": "c"},
               {"type": "conv2d", "out_channels": 6, "kernel_size": 1, "groups": 2, "name": "g"},
               {"type": "flatten"}, {"type": "dense", "units": 2}]
    path, state = save_ckpt(tmp_path, (6, 5, 5), entries)
    assert state["g.weight"].shape[1] == 3          # 6 channels in 2 groups: 3 per group
    result = run_cli("show", path, "--filters", "--layer", "g", "--out", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert "rows = output channels, columns = input channels" in result.output
    grid, info = pictures.filter_grid(state["g.weight"], rgb=False)
    assert info["mode"] == "diverging" and contains(pictures_png(tmp_path / "g.png"), grid)


def test_cli_features_fold_batch_norm_and_activation_into_the_conv(tmp_path):
    entries = [{"type": "conv2d", "out_channels": 2, "kernel_size": 3, "padding": 1,
                "name": "conv"},
               {"type": "batchnorm2d", "name": "bn"}, {"type": "relu", "name": "act"},
               {"type": "maxpool2d", "kernel_size": 2, "name": "pool"},
               {"type": "flatten"}, {"type": "dense", "units": 3}]
    path, _ = save_ckpt(tmp_path, (1, 6, 6), entries)
    np.save(tmp_path / "x.npy", np.ones((1, 1, 6, 6), np.float32))
    result = run_cli("show", path, "--features", tmp_path / "x.npy")
    assert result.exit_code == 0, result.output
    assert "conv+bn+act: 2x6x6" in result.output and "pool: 2x3x3" in result.output


def test_cli_show_accepts_a_run_directory(tmp_path):
    import shutil

    path, state = save_ckpt(tmp_path, (1, 8, 8), STACK)
    shutil.copy(path, path.parent / "last.npz")
    run_dir = path.parent
    result = run_cli("show", run_dir, "--receptive-field", "--layer", "conv2")
    assert result.exit_code == 0, result.output
    assert "receptive field 5x5" in result.output
    assert (run_dir / "receptive_field_conv2.png").is_file()
    result = run_cli("show", run_dir, "--filters")
    assert result.exit_code == 0, result.output
    grid, _ = pictures.filter_grid(state["conv1.weight"])
    assert contains(pictures_png(run_dir / "filters_conv1.png"), grid)
    result = run_cli("show", tmp_path, "--filters")          # a directory without last.npz
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "no last.npz in this directory" in result.output
