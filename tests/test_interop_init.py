"""Starting from other weights (train --init-from) and frozen layers in the optimizer."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from interop_models import make_checkpoint, small_config

from cnncli.cli import main
from cnncli.config import check_data
from cnncli.errors import CheckpointError, ConfigError
from cnncli.interop.init_from import apply_initial_weights
from cnncli.interop.pytorch import export_safetensors
from cnncli.nn.model import model_from_entries
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.optim import make_optimizer

LAYERS = [{"type": "conv2d", "name": "conv", "filters": 4, "kernel_size": 3},
          {"type": "batchnorm2d", "name": "bn"}, {"type": "relu"}, {"type": "flatten"},
          {"type": "dense", "name": "head", "units": 3}]


def model(layers=LAYERS, seed=5):
    return model_from_entries((2, 6, 6), layers, seed=seed)


def test_matching_names_load_and_the_rest_stays_fresh(tmp_path):
    source = make_checkpoint(tmp_path / "a.npz", small_config(LAYERS, (2, 6, 6)))
    wider = LAYERS[:-1] + [{"type": "dense", "name": "hidden", "units": 5},
                           {"type": "dense", "name": "head", "units": 3}]
    target = model(wider)
    fresh = target.state_dict()
    report = apply_initial_weights(target, source, reinit=["head"])
    state = load_checkpoint(source).state
    for name in ("conv.weight", "bn.running_var", "bn.num_batches_tracked"):
        assert np.array_equal(target.state_dict()[name], state[name])
    assert report.loaded[:2] == ["conv.weight", "conv.bias"]
    assert report.fresh == ["hidden.weight", "hidden.bias"]
    assert report.mismatched == ["head.weight"] and report.reinit == ["head.bias"]
    for name in ("hidden.weight", "head.weight", "head.bias"):
        assert np.array_equal(target.state_dict()[name], fresh[name])
    assert ("head.weight", "re-initialised (shape differs)") in report.rows()


def test_a_shape_mismatch_is_an_error_unless_reinit_and_changes_nothing(tmp_path):
    source = make_checkpoint(tmp_path / "a.npz", small_config(LAYERS, (2, 6, 6)))
    other = LAYERS[:-1] + [{"type": "dense", "name": "head", "units": 7}]
    target = model(other)
    before = target.state_dict()
    with pytest.raises(CheckpointError) as info:
        apply_initial_weights(target, source)
    assert str(info.value) == (
        f"{source}: layer 'head' (dense): head.weight has shape [3, 64] but the model's is "
        "[7, 64] (pass reinit=head to start that layer afresh)")
    assert all(np.array_equal(v, before[k]) for k, v in target.state_dict().items())


def test_another_architecture_and_unknown_layers_are_refused(tmp_path):
    source = make_checkpoint(tmp_path / "a.npz", small_config(LAYERS, (2, 6, 6)))
    renamed = [{**e, "name": "x" + e["name"]} if "name" in e else e for e in LAYERS]
    with pytest.raises(CheckpointError, match="it is for another architecture"):
        apply_initial_weights(model(renamed), source)
    with pytest.raises(ConfigError, match="did you mean 'head'"):
        apply_initial_weights(model(), source, freeze=["haed"])


def test_a_safetensors_export_is_a_source_too(tmp_path):
    source = make_checkpoint(tmp_path / "a.npz", small_config(LAYERS, (2, 6, 6)))
    ckpt = load_checkpoint(source)
    export_safetensors(ckpt, ckpt.model(), tmp_path / "a.safetensors")
    target = model()
    report = apply_initial_weights(target, tmp_path / "a.safetensors")
    assert report.fresh == [] and len(report.loaded) == len(ckpt.state)
    for key, value in ckpt.state.items():
        assert np.array_equal(target.state_dict()[key], value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_frozen_layers_get_no_update_and_no_state(optimizer):
    net = model()
    run = check_data({"model": {"input_shape": [2, 6, 6], "layers": LAYERS},
                      "train": {"optimizer": optimizer, "momentum": 0.0 if optimizer != "sgd"
                                else 0.9, "weight_decay": 0.1,
                                "init_from": {"source": "x", "freeze": ["conv", "bn"]}}}).run
    opt = make_optimizer(run.train)
    before = net.state_dict()
    x = np.random.default_rng(0).normal(size=(4, 2, 6, 6)).astype(np.float32)
    for _ in range(2):
        net.zero_grad()
        net.forward(x, train=True)
        net.backward(np.ones((4, 3), np.float32))
        opt.step(net.parameters())
    after = net.state_dict()
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias"):
        assert np.array_equal(after[name], before[name])
        assert not any(key.endswith("/" + name) for key in opt.state_dict())
    assert not np.array_equal(after["head.weight"], before["head.weight"])
    assert any(key.endswith("/head.weight") for key in opt.state_dict()) or optimizer == "sgd"


def test_cli_checks_init_from_before_writing_anything(tmp_path):
    source = make_checkpoint(tmp_path / "a.npz", small_config(LAYERS, (2, 6, 6)))
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
                      "    - {type: conv2d, name: conv, filters: 4, kernel_size: 3}\n"
                      "    - {type: flatten}\n    - {type: dense, name: head, units: 10}\n")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--init-from", str(source),
                                       "--out", str(run)])
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1
    assert "conv.weight has shape [4, 2, 3, 3] but the model's is [4, 1, 3, 3]" in result.output
    assert not run.exists()
    result = CliRunner().invoke(main, ["train", str(config), "--freeze", "conv"])
    assert result.exit_code == 2 and "--freeze and --reinit need --init-from" in result.output


def test_cli_loads_freezes_reinitialises_and_records(tmp_path):
    import yaml

    source = make_checkpoint(tmp_path / "src" / "last.npz", shipped_config_digits())
    raw = shipped_config_digits()
    raw["train"]["epochs"] = 1
    raw["model"]["layers"][-1]["units"] = 10  # same shape: loaded unless --reinit
    config = tmp_path / "ft.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--init-from", str(source),
                                       "--freeze", "conv1", "--reinit", "out", "--out",
                                       str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (f"initial weights from {source}: 6 loaded, 0 new, 2 re-initialised "
                        "parameters; frozen: conv1")
    assert any("conv1.weight" in line and "loaded" in line and "frozen" in line
               for line in lines)
    assert any("out.weight" in line and "re-initialised" in line for line in lines)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["init_from"]
    assert recorded == {"source": str(source), "freeze": ["conv1"], "reinit": ["out"]}
    before, after = load_checkpoint(source).state, load_checkpoint(run / "last.npz").state
    assert np.array_equal(after["conv1.weight"], before["conv1.weight"])
    assert np.array_equal(after["conv1.bias"], before["conv1.bias"])
    assert not np.array_equal(after["conv2.weight"], before["conv2.weight"])
    assert not any(k.endswith("conv1.weight") for k in load_checkpoint(run / "last.npz")
                   .optimizer_state)


def shipped_config_digits() -> dict:
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).resolve().parent.parent / "configs/digits.yaml")
                          .read_text())


#: A small ResNet for the bundled digits: a stem, two residual blocks (layer1.0, layer1.1) and
#: a dense head named fc, as in configs/resnet20_cifar.yaml.
TINY_RESNET = """\
name: tiny_resnet
model:
  input_shape: [1, 8, 8]
  blocks:
    basic:
      params: {channels: 4}
      layers:
        - {type: conv2d, name: conv1, out_channels: $channels, kernel_size: 3, padding: 1,
           bias: false}
        - {type: batchnorm2d, name: bn1}
        - {type: relu}
        - {type: conv2d, name: conv2, out_channels: $channels, kernel_size: 3, padding: 1,
           bias: false}
        - {type: batchnorm2d, name: bn2}
        - {type: add, from: [bn2, input], activation: relu}
  layers:
    - {type: conv2d, name: conv1, out_channels: 4, kernel_size: 3, padding: 1}
    - {type: basic, name: layer1, repeat: 2, channels: 4}
    - {type: global_avg_pool2d}
    - {type: dense, name: fc, units: UNITS}
