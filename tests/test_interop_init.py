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
