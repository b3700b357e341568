"""The safetensors reader and writer, and the state_dict cnncli exports in it."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from click.testing import CliRunner
from interop_models import make_checkpoint, small_config

from cnncli.cli import main
from cnncli.errors import CheckpointError
from cnncli.interop import safetensors
from cnncli.training.checkpoint import load_checkpoint

BN_NET = small_config([{"type": "conv2d", "name": "conv", "filters": 4, "kernel_size": 3},
                       {"type": "batchnorm2d", "name": "bn"}, {"type": "relu"},
                       {"type": "flatten"}, {"type": "dense", "name": "fc", "units": 3}])


def test_bytes_follow_the_format_and_read_back():
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(5, np.int64),
               "d": np.array([1.5, -2.0]), "m": np.array([[True, False]])}
    blob = safetensors.encode(tensors, {"k": "v"})
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + size])
    assert size % 8 == 0
    assert header["__metadata__"] == {"k": "v"}
    assert header["a"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["n"] == {"dtype": "I64", "shape": [], "data_offsets": [24, 32]}
    assert blob[8 + size:8 + size + 24] == tensors["a"].tobytes()
    back, meta = safetensors.decode(blob)
    assert meta == {"k": "v"}
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype and np.array_equal(back[key], value)


@pytest.mark.parametrize("cut, words", [(4, "shorter than"), (40, "truncated"),
                                        (-3, "truncated")])
def test_truncated_files_are_one_line(tmp_path, cut, words):
    blob = safetensors.encode({"w": np.ones((4, 4), np.float32)})
    path = tmp_path / "w.safetensors"
    path.write_bytes(blob[:cut])
    with pytest.raises(CheckpointError, match=words) as info:
        safetensors.read(path)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_foreign_and_inconsistent_headers_are_refused():
    with pytest.raises(CheckpointError, match="not JSON"):
        safetensors.decode(struct.pack("<Q", 4) + b"\x80abc")
    with pytest.raises(CheckpointError, match="exceeds"):
        safetensors.decode(b"PK\x03\x04 this is a zip, not safetensors")
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode()
    with pytest.raises(CheckpointError, match="overlaps"):
        safetensors.decode(struct.pack("<Q", len(header)) + header + bytes(12))
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(CheckpointError, match="do not hold"):
        safetensors.decode(struct.pack("<Q", len(header)) + header + bytes(8))
    header = json.dumps({"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}).encode()
    with pytest.raises(CheckpointError, match="malformed"):
        safetensors.decode(struct.pack("<Q", len(header)) + header + bytes(8))


def test_export_holds_the_pytorch_state_dict_and_the_config(tmp_path):
    ckpt_path = make_checkpoint(tmp_path / "run" / "last.npz", BN_NET)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format",
                                       "safetensors"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "last.safetensors"
    assert result.output.strip() == f"wrote {out}"
    tensors, meta = safetensors.read(out)
    ckpt = load_checkpoint(ckpt_path)
    assert list(tensors) == list(ckpt.state)  # PyTorch's order: weight, bias, then buffers
    assert list(tensors)[2:7] == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                  "bn.num_batches_tracked"]
    assert tensors["bn.num_batches_tracked"].dtype == np.int64
    assert tensors["bn.num_batches_tracked"].shape == ()
    for key, value in ckpt.state.items():
        assert np.array_equal(tensors[key], value)
    assert meta["format"] == "pt"
    assert json.loads(meta["cnncli.class_names"]) == ["class0", "class1", "class2"]
    assert "batchnorm2d" in meta["cnncli.config"]


def test_layer_names_that_are_not_identifiers_are_renamed_and_recorded(tmp_path):
    net = small_config([{"type": "conv2d", "name": "conv-1", "filters": 2, "kernel_size": 3},
                        {"type": "flatten", "name": "2flat"},
                        {"type": "dense", "name": "class", "units": 2}])
    make_checkpoint(tmp_path / "last.npz", net)
    out = tmp_path / "w.safetensors"
    assert CliRunner().invoke(main, ["export", str(tmp_path / "last.npz"), "--format",
                                     "safetensors", "-o", str(out)]).exit_code == 0
    tensors, meta = safetensors.read(out)
    assert sorted(tensors) == ["conv_1.bias", "conv_1.weight", "layer_class.bias",
                               "layer_class.weight"]
    assert json.loads(meta["cnncli.layer_names"])["conv_1"] == "conv-1"


def test_export_refusals_are_one_line_and_write_nothing(tmp_path):
    make_checkpoint(tmp_path / "last.npz", BN_NET)

    def export(*args):
        return CliRunner().invoke(main, ["export", *map(str, args)])

    missing = export(tmp_path / "nope.npz", "--format", "safetensors")
    assert missing.exit_code == 2 and "no checkpoint at" in missing.output
    opset = export(tmp_path / "last.npz", "--format", "safetensors", "--opset", "17")
    assert opset.exit_code == 2 and "opset applies only to --format onnx" in opset.output
    (tmp_path / "afile").write_text("x")
    folder = export(tmp_path / "last.npz", "--format", "pytorch", "-o", tmp_path / "afile")
    assert folder.exit_code == 2 and "afile is a file" in folder.output
    for result in (missing, opset, folder):
        assert len(result.output.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "last.npz"]
