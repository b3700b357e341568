"""Config loading: resolved defaults, round trips, and located one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from cnncli import build_model
from cnncli.config import (
    check_config,
    check_data,
    dump_config,
    load_config,
    load_config_text,
)
from cnncli.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

MINIMAL = """\
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: flatten}
    - {type: dense, units: 10}
"""


def write(tmp_path, text, name="net.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def error_of(path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_config(path)
    return info.value


# ---------------------------------------------------------------- shipped configs

@pytest.mark.parametrize("name", ["digits", "lenet5", "cifar_small"])
def test_shipped_configs_build_and_run(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = build_model(cfg)
    x = np.random.default_rng(0).standard_normal((2, *cfg["model"]["input_shape"]))
    logits = model.forward(x.astype(np.float32))
    assert logits.shape == (2, 10)
    assert cfg["name"] == name


def test_alexnet_config_checks_without_allocating():
    checked = check_config(CONFIGS / "alexnet.yaml")
    # torchvision.models.alexnet() has 61,100,840 parameters; the config copies its layout.
    assert sum(layer.num_params(shape) for layer, shape
               in zip(checked.layers, checked.shapes, strict=False)) == 61_100_840
    assert all(not layer.params for layer in checked.layers)   # nothing was built
    assert checked.shapes[-1] == (1000,)


def test_every_file_in_configs_is_valid():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert {"digits.yaml", "lenet5.yaml", "cifar_small.yaml", "alexnet.yaml",
            "resnet20_cifar.yaml", "resnet18.yaml", "dense_digits.yaml"} <= set(names)
    for name in names:
        check_config(CONFIGS / name)


# ---------------------------------------------------------------- resolution

DOCS_CONFIG = CONFIGS.parent / "docs" / "config.md"


def _documented_defaults(section_title: str) -> dict:
    """``key -> default`` of one table of docs/config.md, where the default is one literal."""
    text = DOCS_CONFIG.read_text()
    table = text[text.index(section_title):].split("\n\n")[1]
    out = {}
    for row in table.splitlines()[3:]:
        key, _, default = (cell.strip() for cell in row.strip("|").split(" | ")[:3])
        if default.count("`") == 2 and default.startswith("`") and default.endswith("`"):
            out[key.strip("`")] = yaml.safe_load(default.strip("`"))
    return out


def test_docs_tables_are_the_schema():
    """docs/config.md's key tables are generated from the dataclass fields, so they cannot
    drift from the defaults and checks the code applies."""
    from cnncli.config.reference import config_tables

    text = DOCS_CONFIG.read_text()
    for section, table in config_tables().items():
        assert table in text, f"docs/config.md's {section} table differs from the schema"


def test_minimal_config_gets_the_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg["name"] == "net" and cfg["seed"] == 0
    for title, section in (("## `data:`", "data"), ("## `train:`", "train")):
        documented = _documented_defaults(title)
        assert len(documented) >= 6
        for dotted, default in documented.items():
            value = cfg[section]
            for part in dotted.split("."):
                value = value[part]
            if dotted == "lr_schedule":  # a name, resolved to a mapping of that type
                value = value["type"]
            assert value == default, dotted
    train = cfg["train"]
    assert train["lr"] == 0.01 and train["weight_decay"] == 0.0
    assert train["lr_schedule"] == {"type": "constant", "warmup_epochs": 0}


@pytest.mark.parametrize("optimizer, lr, wd", [("sgd", 0.01, 0.0), ("adam", 0.001, 0.0),
                                               ("adamw", 0.001, 0.01)])
def test_optimizer_dependent_defaults(optimizer, lr, wd):
    cfg = load_config_text(MINIMAL + f"train: {{optimizer: {optimizer}}}\n")
    assert cfg["train"]["lr"] == lr and cfg["train"]["weight_decay"] == wd


def test_schedule_and_early_stopping_defaults():
    cfg = load_config_text(MINIMAL + "train:\n  epochs: 20\n  lr_schedule: {type: step, "
                           "step_size: 5}\n  early_stopping: {patience: 3}\n")
    assert cfg["train"]["lr_schedule"] == {"type": "step", "step_size": 5, "gamma": 0.1,
                                           "warmup_epochs": 0}
    assert cfg["train"]["early_stopping"] == {"patience": 3, "metric": "val_accuracy",
                                              "min_delta": 0.0}


def test_path_without_dataset_clears_the_default_dataset():
    cfg = load_config_text(MINIMAL + "data: {path: my.npz}\n")
    assert cfg["data"]["dataset"] is None and cfg["data"]["path"] == "my.npz"


@pytest.mark.parametrize("name", ["digits", "lenet5", "cifar_small", "alexnet"])
def test_dump_round_trip_and_resolution_is_idempotent(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    text = dump_config(cfg)
    assert load_config_text(text) == cfg
    assert yaml.safe_load(text) == cfg
    assert check_data(cfg).config == cfg


def test_layer_entries_are_resolved_with_every_default():
    from cnncli.nn.layers.base import hyperparameters
    from cnncli.nn.registry import LAYERS

    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 2, kernel_size: [3, 1], activation: relu, name: c}\n"
            "    - {type: maxpool, pool_size: 2}\n"
            "    - {type: linear, out_features: 3}\n")
    conv, pool, dense = load_config_text(text)["model"]["layers"]
    assert [conv["type"], pool["type"], dense["type"]] == ["conv2d", "maxpool2d", "dense"]
    for entry in (conv, pool, dense):
        assert set(hyperparameters(LAYERS[entry["type"]])) <= set(entry)
    assert conv["out_channels"] == 2 and "filters" not in conv
    assert conv["kernel_size"] == [3, 1] and conv["activation"] == "relu" and conv["name"] == "c"
    assert conv["stride"] == 1 and conv["padding"] == 0 and conv["groups"] == 1
    assert pool["kernel_size"] == 2 and pool["stride"] is None and "name" not in pool
    assert dense["units"] == 3 and dense["bias"] is True


def test_build_model_accepts_a_path():
    model = build_model(CONFIGS / "digits.yaml")
    assert model.output_shape == (10,)


# ---------------------------------------------------------------- located errors

BROKEN = [
    # (yaml text, line, col, fragments of the message)
    ("modle:\n  input_shape: [1, 8, 8]\n", 1, 1, ["unknown key 'modle'", "did you mean 'model'"]),
    (MINIMAL + "train:\n  optimiser: adam\n", 7, 3,
     ["unknown key 'optimiser' in train", "did you mean 'optimizer'"]),
    (MINIMAL + "train:\n  epochs: null\n", 7, 3, ["train.epochs must be an int", "got null"]),
    (MINIMAL + "train:\n  epochs: 0\n", 7, 3,
     ["train.epochs must be an int in [1, 1000000]", "got 0"]),
    (MINIMAL + "data:\n  val_split: lots\n", 7, 3,
     ["data.val_split must be a finite number in [0, 1)", "'lots'"]),
    (MINIMAL + "data:\n  normalize: standardise\n", 7, 3, ["did you mean 'standardize'"]),
    (MINIMAL + "train: {lr: .inf}\n", 6, 9, ["train.lr must be a finite number > 0"]),
    (MINIMAL + "train: {optimizer: sgd, nesterov: true}\n", 6, 25, ["nesterov needs"]),
    (MINIMAL + "seed: -1\n", 6, 1, ["seed must be an int in [0, 4294967295]"]),
    (MINIMAL + "name: ../evil\n", 6, 1, ["name must be a plain run name"]),
    (MINIMAL + "model: {}\n", 6, 1, ["duplicate key 'model'", "line 1"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers: [}\n", 3, 12, ["YAML syntax error"]),
    ("model:\n  input_shape: [[1], 8, 8]\n  layers: [{type: flatten}]\n", 2, 17,
     ["model.input_shape[0] must be an int >= 1", "[1]"]),
    ("model:\n  input_shape: [1, 8]\n  layers: [{type: flatten}]\n", 2, 3,
     ["model.input_shape must be [C, H, W]"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers: []\n", 3, 3, ["model.layers is empty"]),
    ("model:\n  input_shape: [1, 8, 8]\n", 1, 1, ["model needs the key 'layers'"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flatten}\n"
     "    - {type: dense, units: 99999999999999999999}\n", 5, 21,
     ["layer 2 (dense): units is too large"]),
    ("yes: 1\nmodel: {}\n", 1, 1, ["key 'yes' is not a name", "quote the key"]),
    ("a: 1\n---\nb: 2\n", 2, 1, ["YAML syntax error", "single document"]),
    ("model: !!python/object:os.system {}\n", 1, 8, ["YAML tag", "is not allowed"]),
    ("model: !!python/name:os.system x\n", 1, 8, ["YAML syntax error"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flaten}\n", 4, 8,
     ["layer 1 (flaten)", "unknown layer type 'flaten'", "did you mean 'flatten'"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flatten}\n"
     "    - {type: dense, unit: 10}\n", 5, 21,
     ["layer 2 (dense)", "unknown key 'unit' for dense", "did you mean 'units'"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flatten}\n"
     "    - {type: dense, units: 10, activation: relux}\n", 5, 32,
     ["layer 2 (dense)", "activation must be one of", "relux", "did you mean 'relu'"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: dense, units: 3, name: a}\n"
     "    - {type: dense, units: 3, name: a}\n", 5, 31, ["two layers are named 'a'"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - 7\n", 4, 7,
     ["layer 1: a layer must be a mapping"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - flatten\n", 4, 7,
     ["layer 1: a layer must be a mapping", "write - {type: flatten}"]),
    # Found by the fuzz test: no "write - {type: ...}" suggestion that breaks the line.
    ('model:\n  input_shape: [1, 8, 8]\n  layers:\n    - "\\r"\n', 4, 7,
     ["layer 1: a layer must be a mapping", "got '\\r'"]),
    # Values are quoted as the YAML spells them: null and true, not None and True.
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: dense, units: null}\n",
     4, 21, ["layer 1 (dense): units must be a positive int, got null"]),
    ("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: dropout, p: true}\n",
     4, 23, ["got true"]),
    (MINIMAL + "train: {epochs: yes}\n", 6, 9, ["train.epochs must be an int", "got true"]),
]


@pytest.mark.parametrize("text, line, col, fragments", BROKEN)
def test_broken_config_is_located(tmp_path, text, line, col, fragments):
    path = write(tmp_path, text)
    err = error_of(path)
    message = str(err)
    assert message.startswith(f"{path}:{line}:{col}: "), message
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


def test_conv_error_names_layer_key_and_line(tmp_path):
    text = """\
