"""The training loop: run directory, reproducibility, resume == uninterrupted, divergence,
early stopping, Ctrl-C, parity with PyTorch SGD, and the digits quality bar."""

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

import cnncli.training.run_dir as run_dir_mod
import cnncli.training.trainer as train_mod
from cnncli import model_from_entries
from cnncli.errors import CheckpointError, ConfigError
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.optim import SGD
from cnncli.training.trainer import (
    Callbacks,
    TrainingDiverged,
    TrainingInterrupted,
    train,
    train_step,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "sgd_cnn_reference.npz"


def _blobs(path: Path, n_train=120, n_test=30, seed=0) -> Path:
    """Three classes of 1x4x4 uint8 images, each brightest in its own rows, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 120, size=(n, 4, 4))
        for c in range(3):
            x[y == c, c, :] += 120
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _config(data_path, **train):
    return {
        "name": "blobs", "seed": 7,
        "model": {"input_shape": [1, 4, 4], "layers": [
            {"type": "flatten"},
            {"type": "dense", "units": 12, "activation": "relu", "name": "hidden"},
            {"type": "dropout", "p": 0.25},
            {"type": "dense", "units": 3, "name": "out"}]},
        "data": {"path": str(data_path), "val_split": 0.2, "normalize": "scale"},
        "train": {"epochs": 4, "batch_size": 16, "optimizer": "sgd", "lr": 0.2,
                  "momentum": 0.9, **train},
    }


@pytest.fixture()
def blobs(tmp_path):
    return _blobs(tmp_path / "blobs.npz")


def _params(path):
    return load_checkpoint(path).state


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_run_directory_contents(tmp_path, blobs):
    run = train(_config(blobs), out_dir=tmp_path / "run", epochs=3)
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    # .cnncli-run marks the folder as cnncli's (the lock file is gone once the run ends)
    assert files == [".cnncli-run", "best.npz", "config.yaml", "last.npz", "metrics.csv",
                     "test.json"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["model"]["layers"][1]["name"] == "hidden"
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "train_loss", "train_accuracy", "val_loss",
                             "val_accuracy", "lr", "seconds"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)
    last = load_checkpoint(tmp_path / "run" / "last.npz")
    assert last.epoch == 3 and last.step == 3 * 6  # 96 train images / batch 16
    assert len(last.metrics) == 3
    best = load_checkpoint(tmp_path / "run" / "best.npz")
    # best = highest val accuracy, ties broken by lower val loss
    key = [(r["val_accuracy"], -r["val_loss"]) for r in run.metrics]
    assert best.epoch == run.best_epoch == 1 + max(range(3), key=key.__getitem__)
    assert best.best_metric == max(r["val_accuracy"] for r in run.metrics)
    assert run.test is not None and run.test["num_samples"] == 30
    # the model learns the blobs
    assert run.metrics[-1]["train_accuracy"] > 0.8


def test_same_seed_is_bitwise_reproducible_and_seed_matters(tmp_path, blobs):
    train(_config(blobs), out_dir=tmp_path / "a", epochs=2)
    train(_config(blobs), out_dir=tmp_path / "b", epochs=2)
    train(_config(blobs), out_dir=tmp_path / "c", epochs=2, seed=8)
    _assert_same_state(_params(tmp_path / "a" / "last.npz"), _params(tmp_path / "b" / "last.npz"))
    assert not np.array_equal(_params(tmp_path / "a" / "last.npz")["out.weight"],
                              _params(tmp_path / "c" / "last.npz")["out.weight"])


def _comparable(metrics):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in metrics]


def test_resume_two_plus_two_equals_four(tmp_path, blobs):
    cfg = _config(blobs, optimizer="adam", lr=0.01, momentum=0.0,
                  lr_schedule={"type": "step", "step_size": 1, "gamma": 0.7})
    straight = train(cfg, out_dir=tmp_path / "straight", epochs=4)
    train(cfg, out_dir=tmp_path / "split", epochs=2)
    resumed = train(None, resume=tmp_path / "split", epochs=4)
    assert resumed.run_dir == tmp_path / "split"
    a = load_checkpoint(tmp_path / "straight" / "last.npz")
    b = load_checkpoint(tmp_path / "split" / "last.npz")
    _assert_same_state(a.state, b.state)
    _assert_same_state(a.optimizer_state, b.optimizer_state)
    assert a.rng_state == b.rng_state and a.step == b.step and b.epoch == 4
    assert _comparable(straight.metrics) == _comparable(resumed.metrics)
    with open(tmp_path / "split" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


class _InterruptAt(Callbacks):
    def __init__(self, epoch, batch):
        self.at, self.epoch = (epoch, batch), 0

    def on_epoch_start(self, epoch, epochs, num_batches, lr):
        self.epoch = epoch

    def on_batch(self, batch, size, loss, correct):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("epoch, batch", [(3, 2), (1, 1)])
def test_ctrl_c_mid_epoch_then_resume_is_bitwise_identical(tmp_path, blobs, epoch, batch):
    cfg = _config(blobs, lr_schedule={"type": "cosine", "warmup_epochs": 1},
                  grad_clip_norm=1.0, label_smoothing=0.1)
    cfg["data"]["augment"] = {"random_crop": 1, "horizontal_flip": True}
    train(cfg, out_dir=tmp_path / "straight")
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, out_dir=tmp_path / "cut", callbacks=_InterruptAt(epoch, batch))
    assert info.value.epoch == epoch - 1
    assert load_checkpoint(tmp_path / "cut" / "last.npz").epoch == epoch - 1
    train(cfg, resume=tmp_path / "cut" / "last.npz")
    _assert_same_state(_params(tmp_path / "straight" / "last.npz"),
                       _params(tmp_path / "cut" / "last.npz"))
    _assert_same_state(_params(tmp_path / "straight" / "best.npz"),
                       _params(tmp_path / "cut" / "best.npz"))



@pytest.mark.parametrize("target", ["last.npz", "best.npz"])
def test_ctrl_c_during_the_epochs_writes_still_leaves_best_and_metrics(tmp_path, blobs,
                                                                     monkeypatch, target):
    """A Ctrl-C just before last.npz or best.npz of epoch 2 is written loses nothing."""
    real = run_dir_mod.save_checkpoint
    writes = []

    def interrupted_once(path, **kwargs):
        writes.append(Path(path).name)
        if Path(path).name == target and kwargs["epoch"] == 2 and writes.count(target) == 2:
            raise KeyboardInterrupt
        return real(path, **kwargs)

    monkeypatch.setattr(run_dir_mod, "save_checkpoint", interrupted_once)
    cfg = _config(blobs, epochs=4)
    cfg["data"]["val_split"] = 0.0  # best by training accuracy: epoch 2 improves on epoch 1
    out = tmp_path / "r"
    with pytest.raises(TrainingInterrupted):
        train(cfg, out_dir=out)
    last = load_checkpoint(out / "last.npz")
    assert last.epoch == 2
    best_epoch = last.run_state["best_epoch"]
    assert load_checkpoint(out / "best.npz").epoch == best_epoch
    with open(out / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2]


def test_resuming_a_finished_run_with_more_epochs_continues(tmp_path, blobs):
    train(_config(blobs), out_dir=tmp_path / "r", epochs=2)
    again = train(None, resume=tmp_path / "r", epochs=2)
    assert len(again.metrics) == 2  # nothing to do
    more = train(None, resume=tmp_path / "r", epochs=3)
    assert [r["epoch"] for r in more.metrics] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "r" / "last.npz").epoch == 3



@pytest.mark.parametrize("change", ["model", "optimizer"])
def test_resume_with_a_config_for_another_model_names_the_checkpoint(tmp_path, blobs, change):
    train(_config(blobs), out_dir=tmp_path / "r", epochs=1)
    before = (tmp_path / "r" / "config.yaml").read_text()
    other = (_config(blobs, optimizer="adam", momentum=0.0) if change == "optimizer"
             else _config(blobs))
    if change == "model":
        other["model"]["layers"][1]["units"] = 5
    with pytest.raises(CheckpointError, match=r"cannot resume .*last\.npz: .*(hidden\.weight|"
                       r"adam)") as err:
        train(other, resume=tmp_path / "r", epochs=2)
    assert "resume without a config" in str(err.value)
    assert (tmp_path / "r" / "config.yaml").read_text() == before  # nothing overwritten

def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, blobs):
    train(_config(blobs), out_dir=tmp_path / "r", epochs=1)
    before = _params(tmp_path / "r" / "last.npz")
    with pytest.raises(TrainingDiverged) as info:
        train(None, resume=tmp_path / "r", epochs=3, lr=1e38)
    message = str(info.value)
    assert "epoch 2" in message and "batch" in message and "lower train.lr" in message
    assert "grad_clip_norm" in message and "last.npz (epoch 1)" in message
    after = load_checkpoint(tmp_path / "r" / "last.npz")
    assert after.epoch == 1
    _assert_same_state(before, after.state)


def test_divergence_in_the_last_update_of_an_epoch_writes_no_checkpoint(tmp_path, blobs):
    """One batch per epoch: no later loss sees the bad update, the epoch-end check must."""
    train(_config(blobs), out_dir=tmp_path / "r", epochs=1)
    before = (tmp_path / "r" / "last.npz").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"(the weights became NaN or infinite|"
                                               r"validation loss became \S+) at the end of "
                                               r"epoch 2; last good checkpoint: .*last\.npz "
                                               r"\(epoch 1\)"):
        train(None, resume=tmp_path / "r", epochs=3, lr=1e38, batch_size=1000)
    assert (tmp_path / "r" / "last.npz").read_bytes() == before
    assert load_checkpoint(tmp_path / "r" / "best.npz").epoch == 1


def test_early_stopping_on_val_loss(tmp_path, blobs):
    cfg = _config(blobs, epochs=20, lr=1e-9, momentum=0.0,
                  early_stopping={"patience": 2, "metric": "val_loss", "min_delta": 1.0})
    run = train(cfg, out_dir=tmp_path / "r")
    assert run.stopped_early and len(run.metrics) == 3


def test_early_stopping_needs_validation(tmp_path, blobs):
    cfg = _config(blobs, early_stopping={"patience": 2, "metric": "val_accuracy"})
    cfg["data"]["val_split"] = 0
    with pytest.raises(ConfigError, match="val_split"):
        train(cfg, out_dir=tmp_path / "r")


def test_best_by_train_accuracy_without_validation(tmp_path, blobs):
    cfg = _config(blobs)
    cfg["data"]["val_split"] = 0
    run = train(cfg, out_dir=tmp_path / "r", epochs=3)
    assert run.best_by == "train_accuracy"
    assert all(r["val_loss"] is None for r in run.metrics)
    key = [(r["train_accuracy"], -r["train_loss"]) for r in run.metrics]
    assert load_checkpoint(tmp_path / "r" / "best.npz").epoch == \
        1 + max(range(3), key=key.__getitem__)


# ------------------------------------------------------------------ parity with PyTorch

@pytest.fixture(scope="module")
def torch_ref():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("run", ["plain_sgd", "momentum_clip_smooth"])
def test_small_cnn_sgd_matches_pytorch(torch_ref, run):
    kwargs, clip, smoothing = json.loads(str(torch_ref["runs"]))[run]
    model = model_from_entries((1, 8, 8), [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "name": "conv1",
         "activation": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 3, "name": "fc"}])
    init = {k[len("init/"):]: v for k, v in torch_ref.items() if k.startswith("init/")}
    model.load_state_dict(init)
    optimizer = SGD(**kwargs)
    losses = []
    for x, y in zip(torch_ref["x"], torch_ref["y"], strict=True):
        losses.append(train_step(model, optimizer, x, y, label_smoothing=smoothing,
                                 clip_norm=clip)[0])
    np.testing.assert_allclose(losses, torch_ref[f"{run}/losses"], rtol=1e-5)
    for key, value in model.state_dict().items():
        np.testing.assert_allclose(value, torch_ref[f"{run}/{key}"], rtol=1e-4, atol=1e-5,
                                   err_msg=key)


# ------------------------------------------------------------------ quality bar (the slow one)

def test_digits_config_reaches_97_percent(tmp_path):
    from cnncli.config import load_config

    run = train(load_config(REPO / "configs" / "digits.yaml"), out_dir=tmp_path / "digits")
    assert run.test is not None and run.test["accuracy"] >= 0.97, run.test


def test_train_monkeypatched_step_counts(tmp_path, blobs, monkeypatch):
    """Every training sample is seen once per epoch (steps = ceil(n / batch))."""
    seen = []
    real = train_mod.train_step

    def counting(model, optimizer, x, y, **kw):
        seen.append(len(y))
        return real(model, optimizer, x, y, **kw)

    monkeypatch.setattr(train_mod, "train_step", counting)
    run = train(_config(blobs), out_dir=tmp_path / "r", epochs=2)
    n = len(run.dataset.y_train)
    assert sum(seen) == 2 * n and len(seen) == 2 * -(-n // 16)


# ------------------------------------------------------------------ the command line

def _write_config(tmp_path, blobs, **train):
    path = tmp_path / "blobs.yaml"
    path.write_text(yaml.safe_dump(_config(blobs, **train), sort_keys=False))
    return path


def test_cli_train_prints_one_line_per_epoch_and_a_table(tmp_path, blobs):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    config = _write_config(tmp_path, blobs)
    result = CliRunner().invoke(main, ["train", str(config), "--epochs", "2", "--out",
                                       str(tmp_path / "run"), "--batch-size", "32"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert any(line.startswith("epoch 2/2  train loss") and "val loss" in line for line in lines)
    assert "training summary" in result.stdout and "test accuracy" in result.stdout
    assert "\r" not in result.stdout  # no progress bar when stdout is not a terminal
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["batch_size"] == 32 and saved["train"]["epochs"] == 2
    quiet = CliRunner().invoke(main, ["train", str(config), "--epochs", "1", "--quiet",
                                      "--out", str(tmp_path / "q")])
    assert quiet.exit_code == 0 and "epoch 1/1" not in quiet.stdout
    assert "best val_accuracy" in quiet.stdout
    verbose = CliRunner().invoke(main, ["train", str(config), "--epochs", "1", "-v",
                                        "--out", str(tmp_path / "v")])
    assert "sgd lr=0.2 schedule=constant, batch_size=16, epochs=1, momentum=0.9" \
        in verbose.stdout


def test_cli_train_warns_once_per_layer_that_drops_rows(tmp_path, blobs):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    cfg = _config(blobs, epochs=1)
    cfg["model"]["layers"][:1] = [       # 4x4, kernel 3, stride 2: the last row/column unused
        {"type": "conv2d", "out_channels": 2, "kernel_size": 3, "stride": 2,
         "activation": "relu", "name": "c"},
        {"type": "flatten"}]
    config = tmp_path / "drop.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = CliRunner().invoke(main, ["train", str(config), "-q", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, result.stderr
    assert warnings[0].startswith(f"cnncli: warning: {config}:")
    assert "layer 1 'c' (conv2d)" in warnings[0] and "drops the last 1 row and 1 column" \
        in warnings[0]


def test_cli_train_errors_point_at_the_config_key(tmp_path, blobs):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    def error_line(cfg):
        config = tmp_path / "bad.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        return config, lines[0]

    text = yaml.safe_dump(_config(blobs), sort_keys=False).splitlines()
    path_line = next(i for i, line in enumerate(text, 1) if line.strip().startswith("path:"))
    shape_line = next(i for i, line in enumerate(text, 1) if "input_shape" in line)
    missing = _config(blobs)
    missing["data"]["path"] = str(tmp_path / "nothere.npz")
    config, line = error_line(missing)
    assert line.startswith(f"cnncli: error: {config}:{path_line}:3: data.path "), line
    wrong_size = _config(blobs)
    wrong_size["model"]["input_shape"] = [1, 5, 5]
    config, line = error_line(wrong_size)
    assert line.startswith(f"cnncli: error: {config}:{shape_line}:3: "), line
    assert "5x5" in line and "4x4" in line


def test_cli_ctrl_c_saves_and_prints_resume_command(tmp_path, blobs, monkeypatch):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    config = _write_config(tmp_path, blobs)
    calls = []
    real = train_mod.train_step

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:  # in epoch 2 (6 batches per epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", interrupting)
    out = tmp_path / "run"
    overrides = ["--lr", "0.05", "--batch-size", "20"]
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(out), *overrides])
    assert result.exit_code == 130
    hint = result.stderr.strip().splitlines()[-1]
    assert hint == f"resume with: cnncli train --resume {out}"
    assert load_checkpoint(out / "last.npz").epoch == 1
    monkeypatch.setattr(train_mod, "train_step", real)
    resumed = CliRunner().invoke(main, shlex.split(hint.removeprefix("resume with: "))[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming blobs" in resumed.stdout
    assert load_checkpoint(out / "last.npz").epoch == 4
    # the printed command continues exactly: same weights as never stopping
    whole = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "whole"),
                                      *overrides])
    assert whole.exit_code == 0, whole.output
    _assert_same_state(_params(out / "last.npz"), _params(tmp_path / "whole" / "last.npz"))



def test_cli_unwritable_run_directory_is_one_line(tmp_path, blobs, monkeypatch):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    config = _write_config(tmp_path, blobs)
    result = CliRunner().invoke(main, ["train", str(config), "--out", str(blobs / "run")])
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"cnncli: error: cannot write {blobs / 'run'}: ")

    def disk_full(path, **kwargs):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(run_dir_mod, "save_checkpoint", disk_full)
    full = CliRunner().invoke(main, ["train", str(config), "--out", str(tmp_path / "r")])
    assert full.exit_code == 1 and full.stderr.count("\n") == 1, full.output
    assert "last.npz: No space left on device" in full.stderr

def test_cli_errors_are_one_line(tmp_path, blobs):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    result = CliRunner().invoke(main, ["train", "--resume", str(bad)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "not an .npz file" in result.stderr
    result = CliRunner().invoke(main, ["train"])
    assert result.exit_code == 2 and "CONFIG" in result.stderr


@pytest.mark.parametrize("overrides, message", [
    ({"seed": -1}, r"^with seed=-1: seed must be an int in \[0, 4294967295\]"),
    ({"seed": 2**32}, r"^with seed=4294967296: seed must be an int"),
    ({"lr": float("nan")}, r"^with lr=nan: train\.lr must be a finite number"),
    ({"lr": float("inf")}, r"^with lr=inf: train\.lr must be a finite number"),
    ({"epochs": 1_000_001}, r"^with epochs=1000001: train\.epochs must be an int"),
    ({"epochs": 2}, r"^with epochs=2: warmup_epochs \(3\) must be less than train\.epochs"),
])
def test_overrides_obey_the_config_rules(tmp_path, blobs, overrides, message):
    """An override is checked like the config value it replaces: no NumPy traceback for a
    negative seed, no NaN learning rate, no config.yaml that later fails to load."""
    cfg = _config(blobs, epochs=5, lr_schedule={"type": "cosine", "warmup_epochs": 3})
    with pytest.raises(ConfigError, match=message) as info:
        train(cfg, out_dir=tmp_path / "r", **overrides)
    assert info.value.key is None  # the CLI must not point at a line of the config file
    assert not (tmp_path / "r").exists()


def test_resume_with_fewer_epochs_than_trained_is_refused(tmp_path, blobs):
    train(_config(blobs), out_dir=tmp_path / "r", epochs=2)
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"train\.epochs 1 is fewer than the 2 epochs .*last\.npz "
                                          r"has already trained \(set epochs=N with N > 2"):
        train(None, resume=tmp_path / "r", epochs=1)
    assert (tmp_path / "r" / "config.yaml").read_text() == before  # still says 2 epochs


def test_cli_bad_seed_is_one_line_without_a_config_location(tmp_path, blobs):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    config = _write_config(tmp_path, blobs)
    result = CliRunner().invoke(main, ["train", str(config), "--seed", "-1",
                                       "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert result.stderr == ("cnncli: error: with --seed -1: seed must be an int in "
                             "[0, 4294967295], got -1\n")


def test_resuming_from_an_older_checkpoint_never_overwrites_later_epochs(tmp_path, blobs):
    """E.g. --resume runs/x/best.npz when last.npz is further on: refused, nothing changes."""
    train(_config(blobs), out_dir=tmp_path / "r", epochs=2)
    old = tmp_path / "r" / "epoch2.npz"
    old.write_bytes((tmp_path / "r" / "last.npz").read_bytes())
    train(None, resume=tmp_path / "r", epochs=4)
    before = {name: (tmp_path / "r" / name).read_bytes()
              for name in ("last.npz", "best.npz", "metrics.csv", "config.yaml")}
    with pytest.raises(CheckpointError, match=r"last\.npz holds epoch 4, later than .*epoch2\.npz "
                                              r"\(epoch 2\); resuming into .* would overwrite it "
                                              r"\(continue the run with resume="):
        train(None, resume=old, epochs=6)
    assert before == {name: (tmp_path / "r" / name).read_bytes() for name in before}
    # branching off into another directory keeps the original and starts at epoch 2
    fork = train(None, resume=old, epochs=3, out_dir=tmp_path / "f")
    assert [r["epoch"] for r in fork.metrics] == [1, 2, 3]
    assert before == {name: (tmp_path / "r" / name).read_bytes() for name in before}


def test_resuming_into_a_new_directory_gives_it_last_and_best(tmp_path, blobs):
    """--out NEW_DIR on resume: the new directory holds a whole run even if no epoch runs or
    none improves, so the reported best.npz exists and the test split is evaluated."""
    train(_config(blobs), out_dir=tmp_path / "r", epochs=3)
    source_best = load_checkpoint(tmp_path / "r" / "best.npz")
    fork = train(None, resume=tmp_path / "r", epochs=3, out_dir=tmp_path / "f")
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == \
        [".cnncli-run", "best.npz", "config.yaml", "last.npz", "metrics.csv", "test.json"]
    assert load_checkpoint(tmp_path / "f" / "last.npz").epoch == 3
    copied = load_checkpoint(tmp_path / "f" / "best.npz")
    assert copied.epoch == fork.best_epoch == source_best.epoch
    _assert_same_state(copied.state, source_best.state)
    assert fork.test is not None and fork.test["checkpoint"] == str(tmp_path / "f" / "best.npz")


def test_ctrl_c_in_the_first_epoch_of_a_new_directory_leaves_its_last_npz(tmp_path, blobs):
    train(_config(blobs), out_dir=tmp_path / "r", epochs=2)
    with pytest.raises(TrainingInterrupted) as info:
        train(None, resume=tmp_path / "r", epochs=4, out_dir=tmp_path / "f",
              callbacks=_InterruptAt(3, 2))
    assert info.value.run_dir == tmp_path / "f" and info.value.epoch == 2
    assert load_checkpoint(tmp_path / "f" / "last.npz").epoch == 2  # the printed resume works
    train(None, resume=tmp_path / "f", epochs=4)
    train(None, resume=tmp_path / "r", epochs=4)
    _assert_same_state(_params(tmp_path / "f" / "last.npz"), _params(tmp_path / "r" / "last.npz"))


def test_a_model_with_one_output_is_refused(tmp_path, blobs):
    cfg = _config(blobs)
    cfg["model"]["layers"][-1]["units"] = 1
    with pytest.raises(ConfigError, match=r"the model outputs 1 class score per sample; a "
                                          r"classifier needs at least 2"):
        train(cfg, out_dir=tmp_path / "r")


def test_a_new_run_never_silently_replaces_an_existing_one(tmp_path, blobs):
    """Training again into a directory that holds a run is refused with the way out named;
    --overwrite replaces it, deleting the old checkpoints first so none is mistaken for new."""
    from click.testing import CliRunner

    from cnncli.cli.app import main

    config, out = _write_config(tmp_path, blobs), tmp_path / "run"
    assert CliRunner().invoke(main, ["train", str(config), "--epochs", "3", "--out", str(out),
                                     "-q"]).exit_code == 0
    before = {name: (out / name).read_bytes() for name in ("last.npz", "best.npz",
                                                           "metrics.csv", "config.yaml")}
    again = CliRunner().invoke(main, ["train", str(config), "--epochs", "1", "--out", str(out)])
    assert again.exit_code == 2
    assert again.stderr.count("\n") == 1
    assert f"{out} already holds a run (last.npz, best.npz, metrics.csv; last.npz at epoch 3)" \
        in again.stderr and "--overwrite" in again.stderr and f"--resume {out}" in again.stderr
    assert before == {name: (out / name).read_bytes() for name in before}
    # a run resumed into that directory from elsewhere is refused the same way
    train(_config(blobs), out_dir=tmp_path / "other", epochs=1)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(None, resume=tmp_path / "other", epochs=2, out_dir=out)
    assert before == {name: (out / name).read_bytes() for name in before}

    replaced = CliRunner().invoke(main, ["train", str(config), "--epochs", "1", "--out",
                                         str(out), "--overwrite", "-q"])
    assert replaced.exit_code == 0, replaced.output
    assert load_checkpoint(out / "last.npz").epoch == 1
    assert load_checkpoint(out / "best.npz").epoch == 1
    assert [row["epoch"] for row in csv.DictReader((out / "metrics.csv").open())] == ["1"]
