"""Config cases of issue 12 (items 10 and 11): each one clear, located line, and warnings only
where real input pixels are left out."""

import os
import threading
from pathlib import Path

import pytest

from cnncli.config import check_config, check_text
from cnncli.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NET = """\
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: flatten}
    - {type: dense, units: 10}
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check_text(text, "net.yaml")
    assert "\n" not in str(info.value)
    return info.value


def test_lr_written_1e_minus_3_is_text_in_yaml_11_and_the_hint_says_how_to_write_it():
    err = error_of(NET + "train: {lr: 1e-3}\n")
    assert (err.line, err.column) == (6, 9)
    assert "got '1e-3'" in err.message and err.hint == "YAML reads 1e-3 as text; write 1.0e-3"
    assert check_text(NET + "train: {lr: 1.0e-3}\n").config["train"]["lr"] == 0.001


@pytest.mark.parametrize("written, suggested", [("1e6", "1.0e+6"), ("1.0e6", "1.0e+6"),
                                                ("2.5e3", "2.5e+3"), ("1e+6", "1.0e+6"),
                                                ("1E-3", "1.0e-3")])
def test_lr_in_e_notation_without_a_dot_or_exponent_sign_gets_a_hint_that_yaml_reads(
        written, suggested):
    err = error_of(NET + f"train: {{lr: {written}}}\n")
    assert err.hint == f"YAML reads {written} as text; write {suggested}"
    assert check_text(NET + f"train: {{lr: {suggested}}}\n").config["train"]["lr"] == float(
        written)


def test_units_written_1_colon_10_is_a_base_60_number_and_refused():
    err = error_of(NET.replace("units: 10", "units: 1:10"))
    assert (err.line, err.column) == (5, 28) and "base-60" in err.message and "(70)" in err.message
    assert check_text(NET.replace("units: 10", "units: 70")).config  # a plain number is fine


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_momentum_with_adam_is_an_error_not_ignored(optimizer):
    err = error_of(NET + f"train: {{optimizer: {optimizer}, momentum: 0.9}}\n")
    assert err.line == 6 and f"momentum applies to optimizer sgd, not {optimizer}" in err.message
    # The resolved config of an adam run holds momentum 0.0, and must load again.
    resolved = check_text(NET + f"train: {{optimizer: {optimizer}}}\n").config
    assert resolved["train"]["momentum"] == 0.0 and check_text(NET).config


def test_filters_together_with_out_channels_is_one_message_naming_both():
    err = error_of("model:\n  input_shape: [1, 8, 8]\n  layers:\n"
                   "    - {type: conv2d, filters: 4, out_channels: 4, kernel_size: 3}\n"
                   "    - {type: flatten}\n    - {type: dense, units: 2}\n")
    assert "'filters' and 'out_channels' are the same setting" in err.message
    assert str(err).count("same setting") == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_config_path_that_is_a_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "net.yaml"
    os.mkfifo(fifo)
    outcome = {}

    def check():
        try:
            check_config(fifo)
        except ConfigError as err:
            outcome["error"] = err

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading the FIFO blocked"
    assert "not a regular file" in str(outcome["error"])


def _warnings(input_shape, layers: str) -> list[str]:
    text = (f"model:\n  input_shape: {input_shape}\n  layers:\n{layers}"
            "    - {type: flatten}\n    - {type: dense, units: 3}\n")
    return check_text(text, "net.yaml").warnings


def test_resnet_stem_leaves_out_only_padding_and_does_not_warn():
    # 7x7/2 conv with padding 3 and 3x3/2 max pool with padding 1 on 224x224: the row they
    # leave out is zero padding.
    assert _warnings("[3, 224, 224]", "    - {type: conv2d, out_channels: 2, kernel_size: 7, "
                     "stride: 2, padding: 3}\n    - {type: maxpool2d, kernel_size: 3, stride: 2, "
                     "padding: 1}\n") == []


def test_alexnet_config_does_not_warn():
    assert check_config(CONFIGS / "alexnet.yaml").warnings == []


def test_dropped_rows_warning_counts_real_pixels():
    (warning,) = _warnings("[1, 9, 9]", "    - {type: maxpool2d, kernel_size: 2}\n")
    assert "drops the last 1 row and 1 column of input pixels" in warning
    (warning,) = _warnings("[1, 14, 13]", "    - {type: conv2d, out_channels: 2, "
                           "kernel_size: 5, stride: 4}\n")
    # rows: (14 - 4 - 1) mod 4 = 1; columns: (13 - 4 - 1) mod 4 = 0
    assert "drops the last 1 row of input pixels" in warning and "column" not in warning


def test_a_window_narrower_than_its_stride_does_not_warn():
    """A 1x1 stride-2 shortcut skips every other pixel by design, the last one included."""
    assert _warnings("[1, 32, 32]", "    - {type: conv2d, out_channels: 2, kernel_size: 1, "
                     "stride: 2}\n") == []
    for name in ("resnet20_cifar.yaml", "resnet18.yaml"):
        assert check_config(CONFIGS / name).warnings == []


def test_same_padding_with_a_stride_never_warns():
    """'same' pads the end so that every input pixel is read (TensorFlow's rule)."""
    for h, w in ((9, 10), (8, 8), (7, 13)):
        assert _warnings(f"[1, {h}, {w}]", "    - {type: conv2d, out_channels: 2, "
                         "kernel_size: 3, stride: 2, padding: same}\n") == []


def test_warning_with_a_merge_key_points_at_the_layers_own_line():
    text = ("model:\n  input_shape: [1, 9, 9]\n  layers:\n"
            "    - &conv {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}\n"
            "    - {<<: *conv,\n"
            "       kernel_size: 2, stride: 2, padding: 0}\n"
            "    - {type: flatten}\n    - {type: dense, units: 10}\n")
    (warning,) = check_text(text, "m.yaml").warnings
    assert warning.startswith("m.yaml:6:") and "layer 2 (conv2d)" in warning
    text_without_stride_line = text.replace("kernel_size: 2, stride: 2, padding: 0",
                                            "padding: 0").replace(
        "kernel_size: 3, padding: 1}", "kernel_size: 2, stride: 2, padding: 1}")
    warnings = check_text(text_without_stride_line, "m.yaml").warnings
    assert all(not w.startswith("m.yaml:4:") or "layer 1" in w for w in warnings)
