"""The generated PyTorch module loads its safetensors and gives cnncli's logits (needs the
pinned torch==2.13.0; skipped without torch, which is never a test dependency)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
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
from cnncli.interop import safetensors
from cnncli.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent

#: A graph with the awkward cases: the input read by two layers, a strided 'same' conv (torch's
#: 'same' has no stride: F.pad), layers named like forward's own names (x, torch), a block's
#: dotted names, a shortcut around a dropout, and a three-way concat.
ODD_GRAPH = [
    {"type": "conv2d", "name": "x", "out_channels": 4, "kernel_size": 4, "stride": 2,
     "padding": "same", "activation": "relu"},
    {"type": "conv2d", "name": "torch", "out_channels": 4, "kernel_size": 3, "stride": 2,
     "padding": 1, "from": "input"},
    {"type": "add", "name": "join", "from": [-2, -1]},
    {"type": "batchnorm2d", "name": "block.0.bn"},
    {"type": "dropout", "p": 0.5},
    {"type": "conv2d", "name": "block.0.conv", "out_channels": 2, "kernel_size": 1},
    {"type": "concat", "from": ["join", -1, "torch"]},
    {"type": "global_avg_pool2d"}, {"type": "dense", "name": "head.fc", "units": 3}]


def load_module(folder: Path):
    spec = importlib.util.spec_from_file_location(f"exported_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", [ROOT / "configs/digits.yaml", ROOT / "configs/lenet5.yaml",
                                    ROOT / "configs/cifar_small.yaml",
                                    ROOT / "configs/resnet20_cifar.yaml",
                                    ROOT / "configs/dense_digits.yaml", "every layer",
                                    "odd graph"],
                         ids=lambda c: getattr(c, "stem", c))
def test_the_generated_module_gives_cnncli_logits(tmp_path, config):
    torch = pytest.importorskip("torch")
    raw_config = (small_config(EVERY_LAYER) if config == "every layer" else
                  small_config(ODD_GRAPH) if config == "odd graph" else shipped_config(config))
    ckpt_path = make_checkpoint(tmp_path / "run" / "last.npz", raw_config)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "pytorch"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "last_pytorch"
    assert sorted(p.name for p in folder.iterdir()) == ["model.py", "model.safetensors"]
    assert "cnncli" not in (folder / "model.py").read_text().split('"""', 2)[2]  # no import
    net = load_module(folder).load()
    ckpt = load_checkpoint(ckpt_path)
    raw = raw_batch(ckpt.model().input_shape, n=3)
    with torch.no_grad():
        logits = net(torch.from_numpy(raw)).numpy()
    expected = ckpt.model().forward(normalize(raw, ckpt.normalization))
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert not net.training
    if config != "every layer":  # its names "conv-1" and "class" are no Python names
        assert set(net.state_dict()) == set(ckpt.state)


def test_a_branching_model_becomes_nested_modules_and_a_forward_with_named_tensors(tmp_path):
    make_checkpoint(tmp_path / "last.npz", shipped_config(ROOT / "configs/resnet20_cifar.yaml"))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "last.npz"), "--format",
                                       "pytorch", "-o", str(tmp_path / "torch")])
    assert result.exit_code == 0, result.output
    source = (tmp_path / "torch" / "model.py").read_text()
    # torchvision's names: layer2.0.downsample.0.weight is a state_dict key of both
    assert '        self.layer2 = nn.ModuleDict({\n            "0": nn.ModuleDict({\n' in source
    assert '                "downsample": nn.ModuleDict({\n                    "0": nn.Conv2d(' \
           '16, 32, kernel_size=1, stride=2, bias=False),\n' in source
    # the shortcut's tensor keeps a name until the add reads it
    assert ("        relu_4 = F.relu(x)\n\n        # layer2.0\n"
            "        x = self.layer2[\"0\"].conv1(relu_4)\n") in source
    assert ("        layer2_0_bn2 = self.layer2[\"0\"].bn2(x)\n"
            "        x = self.layer2[\"0\"].downsample[\"0\"](relu_4)\n"
            "        x = self.layer2[\"0\"].downsample[\"1\"](x)\n"
            "        x = layer2_0_bn2 + x\n") in source
    tensors, _ = safetensors.read(tmp_path / "torch" / "model.safetensors")
    assert set(tensors) == set(load_checkpoint(tmp_path / "last.npz").state)


def test_a_layer_with_weights_that_also_holds_layers_is_refused(tmp_path):
    layers = [{"type": "conv2d", "name": "a", "out_channels": 2, "kernel_size": 3},
              {"type": "conv2d", "name": "a.b", "out_channels": 2, "kernel_size": 1},
              {"type": "flatten"}, {"type": "dense", "units": 2}]
    make_checkpoint(tmp_path / "last.npz", small_config(layers))
    result = CliRunner().invoke(main, ["export", str(tmp_path / "last.npz"), "--format",
                                       "pytorch", "-o", str(tmp_path / "torch")])
    assert result.exit_code == 2
    assert result.output.startswith("cnncli: error: layer 'a' has weights and also holds")
    assert len(result.output.splitlines()) == 1
    assert not (tmp_path / "torch").exists()


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch==2.13.0")
@given(graph=st.composite(lambda draw: random_graph(draw, st))(), seed=st.integers(0, 2**16))
def test_random_small_graphs_give_cnncli_logits_in_pytorch(tmp_path_factory, graph, seed):
    import torch

    from cnncli.interop.common import torch_state_dict
    from cnncli.interop.pytorch import model_source
    from cnncli.nn.model import model_from_entries

    layers, shape = graph
    model = model_from_entries(shape, layers)
    randomize(model, seed)
    folder = tmp_path_factory.mktemp("graph")
    source = SimpleNamespace(run=SimpleNamespace(name="graph"), path="graph.npz",
                             class_names=["a", "b", "c"], normalization={"mode": "none"})
    (folder / "model.py").write_text(model_source(source, model))
    safetensors.write(folder / "model.safetensors", torch_state_dict(model)[0])
    x = raw_batch(shape, n=3, seed=seed) / 255
    with torch.no_grad():
        logits = load_module(folder).load()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, model.forward(x), atol=1e-4, rtol=1e-5)
