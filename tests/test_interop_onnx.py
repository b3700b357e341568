"""ONNX export (checked in full, run by ONNX Runtime) and import (the same logits back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import assume, given
from hypothesis import strategies as st
from interop_models import (
    EVERY_LAYER,
    make_checkpoint,
    random_graph,
    randomize,
    raw_batch,
    shipped_config,
    small_config,
)

from cnncli.cli import main
from cnncli.data import normalize
from cnncli.errors import CnncliError
from cnncli.training.checkpoint import load_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def run_onnx(path, x, names=("input", "logits")) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([names[1]], {names[0]: x})[0]


def assert_onnx_round_trip(model, shape, seed: int, folder) -> None:
    """``model`` (random weights from ``seed``) in ONNX Runtime gives its logits within 1e-4,
    and imported back gives them exactly."""
    from cnncli.interop.onnx_export import build_onnx
    from cnncli.interop.onnx_import import import_onnx

    randomize(model, seed)
    (folder / "m.onnx").write_bytes(build_onnx(model).SerializeToString())
    x = raw_batch(shape, n=3, seed=seed) / 255
    expected = model.forward(x)
    np.testing.assert_allclose(run_onnx(folder / "m.onnx", x), expected, atol=1e-4, rtol=1e-5)
    imported = import_onnx(folder / "m.onnx", folder / "back")
    assert np.array_equal(load_checkpoint(imported.checkpoint_path).model().forward(x), expected)


def cnncli_logits(ckpt_path, raw) -> np.ndarray:
    ckpt = load_checkpoint(ckpt_path)
    return ckpt.model().forward(normalize(raw, ckpt.normalization))


def export(*args) -> str:
    result = CliRunner().invoke(main, ["export", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_runs_in_onnx_runtime_as_in_cnncli(tmp_path, config):
    ckpt = make_checkpoint(tmp_path / "run" / "last.npz", shipped_config(config))
    assert export(tmp_path / "run", "--format", "onnx") == \
        f"wrote {tmp_path / 'run' / 'last.onnx'}\n"
    proto = onnx.load(str(tmp_path / "run" / "last.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert "Dropout" not in {n.op_type for n in proto.graph.node}
    raw = raw_batch(load_checkpoint(ckpt).model().input_shape, n=3)
    expected = cnncli_logits(ckpt, raw)
    np.testing.assert_allclose(run_onnx(tmp_path / "run" / "last.onnx", raw), expected,
                               atol=1e-4, rtol=0)
    if config.stem == "alexnet":
        return  # a chain like lenet5, whose 61 M parameters would take the import 20 s more
    # and back (the ResNets and the DenseNet-like model too): the same names and logits
    assert cli("import", tmp_path / "run" / "last.onnx", "-o", tmp_path / "back").exit_code == 0
    back = load_checkpoint(tmp_path / "back")
    assert list(back.state) == list(load_checkpoint(ckpt).state)
    assert np.array_equal(cnncli_logits(tmp_path / "back", raw), expected)


def test_without_normalization_the_graph_takes_normalised_input(tmp_path):
    ckpt = make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/digits.yaml"))
    out = tmp_path / "bare.onnx"
    export(ckpt, "--format", "onnx", "--no-normalization", "-o", out)
    assert {n.op_type for n in onnx.load(str(out)).graph.node}.isdisjoint({"Sub", "Div"})
    x = normalize(raw_batch((1, 8, 8)), load_checkpoint(ckpt).normalization)
    np.testing.assert_allclose(run_onnx(out, x), load_checkpoint(ckpt).model().forward(x),
                               atol=1e-4, rtol=0)




@pytest.mark.parametrize("opset", [13, 17, 20])
def test_every_layer_type_exports_at_old_and_new_opsets(tmp_path, opset):
    ckpt = make_checkpoint(tmp_path / "last.npz", small_config(EVERY_LAYER))
    export(ckpt, "--format", "onnx", "--opset", opset)
    raw = raw_batch((3, 9, 9))
    np.testing.assert_allclose(run_onnx(tmp_path / "last.onnx", raw), cnncli_logits(ckpt, raw),
                               atol=1e-4, rtol=0)


def test_a_ceil_mode_pool_whose_last_window_pytorch_drops_runs_in_floor_mode(tmp_path):
    from cnncli.interop.onnx_import import import_onnx

    # 5 + 2*1 padding, kernel 2, stride 2: ONNX's ceil_mode would add a window starting in
    # the right padding (4 outputs); PyTorch and cnncli drop it (3, which floor mode gives).
    layers = [{"type": "avgpool2d", "kernel_size": 2, "stride": 2, "padding": 1,
               "ceil_mode": True}, {"type": "maxpool2d", "kernel_size": 2, "ceil_mode": True},
              {"type": "flatten"},
              {"type": "dense", "units": 2}]
    ckpt = make_checkpoint(tmp_path / "last.npz", small_config(layers, (2, 5, 5)))
    export(ckpt, "--format", "onnx")
    pools = [n for n in onnx.load(str(tmp_path / "last.onnx")).graph.node
             if n.op_type.endswith("Pool")]
    assert [onnx.helper.get_attribute_value(a) for n in pools for a in n.attribute
            if a.name == "ceil_mode"] == [0, 1]  # 5 -> 3 floors exactly; 3 -> 2 needs ceil
    raw = raw_batch((2, 5, 5))
    np.testing.assert_allclose(run_onnx(tmp_path / "last.onnx", raw), cnncli_logits(ckpt, raw),
                               atol=1e-4, rtol=0)
    back = import_onnx(tmp_path / "last.onnx", tmp_path / "back")
    assert np.array_equal(cnncli_logits(back.checkpoint_path, raw), cnncli_logits(ckpt, raw))


def test_a_strided_same_conv_pads_by_the_input_size_and_imports_back_as_same(tmp_path):
    # 9 pixels, kernel 4, stride 2: 5 outputs need 3 padding pixels, 1 before and 2 after
    layers = [{"type": "conv2d", "name": "c", "filters": 2, "kernel_size": 4, "stride": 2,
               "padding": "same"}, {"type": "flatten"}, {"type": "dense", "units": 2}]
    ckpt = make_checkpoint(tmp_path / "last.npz", small_config(layers))
    export(ckpt, "--format", "onnx")
    conv = next(n for n in onnx.load(str(tmp_path / "last.onnx")).graph.node if n.name == "c")
    assert [list(a.ints) for a in conv.attribute if a.name == "pads"] == [[1, 1, 2, 2]]
    raw = raw_batch((3, 9, 9))
    np.testing.assert_allclose(run_onnx(tmp_path / "last.onnx", raw), cnncli_logits(ckpt, raw),
                               atol=1e-4, rtol=0)
    assert cli("import", tmp_path / "last.onnx", "-o", tmp_path / "back").exit_code == 0
    assert load_checkpoint(tmp_path / "back").config["model"]["layers"][0]["padding"] == "same"
    assert np.array_equal(cnncli_logits(tmp_path / "back", raw), cnncli_logits(ckpt, raw))


@pytest.mark.parametrize("opset", [17, 20])  # ReduceMean's axes: an attribute, then an input
def test_batch_norm_without_running_statistics_uses_the_batch(tmp_path, opset):
    layers = [{"type": "conv2d", "filters": 3, "kernel_size": 3},
              {"type": "batchnorm2d", "track_running_stats": False},
              {"type": "global_avg_pool2d"}, {"type": "flatten"},
              {"type": "batchnorm1d", "affine": False, "track_running_stats": False},
              {"type": "dense", "units": 2}]
    ckpt = make_checkpoint(tmp_path / "last.npz", small_config(layers))
    export(ckpt, "--format", "onnx", "--opset", opset)
    raw = raw_batch((3, 9, 9), n=5)
    np.testing.assert_allclose(run_onnx(tmp_path / "last.onnx", raw), cnncli_logits(ckpt, raw),
                               atol=1e-4, rtol=0)


@st.composite
def layer_stacks(draw):
    """A random valid-looking chain: convs and pools, then a dense head."""
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        layers.append({"type": "conv2d", "filters": draw(st.sampled_from([2, 4])),
                       "kernel_size": draw(st.integers(1, 3)),
                       "stride": draw(st.integers(1, 2)), "padding": draw(st.integers(0, 1)),
                       "dilation": draw(st.integers(1, 2)),
                       "bias": draw(st.booleans())})
        if draw(st.booleans()):
            layers.append({"type": "batchnorm2d", "eps": draw(st.sampled_from([1e-5, 1e-3]))})
        layers.append({"type": draw(st.sampled_from(
            ["relu", "leaky_relu", "elu", "gelu", "tanh", "sigmoid"]))})
        pool = draw(st.sampled_from(["none", "maxpool2d", "avgpool2d", "lppool2d"]))
        if pool != "none":
            k = draw(st.integers(1, 3))
            entry = {"type": pool, "kernel_size": k, "stride": draw(st.integers(1, 2)),
                     "ceil_mode": draw(st.booleans())}
            if pool != "lppool2d":
                entry["padding"] = draw(st.integers(0, k // 2))
            if pool == "avgpool2d":
                entry["count_include_pad"] = draw(st.booleans())
            if pool == "lppool2d":
                # not 3: a negative window sum gives NaN, which ONNX Runtime's max pools skip
                # (PyTorch's and cnncli's propagate it)
                entry["norm_type"] = draw(st.sampled_from([1, 2, 4]))
            layers.append(entry)
    layers.append({"type": draw(st.sampled_from(["flatten", "global_avg_pool2d",
                                                 "global_max_pool2d"]))})
    if layers[-1]["type"] != "flatten":
        layers.append({"type": "flatten"})
    if draw(st.booleans()):
        layers += [{"type": "dense", "units": 5}, {"type": "batchnorm1d"}, {"type": "relu"},
                   {"type": "dropout"}]
    layers.append({"type": "dense", "units": 3})
    shape = (draw(st.integers(1, 3)), draw(st.integers(4, 10)), draw(st.integers(4, 10)))
    return layers, shape


@given(stack=layer_stacks(), seed=st.integers(0, 2**16))
def test_random_layer_stacks_match_onnx_runtime_and_import_back(tmp_path_factory, stack, seed):
    from cnncli.nn.model import model_from_entries

    layers, shape = stack
    try:
        model = model_from_entries(shape, layers)
    except CnncliError:
        assume(False)
    assert_onnx_round_trip(model, shape, seed, tmp_path_factory.mktemp("stack"))


@st.composite
def small_graphs(draw):
    return random_graph(draw, st)


@given(graph=small_graphs(), seed=st.integers(0, 2**16))
def test_random_small_graphs_match_onnx_runtime_and_import_back(tmp_path_factory, graph, seed):
    from cnncli.nn.model import model_from_entries

    layers, shape = graph
    model = model_from_entries(shape, layers)
    assert_onnx_round_trip(model, shape, seed, tmp_path_factory.mktemp("graph"))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_import_round_trips_and_eval_predict_summary_accept_it(tmp_path):
    ckpt = make_checkpoint(tmp_path / "run" / "last.npz", small_config(EVERY_LAYER))
    export(tmp_path / "run", "--format", "onnx")
    result = cli("import", tmp_path / "run" / "last.onnx", "-o", tmp_path / "back")
    assert result.exit_code == 0, result.output
    assert result.output == (f"imported 19 layers -> {tmp_path / 'back' / 'config.yaml'}, "
                             f"{tmp_path / 'back' / 'last.npz'}\n")
    back = load_checkpoint(tmp_path / "back")
    original = load_checkpoint(ckpt)
    raw = raw_batch((3, 9, 9))
    assert np.array_equal(cnncli_logits(tmp_path / "back", raw), cnncli_logits(ckpt, raw))
    assert back.class_names == original.class_names
    assert np.array_equal(back.normalization["mean"], original.normalization["mean"])
    assert cli("summary", tmp_path / "back" / "config.yaml").exit_code == 0
    np.save(tmp_path / "x.npy", raw[:2])
    predicted = cli("predict", tmp_path / "back", tmp_path / "x.npy", "--top-k", "1")
    assert predicted.exit_code == 0 and "class" in predicted.output


def _graph_file(path, nodes, inits, in_shape=(1, 2, 4, 4), out_shape=(1, 2, 4, 4)):
    """A hand-made graph from x to y; float64 weights are stored as float32."""
    from onnx import TensorProto, helper, numpy_helper

    def stored(v):
        return np.asarray(v, np.float32) if np.asarray(v).dtype == np.float64 else v

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
        [numpy_helper.from_array(stored(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    return path


def test_foreign_matmul_reshape_models_import(tmp_path):
    from onnx import helper

    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(32, 3)), rng.normal(size=3)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"], name="flat"),
             helper.make_node("MatMul", ["flat", "w"], ["mm"], name="fc"),
             helper.make_node("Add", ["mm", "b"], ["y"], name="fc_bias")]
    inits = {"w": w, "b": b, "shape": np.array([0, -1], np.int64)}
    path = _graph_file(tmp_path / "m.onnx", nodes, inits, (2, 2, 4, 4), (2, 3))
    assert cli("import", path, "-o", tmp_path / "out").exit_code == 0
    x = rng.normal(size=(2, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(load_checkpoint(tmp_path / "out").model().forward(x),
                               run_onnx(path, x, ("x", "y")), atol=1e-5)


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b"\x08\x07garbage that is no protobuf" * 3), "not a readable ONNX"),
    (lambda p: p.write_bytes(b""), "not a readable ONNX"),
    (lambda p: p.write_bytes(b"PK\x03\x04" + bytes(40)),
     "not a readable ONNX model (it is a zip archive, such as a cnncli .npz checkpoint)"),
    (lambda p: p.write_bytes(b"\x10" + bytes(7) + b'{"a": 1}  '),
     "not a readable ONNX model (it is a safetensors file)"),
])
def test_foreign_or_empty_files_are_one_line_and_write_nothing(tmp_path, make, words):
    path = tmp_path / "bad.onnx"
    make(path)
    result = cli("import", path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.startswith("cnncli: error: ") and words in result.output
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_truncated_export_is_refused(tmp_path):
    make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/digits.yaml"))
    export(tmp_path / "last.npz", "--format", "onnx")
    blob = (tmp_path / "last.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(blob[:len(blob) // 2])
    result = cli("import", tmp_path / "cut.onnx", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "cut.onnx is not a readable ONNX model" in result.output
    assert not (tmp_path / "out").exists()


def test_branches_and_unknown_operators_name_the_node(tmp_path):
    from onnx import helper

    mul = [helper.make_node("Relu", ["x"], ["r"], name="r"),
           helper.make_node("Mul", ["x", "r"], ["y"], name="gate")]
    result = cli("import", _graph_file(tmp_path / "a.onnx", mul, {}), "-o", tmp_path / "o1")
    assert result.exit_code == 2
    assert "node 'gate' (Mul) joins branches in a way cnncli has no layer for" in result.output
    lrn = [helper.make_node("LRN", ["x"], ["y"], name="norm", size=3)]
    result = cli("import", _graph_file(tmp_path / "b.onnx", lrn, {}), "-o", tmp_path / "o2")
    assert result.exit_code == 2
    assert "node 'norm' (LRN) is not supported; cnncli imports Conv, MaxPool" in result.output
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_missing_onnx_extra_names_the_install(tmp_path, monkeypatch):
    import sys

    make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/digits.yaml"))
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = cli("export", tmp_path / "last.npz", "--format", "onnx")
    assert result.exit_code == 2
    assert result.output == ("cnncli: error: this command needs the onnx package (pip install "
                             "'cnncli[onnx]')\n")
    assert cli("import", tmp_path / "x.onnx").exit_code == 2
    assert not (tmp_path / "last.onnx").exists()


def test_bad_opset_is_refused_before_writing(tmp_path):
    make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/digits.yaml"))
    result = cli("export", tmp_path / "last.npz", "--format", "onnx", "--opset", "7")
    assert result.exit_code == 2 and "--opset 7 is outside" in result.output
    assert not (tmp_path / "last.onnx").exists()


def test_a_branching_model_exports_and_runs_in_onnx_runtime(tmp_path):
    layers = [
        {"type": "conv2d", "name": "stem", "out_channels": 4, "kernel_size": 3, "padding": 1,
         "activation": "relu"},
        {"type": "conv2d", "name": "a", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "add", "name": "sum", "from": [-1, "stem"], "activation": "relu"},
        {"type": "conv2d", "name": "side", "out_channels": 2, "kernel_size": 1, "from": "stem"},
        {"type": "dropout", "from": "side"},
        {"type": "concat", "name": "cat", "from": ["sum", -1]},
        {"type": "flatten"}, {"type": "dense", "name": "out", "units": 3}]
    ckpt = make_checkpoint(tmp_path / "last.npz", small_config(layers))
    export(ckpt, "--format", "onnx", "-o", tmp_path / "g.onnx")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "g.onnx")).graph.node}
    assert {"Sum", "Concat"} <= ops
    raw = raw_batch((3, 9, 9), n=3)
    np.testing.assert_allclose(run_onnx(tmp_path / "g.onnx", raw), cnncli_logits(ckpt, raw),
                               atol=1e-4, rtol=0)
    # and back: the same layers, from: and logits
    assert cli("import", tmp_path / "g.onnx", "-o", tmp_path / "back").exit_code == 0
    back = load_checkpoint(tmp_path / "back" / "last.npz")
    layers = back.config["model"]["layers"]
    # stem, relu, a, add(a, relu), relu, side, concat(relu, side): exported activations come
    # back as layers of their own, and dropout (no node) is gone
    assert [e.get("from") for e in layers if e["type"] in ("add", "concat")] == [[-1, -2],
                                                                                  [-2, -1]]
    assert set(back.state) == set(load_checkpoint(ckpt).state)
    np.testing.assert_allclose(cnncli_logits(tmp_path / "back" / "last.npz", raw),
                               cnncli_logits(ckpt, raw), atol=1e-5, rtol=0)
