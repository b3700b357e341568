"""`cnncli runs`: the runs under a folder, read from their files, and the settings that differ."""

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.inspect.runs import differing_settings, flatten, list_runs, read_run

DIGITS = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


def _train(out: Path, *sets: str) -> None:
    args = ["train", str(DIGITS), "--out", str(out), "-q"]
    for text in sets:
        args += ["--set", text]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs")
    _train(folder / "adam", "train.epochs=2")
    _train(folder / "sgd", "train.epochs=1", "train.optimizer=sgd", "train.lr=0.05",
           "model.layers.0.out_channels=8")
    return folder


def test_each_run_reports_what_its_files_record(runs_folder):
    adam = read_run(runs_folder / "adam")
    metrics = (runs_folder / "adam" / "metrics.csv").read_text().splitlines()
    rows = [dict(zip(metrics[0].split(","), line.split(","), strict=True))
            for line in metrics[1:]]
    assert adam.epochs == 2
    assert adam.best_val_accuracy == max(float(r["val_accuracy"]) for r in rows)
    assert adam.seconds == pytest.approx(sum(float(r["seconds"]) for r in rows))
    test = json.loads((runs_folder / "adam" / "test.json").read_text())
    assert adam.test_accuracy == test["accuracy"]
    # the parameter count the training line printed for this model
    assert adam.parameters == 38_282 and read_run(runs_folder / "sgd").parameters == 35_898
    assert adam.problem is None


def test_differing_settings_are_the_keys_that_differ(runs_folder):
    runs = list_runs(runs_folder)
    assert [r.name for r in runs] == ["adam", "sgd"]
    assert differing_settings(runs) == ["model.layers.0.out_channels", "train.epochs",
                                        "train.optimizer", "train.lr"]
    assert differing_settings(runs[:1]) == []


def test_sort_puts_the_best_first_and_unknowns_last(runs_folder, tmp_path):
    by_val = list_runs(runs_folder, "val_accuracy")
    assert by_val[0].best_val_accuracy >= by_val[1].best_val_accuracy
    by_params = list_runs(runs_folder, "parameters")
    assert [r.parameters for r in by_params] == [35_898, 38_282]


def test_runs_of_an_earlier_version_are_read_from_the_checkpoint(runs_folder, tmp_path):
    """A run directory with only last.npz and metrics.csv (no marker, config.yaml, test.json)."""
    old = tmp_path / "old"
    old.mkdir()
    for name in ("last.npz", "metrics.csv"):
        shutil.copy(runs_folder / "adam" / name, old / name)
    run = read_run(old)
    assert run.config["train"]["epochs"] == 2 and run.parameters == 38_282
    # a key this version added is its default, not a difference from the new runs
    import numpy as np
    import yaml

    arrays = dict(np.load(old / "last.npz", allow_pickle=False))
    stored = yaml.safe_load(str(arrays["config"]))
    del stored["train"]["tensorboard"]
    arrays["config"] = np.array(yaml.safe_dump(stored))
    np.savez(old / "last.npz", **arrays)
    assert read_run(old).config["train"]["tensorboard"] is False
    assert differing_settings([read_run(old), read_run(runs_folder / "adam")]) == []
    assert run.epochs == 2 and run.test_accuracy is None and run.problem is None


def test_runs_of_two_different_models_differ_by_their_layer_types_not_dozens_of_keys(tmp_path):
    for name, config in (("digits", DIGITS), ("lenet5", DIGITS.parent / "lenet5.yaml")):
        (tmp_path / name).mkdir()
        shutil.copy(config, tmp_path / name / "config.yaml")
    runs = list_runs(tmp_path)
    digits, lenet = (flatten(r.config) for r in runs)
    retyped = [k.removesuffix("type") for k in digits
               if k.startswith("model.layers.") and k.endswith(".type") and k in lenet
               and digits[k] != lenet[k]]
    settings = differing_settings(runs)
    assert retyped and all(p + "type" in settings for p in retyped)
    assert not [k for k in settings if any(k.startswith(p) and k != p + "type"
                                           for p in retyped)], settings
    assert "model.layers.0.out_channels" in settings      # same type: its settings are listed
    result = CliRunner().invoke(main, ["runs", str(tmp_path)])   # piped: nothing cut short
    assert result.exit_code == 0 and "…" not in result.stdout, result.stdout


def test_flatten_keeps_short_lists_whole():
    flat = flatten({"model": {"input_shape": [1, 8, 8], "layers": [{"type": "flatten"}]},
                    "train": {"early_stopping": None}})
    assert flat == {"model.input_shape": [1, 8, 8], "model.layers.0.type": "flatten",
                    "train.early_stopping": None}


def test_cli_table_and_json(runs_folder):
    result = CliRunner().invoke(main, ["runs", str(runs_folder)])
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["run", "date", "epochs", "best", "val", "acc", "test", "acc",
                              "params", "time", "model.layers.0.out_channels", "train.epochs",
                              "train.optimizer", "train.lr"]
    assert rows[0].split()[0] == "adam" and rows[1].split()[0] == "sgd"
    assert rows[1].split()[-4:] == ["8", "1", "sgd", "0.05"]
    result = CliRunner().invoke(main, ["runs", str(runs_folder), "--json", "--sort",
                                       "parameters"])
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["runs"]] == ["sgd", "adam"]
    assert data["runs"][0]["settings"] == {"model.layers.0.out_channels": 8, "train.epochs": 1,
                                           "train.optimizer": "sgd", "train.lr": 0.05}


def test_cli_bad_folder_and_damaged_run(tmp_path, runs_folder):
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.stderr.startswith("cnncli: error: ") and "no such folder" in result.stderr
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.yaml").write_text("model: [unclosed\n")
    shutil.copy(runs_folder / "adam" / "metrics.csv", broken / "metrics.csv")
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "runs")])
    assert result.exit_code == 0
    assert result.stderr.startswith(f"cnncli: warning: {broken}: ")
    assert "broken" in result.stdout and "2" in result.stdout.split("broken")[1]
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "nowhere"), "--sort", "bogus"])
    assert result.exit_code == 2