name: net
model:
  input_shape: [1, 28, 28]
  layers:
    - type: conv2d
      name: conv1
      out_channels: 8
      kernel_size: 3
    - type: relu
    - type: conv2d
      name: conv2
      out_channels: 8
      kernel_size: -3
"""
    path = write(tmp_path, text)
    message = str(error_of(path))
    assert message.startswith(f"{path}:13:7: layer 3 'conv2' (conv2d): kernel_size"), message
    assert "-3" in message


def test_key_alias_error_points_at_the_alias(tmp_path):
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: conv2d, filters: 0, kernel_size: 3}\n")
    path = write(tmp_path, text)
    message = str(error_of(path))
    assert message.startswith(f"{path}:4:22: layer 1 (conv2d): "), message
    assert "0" in message


def test_shape_error_points_at_the_layer(tmp_path):
    text = ("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
            "    - {type: flatten}\n"
            "    - {type: conv2d, name: late, out_channels: 4, kernel_size: 3}\n")
    path = write(tmp_path, text)
    message = str(error_of(path))
    assert message.startswith(f"{path}:5:8: layer 2 'late' (conv2d): "), message


def test_kernel_larger_than_input_is_a_located_error(tmp_path):
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: conv2d, out_channels: 4, kernel_size: 5}\n")
    path = write(tmp_path, text)
    assert str(error_of(path)).startswith(f"{path}:4:39: layer 1 (conv2d): kernel 5")


def test_shape_error_points_at_the_key_it_names(tmp_path):
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: conv2d, out_channels: 2, kernel_size: 3, in_channels: 3}\n")
    path = write(tmp_path, text)
    assert str(error_of(path)).startswith(f"{path}:4:55: layer 1 (conv2d): in_channels is 3")
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: maxpool, pool_size: 5}\n")    # written under its alias
    path = write(tmp_path, text)
    assert str(error_of(path)).startswith(f"{path}:4:23: layer 1 (maxpool): the 5x5")
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: flatten}\n    - {type: conv2d, out_channels: 2, kernel_size: 3}\n")
    path = write(tmp_path, text)                      # no key to blame: the layer's type:
    assert str(error_of(path)).startswith(f"{path}:5:8: layer 2 (conv2d): conv2d needs")


def test_choice_errors_suggest_the_closest_option(tmp_path):
    text = ("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
            "    - {type: gelu, approximate: tanhh}\n")
    message = str(error_of(write(tmp_path, text)))
    assert ":4:20: layer 1 (gelu): approximate must be one of none, tanh; got 'tanhh' " \
        "(did you mean 'tanh'?)" in message


def test_non_utf8_bytes(tmp_path):
    path = write(tmp_path, b"model:\n  input_shape: [1, 8, 8]\n  # caf\xe9\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:3:8: file is not UTF-8"), message


def test_control_character_is_located(tmp_path):
    path = write(tmp_path, "model:\n  input_shape: [1, 8, \x07]\n")
    assert str(error_of(path)).startswith(f"{path}:2:")


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path, text):
    assert "config file is empty" in str(error_of(write(tmp_path, text)))


def test_missing_file_and_directory(tmp_path):
    assert "config file not found" in str(error_of(tmp_path / "nope.yaml"))
    assert "is a directory" in str(error_of(tmp_path))


def test_huge_file_is_refused_before_parsing(tmp_path, monkeypatch):
    import cnncli.config.yaml_file as config

    monkeypatch.setattr(config, "MAX_FILE_BYTES", 100)
    path = write(tmp_path, MINIMAL + "#" * 200 + "\n")
    assert "a config should be a small YAML file" in str(error_of(path))


def test_tabs_are_a_located_yaml_error(tmp_path):
    path = write(tmp_path, "model:\n\tinput_shape: [1, 8, 8]\n")
    message = str(error_of(path))
    assert message.startswith(f"{path}:2:1: YAML syntax error"), message


def test_top_level_must_be_a_mapping(tmp_path):
    message = str(error_of(write(tmp_path, "- 1\n- 2\n")))
    assert "the config must be a mapping" in message and ":1:1: " in message


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    message = str(error_of(write(tmp_path, "\n".join(lines) + "\n")))
    assert "too large" in message


def test_deep_nesting_is_refused(tmp_path):
    message = str(error_of(write(tmp_path, "model: " + "[" * 200 + "]" * 200 + "\n")))
    assert "nested too deeply" in message


# ---------------------------------------------------------------- warnings

def test_stride_that_drops_rows_warns_once_per_layer(tmp_path):
    text = ("model:\n  input_shape: [1, 9, 8]\n  layers:\n"
            "    - {type: conv2d, out_channels: 2, kernel_size: 2, stride: 2, "
            "activation: relu}\n"
            "    - {type: maxpool2d, kernel_size: 2}\n"
            "    - {type: flatten}\n    - {type: dense, units: 3}\n")
    path = write(tmp_path, text)
    warnings = check_config(path).warnings
    # 9 rows, k=2, s=2: (9 - 1 - 1) % 2 = 1 row unused; 8 columns divide evenly.
    # The pool then sees 4x4, which divides evenly.
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}:4:8: layer 1 (conv2d): ")
    assert "1 row" in warnings[0] and "column" not in warnings[0]


def test_no_warning_when_everything_divides():
    assert check_config(CONFIGS / "digits.yaml").warnings == []


# ---------------------------------------------------------------- YAML merge keys

MERGE = """\
model:
  input_shape: [1, 8, 8]
  layers:
    - &conv {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, activation: relu}
    - {<<: *conv, out_channels: 8}
"""


def test_merge_keys_share_layer_settings():
    layers = load_config_text(MERGE)["model"]["layers"]
    assert layers[1] == {**layers[0], "out_channels": 8}


def test_error_in_a_merged_layer_points_at_its_own_key(tmp_path):
    path = write(tmp_path, MERGE + "    - {<<: *conv, kernel_size: -1}\n")
    assert str(error_of(path)).startswith(f"{path}:6:19: layer 3 (conv2d): kernel_size")


def test_merge_of_a_non_mapping_is_an_error(tmp_path):
    path = write(tmp_path, "a: &x [1]\nmodel: {<<: *x}\n")
    assert "'<<' must merge a mapping" in str(error_of(path))
