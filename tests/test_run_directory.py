"""The run directory's guards (issue 12, cases 2-6): one training at a time, a user's own
folder is never treated as a run, a killed run's temporaries are cleaned, divergence keeps the
last good checkpoint, and resume refuses a changed experiment."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.errors import CheckpointError, ConfigError
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.run_dir import LOCK, MARKER
from cnncli.training.trainer import train


def _blobs(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.integers(0, 120, size=(90, 4, 4))
    for c in range(3):
        x[y == c, c, :] += 120
    np.savez(path, x_train=x.astype(np.uint8), y_train=y)
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    blobs = _blobs(tmp_path / "blobs.npz")
    path = tmp_path / "net.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: net
        model:
          input_shape: [1, 4, 4]
          layers: [{{type: flatten}}, {{type: dense, units: 3}}]
        data: {{path: {blobs}, val_split: 0.2}}
        train: {{epochs: 1, batch_size: 16, lr: 0.1}}
        """))
    return path


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_second_training_into_a_locked_run_directory_exits_2_naming_the_pid(tmp_path, config):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from cnncli.training.run_dir import "
         "RunDirectory; RunDirectory(sys.argv[1]).acquire(); print('locked', flush=True); "
         "time.sleep(60)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli("train", config, "--out", out)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1
        assert f"in use by another training (pid {holder.pid})" in result.stderr
        assert "--out DIR" in result.stderr
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "last.npz").exists()
    assert cli("train", config, "--out", out, "-q").exit_code == 0  # the dead holder's lock
    assert not (out / LOCK).exists()                                  # released at the end


def test_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, config):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK).write_text(f"{dead.pid}\n")
    (out / MARKER).write_text("")
    assert cli("train", config, "--out", out, "-q").exit_code == 0
    assert load_checkpoint(out / "last.npz").epoch == 1


def test_folder_holding_only_a_users_config_is_refused_even_with_overwrite(tmp_path, config):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.yaml").write_text("my own notes\n")
    for extra in ([], ["--overwrite"]):
        result = cli("train", config, "--out", folder, *extra)
        assert result.exit_code == 2 and "not a cnncli run directory" in result.stderr
        assert result.stderr.count("\n") == 1
    assert (folder / "config.yaml").read_text() == "my own notes\n"
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


def test_out_as_an_empty_string_is_refused(tmp_path, config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", config, "--out", "")
    assert result.exit_code == 2 and "empty path" in result.stderr
    assert not (tmp_path / "last.npz").exists()


def test_overwrite_deletes_only_the_files_cnncli_wrote(tmp_path, config):
    out = tmp_path / "run"
    assert cli("train", config, "--out", out, "-q").exit_code == 0
    (out / "notes.txt").write_text("keep me")
    assert cli("train", config, "--out", out, "-q").exit_code == 2   # a run is there
    assert cli("train", config, "--out", out, "-q", "--overwrite").exit_code == 0
    assert (out / "notes.txt").read_text() == "keep me"


def test_overwrite_deletes_the_replaced_runs_test_scores(tmp_path, config):
    # A replacement that stops before its own test scores (here: it diverges at once) must not
    # be listed by `cnncli runs` with the old run's test accuracy.
    with np.load(tmp_path / "blobs.npz") as data:
        x, y = data["x_train"], data["y_train"]
    np.savez(tmp_path / "split.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])
    noise = np.random.default_rng(1).integers(0, 3, len(x))   # no weights fit random labels,
    np.savez(tmp_path / "noise.npz", x_train=x, y_train=noise)   # so a huge step diverges
    out = tmp_path / "run"
    first = cli("train", config, "--out", out, "-q", "--set", f"data.path={tmp_path}/split.npz")
    assert first.exit_code == 0 and (out / "test.json").exists(), first.output
    result = cli("train", config, "--out", out, "-q", "--overwrite", "--lr", "1e6",
                 "--set", f"data.path={tmp_path}/noise.npz")
    assert result.exit_code == 1, result.output
    assert not (out / "test.json").exists()
    listed = cli("runs", out, "--json")
    assert listed.exit_code == 0 and '"test_accuracy": null' in listed.output


def test_a_killed_runs_temporaries_are_removed_at_the_next_start(tmp_path, config):
    out = tmp_path / "run"
    assert cli("train", config, "--out", out, "-q").exit_code == 0
    left = [out / ".last.npz.k1ll3d.tmp", out / ".metrics.csv.x.tmp"]
    for path in left:
        path.write_bytes(b"half a checkpoint")
    (out / ".notes.tmp").write_text("not ours")
    assert cli("train", "--resume", out, "--epochs", "2", "-q").exit_code == 0
    assert not any(path.exists() for path in left)
    assert (out / ".notes.tmp").exists()


def test_loss_far_above_its_start_stops_with_exit_1_and_keeps_the_last_checkpoint(tmp_path,
                                                                                 config):
    # Random labels: no weights fit them, so a huge step gives confidently wrong, huge losses.
    with np.load(tmp_path / "blobs.npz") as data:
        x = data["x_train"]
    labels = np.random.default_rng(1).integers(0, 3, len(x))
    np.savez(tmp_path / "blobs.npz", x_train=x, y_train=labels)
    out = tmp_path / "run"
    assert cli("train", config, "--out", out, "-q").exit_code == 0
    before = (out / "last.npz").read_bytes()
    result = cli("train", "--resume", out, "--epochs", "3", "--lr", "1e6", "-q")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "times its starting value" in result.stderr and "lower train.lr" in result.stderr
    assert (out / "last.npz").read_bytes() == before


@pytest.mark.parametrize("key, value", [("val_split", 0.5), ("normalize", "standardize")])
def test_resume_refuses_a_changed_experiment_setting(tmp_path, config, key, value):
    out = tmp_path / "run"
    assert cli("train", config, "--out", out, "-q").exit_code == 0
    changed = yaml.safe_load(config.read_text())
    changed["data"][key] = value
    config.write_text(yaml.safe_dump(changed))
    result = cli("train", config, "--resume", out, "--epochs", "2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    stored = {"val_split": 0.2, "normalize": "scale"}[key]
    assert f"data.{key} {value!r} differs from the resumed run's {stored!r}" in result.stderr
    assert load_checkpoint(out / "last.npz").epoch == 1


def test_checkpoint_with_a_negative_epoch_is_refused(tmp_path, config):
    out = tmp_path / "run"
    train(yaml.safe_load(config.read_text()), out_dir=out)
    with np.load(out / "last.npz", allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["epoch"] = np.array(-5)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(CheckpointError, match="epoch -5 and step"):
        load_checkpoint(tmp_path / "bad.npz")
    result = cli("train", "--resume", tmp_path / "bad.npz")
    assert result.exit_code == 2 and "epoch -5 and step" in result.stderr


def test_library_errors_name_arguments_and_the_cli_names_flags(tmp_path, config):
    """Issue 11, item 5: Python users read key=value, command-line users read flags."""
    with pytest.raises(ConfigError, match=r"^with epochs=0: train\.epochs must be"):
        train(yaml.safe_load(config.read_text()), out_dir=tmp_path / "r", epochs=0)
    assert os.path.exists(tmp_path / "r") is False
    result = cli("train", config, "--out", tmp_path / "r", "--seed", "-3")
    assert result.stderr.startswith("cnncli: error: with --seed -3: seed must be")