data: {dataset: digits, val_split: 0.1}
train: {epochs: 1, batch_size: 64}
"""


def test_a_block_name_stands_for_the_layers_with_weights_inside_it(tmp_path):
    import yaml

    source = make_checkpoint(tmp_path / "a.npz", yaml.safe_load(TINY_RESNET.replace("UNITS",
                                                                                     "10")))
    cfg = check_data(yaml.safe_load(TINY_RESNET.replace("UNITS", "10"))).config
    net = model_from_entries(cfg["model"]["input_shape"], cfg["model"]["layers"])
    report = apply_initial_weights(net, source, freeze=["layer1.1", "conv1"])
    assert report.frozen == ["layer1.1.conv1", "layer1.1.bn1", "layer1.1.conv2",
                             "layer1.1.bn2", "conv1"]
    report = apply_initial_weights(net, source, reinit=["layer1"])
    assert len(report.reinit) == 24 and report.reinit[0] == "layer1.0.conv1.weight"
    assert report.loaded == ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    with pytest.raises(ConfigError, match="no layer or block 'layer'"):
        apply_initial_weights(net, source, freeze=["layer"])  # a name, not any prefix


def test_fine_tuning_a_branching_model_with_a_new_head_and_a_frozen_block(tmp_path):
    import yaml

    # trained elsewhere on 5 classes; fine-tuned here on the 10 digits with a new fc
    source = make_checkpoint(tmp_path / "src" / "last.npz",
                             yaml.safe_load(TINY_RESNET.replace("UNITS", "5")))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RESNET.replace("UNITS", "10"))
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(config), "--init-from", str(source),
                                       "--reinit", "fc", "--freeze", "layer1", "--out",
                                       str(run)])
    assert result.exit_code == 0, result.output
    inner = [f"layer1.{b}.{layer}" for b in (0, 1) for layer in ("conv1", "bn1", "conv2",
                                                                  "bn2")]
    assert result.output.splitlines()[0] == (
        f"initial weights from {source}: 26 loaded, 0 new, 2 re-initialised parameters; "
        f"frozen: {', '.join(inner)}")
    rows = {line.split()[1]: " ".join(line.split()[3:-1]) for line in result.output.splitlines()
            if line.startswith("│")}
    assert rows["fc.weight"] == "re-initialised (shape differs) │ yes"
    assert rows["layer1.0.conv1.weight"] == "loaded │ frozen"
    assert rows["layer1.0.bn1.running_mean"] == "loaded │ statistics still update"
    assert rows["conv1.weight"] == "loaded │ yes"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["init_from"]
    assert recorded == {"source": str(source), "freeze": inner, "reinit": ["fc"]}
    before, after = load_checkpoint(source).state, load_checkpoint(run / "last.npz").state
    for name in inner:
        for key in ("weight", "bias"):
            if f"{name}.{key}" in before:
                assert np.array_equal(after[f"{name}.{key}"], before[f"{name}.{key}"]), name
    assert not np.array_equal(after["conv1.weight"], before["conv1.weight"])
    assert after["fc.weight"].shape == (10, 4)
    # as in PyTorch, a frozen batch norm's running statistics follow the batches
    assert not np.array_equal(after["layer1.0.bn1.running_mean"],
                              before["layer1.0.bn1.running_mean"])


def test_bad_sources_are_one_located_line_and_nothing_is_written(tmp_path):
    import yaml

    from cnncli.interop import safetensors

    digits = tmp_path / "digits.yaml"
    digits.write_text(yaml.safe_dump(shipped_config_digits()))
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_RESNET.replace("UNITS", "10"))
    resnet = make_checkpoint(tmp_path / "resnet.npz", yaml.safe_load(TINY_RESNET.replace(
        "UNITS", "10")))
    ckpt = load_checkpoint(resnet)
    export_safetensors(ckpt, ckpt.model(), tmp_path / "w.safetensors")
    tensors, meta = safetensors.read(tmp_path / "w.safetensors")
    tensors["layer1.0.conv2.weight"][0, 0, 0, 0] = np.inf
    safetensors.write(tmp_path / "inf.safetensors", tensors, meta)
    (tmp_path / "text.safetensors").write_text("not weights at all")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:300])
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    cases = [
        # conv1 and fc have digits' names, but nothing fits: the architecture, not one layer
        (digits, resnet, "matches the model's (conv1.bias, conv1.weight, conv2.bias, ...) "
                         "(2 names match, with other shapes); it is for another architecture"),
        (tiny, tmp_path / "inf.safetensors", "inf.safetensors: layer 'layer1.0.conv2' "
                                             "(conv2d): layer1.0.conv2.weight holds NaN"),
        (tiny, tmp_path / "text.safetensors", "no JSON header follows; it is some other kind"),
        (tiny, tmp_path / "cut.safetensors", "exceeds the file's 300 bytes; truncated?"),
        (tiny, tmp_path / "m.onnx", "m.onnx is an ONNX model, not weights that start a run "
                                    "(import it first"),
    ]
    for config, source, words in cases:
        result = CliRunner().invoke(main, ["train", str(config), "--init-from", str(source),
                                           "--out", str(tmp_path / "run")])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("cnncli: error: ") and words in result.output, words
        assert len(result.output.splitlines()) == 1
        assert not (tmp_path / "run").exists()
