"""`cnncli summary`, `cnncli config`, `cnncli layers` through Click's test runner."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from cnncli import build_model
from cnncli.cli.app import main
from cnncli.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIGITS = str(CONFIGS / "digits.yaml")


def run(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result


def test_summary_table():
    result = run("summary", DIGITS)
    assert result.exit_code == 0, result.output
    for name in ("conv1", "conv2", "pool", "fc1", "out", "total params", "MACs"):
        assert name in result.stdout
    assert result.stderr == ""


def test_summary_json_schema():
    result = run("summary", DIGITS, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["input_shape"] == [1, 8, 8]
    for key in ("layers", "total_params", "trainable_params", "total_macs"):
        assert key in data
    model = build_model(DIGITS)
    assert len(data["layers"]) == len(model.layers)
    for row, layer, shape in zip(data["layers"], model.layers, model.shapes[1:], strict=True):
        assert {"name", "type", "output_shape", "params", "macs", "receptive_field",
                "jump"} <= set(row)
        assert row["name"] == layer.name and row["type"] == layer.type_name
        assert row["output_shape"] == list(shape)
        assert len(row["receptive_field"]) == 2 and len(row["jump"]) == 2
    assert data["total_params"] == sum(v.size for _, v, _ in model.parameters())
    assert data["total_macs"] == sum(r["macs"] for r in data["layers"])
    assert run("summary", DIGITS, "--format", "json").stdout == result.stdout


@pytest.mark.parametrize("name", ["[bold]x[/bold]", "../x", "a/b", "a\\\\b", "a..b", ".hidden"])
def test_layer_name_with_markup_or_path_characters_is_refused_at_its_line(tmp_path, name):
    """Names become file names (show's pictures) and state-dict keys: issue 12, case 1."""
    path = tmp_path / "net.yaml"
    path.write_text("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
                    f"    - {{type: flatten, name: '{name}'}}\n"
                    "    - {type: dense, units: 2}\n")
    result = run("summary", str(path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"cnncli: error: {path}:4:") and "name must be" in \
        result.stderr


def test_summary_csv_and_markdown():
    rows = list(csv.DictReader(io.StringIO(run("summary", DIGITS, "--format", "csv").stdout)))
    assert rows[0]["name"] == "conv1" and rows[0]["output_shape"] == "16x8x8"
    assert rows[-1]["output_shape"] == "10"
    md = run("summary", DIGITS, "--format", "markdown").stdout
    assert md.startswith("| # | layer |") and "| conv1 | conv2d |" in md
    table = [line.split(" | ") for line in md.splitlines() if line.startswith("| 1 |")]
    assert table[0][-1] == "4.0 KiB |"             # conv1's 16x8x8 float32 output per sample
    assert all(line.count("|") == md.splitlines()[0].count("|")
               for line in md.splitlines() if line.startswith("|"))


def test_input_shape_override_and_batch_size():
    data = json.loads(run("summary", DIGITS, "--json", "--input-shape", "1,16,16",
                          "--batch-size", "8").stdout)
    assert data["input_shape"] == [1, 16, 16]
    assert data["layers"][0]["output_shape"] == [16, 16, 16]
    assert data["batch_size"] == 8


def test_bad_input_shape_is_one_line():
    result = run("summary", DIGITS, "--input-shape", "1,x,8")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--input-shape" in result.stderr


def test_shape_override_that_breaks_the_model_is_located():
    result = run("summary", DIGITS, "--input-shape", "1,1,1")
    assert result.exit_code == 2
    assert result.stderr.startswith("cnncli: error: ")
    assert result.stderr.count("\n") == 1


def test_broken_config_exit_2_one_line(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
                    "    - {type: conv2d, name: c, out_channels: 4, kernel_size: -3}\n")
    result = run("summary", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"cnncli: error: {path}:4:48: layer 1 'c' (conv2d): ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_missing_file_exit_2(tmp_path):
    result = run("summary", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2 and "not found" in result.stderr


def test_warning_goes_to_stderr(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("model:\n  input_shape: [1, 7, 7]\n  layers:\n"
                    "    - {type: maxpool2d, kernel_size: 2}\n"
                    "    - {type: flatten}\n    - {type: dense, units: 2}\n")
    result = run("summary", str(path), "--json")
    assert result.exit_code == 0
    assert result.stderr.startswith(f"cnncli: warning: {path}:4:8: layer 1 (maxpool2d): ")
    assert result.stderr.count("\n") == 1
    json.loads(result.stdout)


def test_config_command_prints_resolved_yaml():
    result = run("config", DIGITS)
    assert result.exit_code == 0
    printed = yaml.safe_load(result.stdout)
    assert printed == load_config(DIGITS)
    assert printed["data"]["augment"] == {"random_crop": 0, "horizontal_flip": False}


def test_layers_command():
    result = run("layers")
    assert result.exit_code == 0
    for name in ("conv2d", "dense", "maxpool2d", "relu", "flatten", "batchnorm2d"):
        assert name in result.stdout
    data = {e["type"]: e for e in json.loads(run("layers", "--json").stdout)}
    assert "linear" in data["dense"]["aliases"]
    assert data["conv2d"]["hyperparameters"]["kernel_size"] == "<required>"
    assert data["conv2d"]["hyperparameters"]["stride"] == 1
    assert data["conv2d"]["key_aliases"] == {"filters": "out_channels"}
    assert data["relu"]["is_activation"] and data["conv2d"]["accepts_activation"]
    from cnncli.nn.registry import LAYERS
    assert set(data) == set(LAYERS)
    for entry in data.values():      # a whole first sentence or more, never cut at a line end
        assert entry["doc"] and "\n" not in entry["doc"], entry
        assert entry["doc"].endswith("."), entry


def test_layers_descriptions_are_plain_text_without_rest_backticks():
    table, listed = run("layers").stdout, run("layers", "--json").stdout
    assert "`" not in table
    data = {e["type"]: e["doc"] for e in json.loads(listed)}
    assert not any("`" in doc for doc in data.values())
    assert data["avgpool2d"].startswith("nn.AvgPool2d with PyTorch's CPU divisor rules")


def test_summary_of_a_checkpoint(tmp_path):
    from cnncli.training.checkpoint import save_checkpoint

    cfg = load_config(DIGITS)
    model = build_model(cfg)
    path = save_checkpoint(tmp_path / "last.npz", config=cfg, model_state=model.state_dict())
    from_ckpt = json.loads(run("summary", str(path), "--json").stdout)
    from_yaml = json.loads(run("summary", DIGITS, "--json").stdout)
    assert from_ckpt == from_yaml
    assert json.loads(run("summary", str(tmp_path), "--json").stdout) == from_yaml
    assert np.isfinite(from_ckpt["params_mb"])


def test_checkpoint_with_an_input_shape_its_dense_weights_cannot_take(tmp_path):
    from cnncli.training.checkpoint import save_checkpoint

    cfg = load_config(DIGITS)
    path = save_checkpoint(tmp_path / "last.npz", config=cfg,
                           model_state=build_model(cfg).state_dict())
    result = run("summary", str(path), "--input-shape", "1,16,16")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [   # fc1 was trained on 32x4x4; 16x16 gives 32x8x8
        f"cnncli: error: {path}: layer 5 'fc1' (dense): its input size changed: the "
        f"checkpoint's weights take {32 * 4 * 4} features, --input-shape 1,16,16 gives it "
        f"{32 * 8 * 8} (dense layers fix the input size; this model was trained on 1,8,8)"]
    same = run("summary", str(path), "--input-shape", "1,8,8", "--json")
    assert same.exit_code == 0
    model = build_model(cfg)
    assert json.loads(same.stdout)["total_params"] == sum(v.size for _, v, _ in
                                                         model.parameters())


def test_out_of_memory_is_one_line_not_a_traceback(monkeypatch):
    import cnncli.inspect.summary

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 954. GiB for an array")

    monkeypatch.setattr(cnncli.inspect.summary, "summarize", too_big)
    result = run("summary", DIGITS)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "cnncli: error: out of memory: Unable to allocate 954. GiB for an array (see the "
        "estimate of 'cnncli summary CONFIG --batch-size N'; use a smaller model or batch)"]


@pytest.mark.parametrize("args, says", [
    (["train", DIGITS, "--batch-size", "0"],
     "Invalid value for '--batch-size': 0 is not in the range x>=1. (see 'cnncli train --help')"),
    (["train", DIGITS, "--epoch", "3"], "No such option '--epoch'. Did you mean '--epochs'?"),
    (["train", str(CONFIGS)], f"File '{CONFIGS}' is a directory."),
    (["train", "--resume", "nowhere"], "Path 'nowhere' does not exist."),
    (["bench", DIGITS, "--steps", "0"], "'--steps': 0 is not in the range x>=1."),
    (["predict", DIGITS], "Missing argument 'INPUTS...'. (see 'cnncli predict --help')"),
    (["show", "nowhere.yaml", "--filters"], "Path 'nowhere.yaml' does not exist."),
    (["eval", "x.npz", "--split", "bogus"], "'bogus' is not one of 'test', 'val', 'train', 'all'."),
    (["train"], "give a CONFIG file (or --resume RUN_DIR to continue a run)"),
    (["nosuch"], "No such command 'nosuch'. (see 'cnncli --help')"),
    (["--bogus"], "No such option '--bogus'. (see 'cnncli --help')"),
])
def test_usage_errors_are_one_line_with_exit_2(args, says):
    """Not Click's four-line usage block: the project's one line, naming the --help to read."""
    result = CliRunner().invoke(main, args, prog_name="cnncli")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("cnncli: error: "), \
        result.stderr
    assert says in result.stderr
    assert run().exit_code == 2 and "Commands:" in run().output  # bare `cnncli`: the help


def test_ctrl_c_outside_training_exits_130_in_one_line(monkeypatch):
    import cnncli.inspect.summary

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cnncli.inspect.summary, "summarize", interrupted)
    result = run("summary", DIGITS)
    assert result.exit_code == 130
    assert result.stderr.strip() == "cnncli: interrupted"


def test_summary_numbers_rows_as_errors_number_config_entries(tmp_path):
    """`#` is the config entry (what an error's `layer 3` means); activation rows are blank."""
    text = yaml.safe_load(Path(DIGITS).read_text())
    entries = text["model"]["layers"]
    bad = [dict(e) for e in entries]
    bad[2]["kernel_size"] = 0  # entry 3: the pool
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**text, "model": {**text["model"], "layers": bad}}))
    error = run("summary", str(path))
    assert error.exit_code == 2 and f"layer 3 '{entries[2]['name']}'" in error.stderr
    rows = {}
    for line in run("summary", DIGITS).stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) > 2 and cells[1] not in ("", "input", "layer"):
            rows[cells[1]] = cells[0]
    assert rows[entries[2]["name"]] == "3"
    assert rows["relu_1"] == "" and rows[entries[0]["name"]] == "1"
    data = json.loads(run("summary", DIGITS, "--json").stdout)
    assert [row["entry"] for row in data["layers"]][:3] == [1, 1, 2]


def test_json_with_another_format_is_a_usage_error():
    result = run("summary", DIGITS, "--json", "--format", "csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert "--json and --format csv ask for two formats" in result.stderr
    assert run("summary", DIGITS, "--json", "--format", "json").exit_code == 0


def test_a_closed_stdout_is_not_a_traceback():
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cnncli", "layers"], capture_output=False,
                          stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert done.returncode == 0 and "Traceback" not in done.stderr
