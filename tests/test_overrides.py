"""``--set KEY.PATH=VALUE``: config values overridden by dotted path, checked like the file."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.config import check_config, check_data
from cnncli.config.overrides import apply_overrides, parse_set
from cnncli.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIGITS = CONFIGS / "digits.yaml"
DOCS_TRAIN = CONFIGS.parent / "docs" / "train.md"


def test_parse_set_reads_yaml_values_and_indices():
    assert parse_set("train.lr=0.01") == (("train", "lr"), 0.01)
    assert parse_set("data.augment.horizontal_flip=false") == \
        (("data", "augment", "horizontal_flip"), False)
    assert parse_set("model.layers.0.out_channels=32") == (("model", "layers", 0,
                                                            "out_channels"), 32)
    assert parse_set("model.input_shape=[3, 32, 32]") == (("model", "input_shape"), [3, 32, 32])
    assert parse_set("data.cache_dir=") == (("data", "cache_dir"), None)


def test_overrides_change_the_resolved_config():
    run = check_config(DIGITS, sets=["model.layers.0.out_channels=32", "train.lr=0.01",
                                     "data.augment.horizontal_flip=true",
                                     "train.lr_schedule.type=step",
                                     "train.lr_schedule.step_size=3", "seed=7"]).run
    assert run.model.layers[0].params["out_channels"] == 32
    assert run.train.lr == 0.01
    assert run.data.augment.horizontal_flip is True
    assert (run.train.lr_schedule.type, run.train.lr_schedule.step_size) == ("step", 3)
    assert run.seed == 7
    # everything else is the file's
    plain = check_config(DIGITS).run
    assert run.train.epochs == plain.train.epochs
    assert run.model.layers[1:] == plain.model.layers[1:]


def test_later_sets_win_and_sections_left_out_are_created():
    data = {"model": {"input_shape": [4], "layers": [{"type": "dense", "units": 2}]}}
    run = check_data(data, sets=["train.epochs=3", "train.epochs=5",
                                 "train.early_stopping.patience=2"]).run
    assert run.train.epochs == 5
    assert run.train.early_stopping.patience == 2


def test_apply_overrides_leaves_the_input_alone():
    data = {"train": {"lr": 0.1}}
    out = apply_overrides(data, {}, ["train.lr=0.5"])
    assert data == {"train": {"lr": 0.1}} and out == {"train": {"lr": 0.5}}


@pytest.mark.parametrize("text, message", [
    ("train.lrr=1", "--set train.lrr: no such key; did you mean train.lr?"),
    ("trian.lr=1", "--set trian.lr: no such key; did you mean train?"),
    ("model.layers.0.out_chanels=3",
     "--set model.layers.0.out_chanels: no such key; did you mean "
     "model.layers.0.out_channels?"),
    ("model.layers.9.units=3", "--set model.layers.9.units: no such item (index 9; "
                               "model.layers has 6 items) (indices 0 to 5)"),
    ("seed.value=3", "--set seed.value: seed holds a value, not keys (set seed=VALUE)"),
    ("train.lr", "--set train.lr: 'train.lr' is not KEY.PATH=VALUE (e.g. --set train.lr=0.01)"),
    ("train.lr=-1", "--set train.lr=-1: train.lr must be a finite number > 0 or null, got -1"),
    ("data.augment.horizontal_flip=maybe",
     "--set data.augment.horizontal_flip=maybe: data.augment.horizontal_flip must be true or "
     "false, got 'maybe'"),
    ("model.layers.0.out_channels=0",
     "--set model.layers.0.out_channels=0: layer 1 'conv1' (conv2d): out_channels must be a "
     "positive int, got 0"),
])
def test_a_wrong_override_names_the_set(text, message):
    with pytest.raises(ConfigError) as err:
        check_config(DIGITS, sets=[text])
    assert str(err.value) == message


def test_errors_elsewhere_keep_their_file_position(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(DIGITS.read_text().replace("val_split: 0.1", "val_split: 2"))
    with pytest.raises(ConfigError, match=r"c\.yaml:16:\d+: data\.val_split"):
        check_config(config, sets=["train.lr=0.01"])
    assert check_config(config, sets=["data.val_split=0.2"]).run.data.val_split == 0.2


def test_train_records_the_overrides_in_config_yaml(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(DIGITS), "--out", str(out), "-q",
                                       "--set", "train.epochs=1", "--set", "train.lr=0.01",
                                       "--set", "model.layers.0.out_channels=4"])
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["train"]["lr"] == 0.01
    assert saved["model"]["layers"][0]["out_channels"] == 4
    # --resume with no CONFIG: --set changes the stored config
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "-q",
                                       "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 2
    # eval: data keys only; a larger val_split gives a larger validation split
    result = CliRunner().invoke(main, ["eval", str(out), "--split", "val", "--json",
                                       "--set", "data.val_split=0.3"])
    assert result.exit_code == 0, result.stderr
    plain = CliRunner().invoke(main, ["eval", str(out), "--split", "val", "--json"])
    import json

    larger, usual = json.loads(result.stdout), json.loads(plain.stdout)
    assert larger["num_samples"] == pytest.approx(3 * usual["num_samples"], rel=0.05)
    result = CliRunner().invoke(main, ["eval", str(out), "--set", "train.lr=1"])
    assert result.exit_code == 2
    assert "only data.* keys can change" in result.stderr


def test_cli_errors_are_one_line_exit_2():
    runner = CliRunner()
    result = runner.invoke(main, ["summary", str(DIGITS), "--set", "train.lrr=3"])
    assert result.exit_code == 2
    assert result.stderr == "cnncli: error: --set train.lrr: no such key; did you mean " \
                            "train.lr?\n"
    result = runner.invoke(main, ["train", str(DIGITS), "--lr", "0.1", "--set", "train.lr=0.2"])
    assert result.exit_code == 2
    assert result.stderr == "cnncli: error: --lr 0.1 and --set train.lr=... both set train.lr " \
                            "(give one of them)\n"


def test_summary_shows_the_override():
    result = CliRunner().invoke(main, ["summary", str(DIGITS), "--json",
                                       "--set", "model.layers.0.out_channels=4"])
    assert result.exit_code == 0, result.stderr
    import json

    first = json.loads(result.stdout)["layers"][0]
    assert first["output_shape"] == [4, 8, 8] and first["params"] == 4 * 9 + 4


def test_the_documented_messages_are_the_real_ones():
    readme = (CONFIGS.parent / "README.md").read_text()
    text = " ".join((DOCS_TRAIN.read_text() + readme).split())
    for sets in (["train.lrr=1"], ["train.lr=-1"]):
        with pytest.raises(ConfigError) as err:
            check_config(DIGITS, sets=sets)
        assert f"cnncli: error: {err.value}" in text
    with pytest.raises(ConfigError) as err:
        check_config(DIGITS, sets=["train.lrr=0.1"])
    assert f"cnncli: error: {err.value}" in readme


def test_a_base_60_value_in_a_set_is_refused_as_in_a_file():
    with pytest.raises(ConfigError) as err:
        check_config(DIGITS, sets=["model.layers.0.out_channels=1:10"])
    assert str(err.value).startswith("--set model.layers.0.out_channels=1:10: '1:10' is read by "
                                     "YAML as a base-60 number (70)")
    assert err.value.line is None and err.value.hint.startswith("quote it")
    assert parse_set("data.cache_dir='1:10'") == (("data", "cache_dir"), "1:10")  # quoted: text
