"""`train --tensorboard`: event files in the run directory, read back record by record."""

import csv
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli import main

DIGITS = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


def read_events(folder: Path) -> list:
    """Every Event in the folder's event files (TFRecord: length, crc, payload, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


def scalars(events) -> dict:
    out = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def tags_of(events, kind: str) -> set:
    return {v.tag for e in events for v in e.summary.value if v.HasField(kind)}


def test_scalars_histograms_and_filters_match_the_run(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(DIGITS), "--epochs", "2", "--tensorboard",
                                       "--out", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    events = read_events(out / "tensorboard")
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = scalars(events)
    for column, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"),
                        ("train_accuracy", "accuracy/train"),
                        ("val_accuracy", "accuracy/val"), ("lr", "lr")):
        assert [s for s, _ in got[tag]] == [1, 2]
        np.testing.assert_allclose([v for _, v in got[tag]],
                                   [float(r[column]) for r in rows], rtol=1e-6)
    names = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
             "fc1.bias", "out.weight", "out.bias"]
    assert tags_of(events, "histo") == {f"{kind}/{n}" for kind in ("weights", "gradients")
                                        for n in names}
    assert tags_of(events, "image") == {"filters/conv1"}
    assert "tensorboard: true" in (out / "config.yaml").read_text()


def test_a_resumed_run_appends_and_an_overwrite_starts_over(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, ["train", str(DIGITS), "--epochs", "1", "--tensorboard",
                                "--out", str(out), "-q"]).exit_code == 0
    # the stored config keeps tensorboard on: resuming writes epoch 2 too
    assert runner.invoke(main, ["train", "--resume", str(out), "--epochs", "2",
                                "-q"]).exit_code == 0
    assert [s for s, _ in scalars(read_events(out / "tensorboard"))["lr"]] == [1, 2]
    assert runner.invoke(main, ["train", str(DIGITS), "--epochs", "1", "--tensorboard",
                                "--out", str(out), "--overwrite", "-q"]).exit_code == 0
    assert [s for s, _ in scalars(read_events(out / "tensorboard"))["lr"]] == [1]


def test_an_overwrite_without_tensorboard_deletes_the_replaced_runs_events(tmp_path):
    # TensorBoard would show the old run's curves under the new run's folder name.
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, ["train", str(DIGITS), "--epochs", "1", "--tensorboard",
                                "--out", str(out), "-q"]).exit_code == 0
    (out / "tensorboard" / "notes.txt").write_text("not ours")
    assert runner.invoke(main, ["train", str(DIGITS), "--epochs", "1", "--out", str(out),
                                "--overwrite", "-q"]).exit_code == 0
    assert read_events(out / "tensorboard") == []
    assert (out / "tensorboard" / "notes.txt").read_text() == "not ours"


def test_without_the_flag_nothing_is_written(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(DIGITS), "--epochs", "1", "--out",
                                       str(out), "-q"])
    assert result.exit_code == 0
    assert not (out / "tensorboard").exists()


def test_a_missing_extra_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)   # import fails
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(DIGITS), "--epochs", "1", "--tensorboard",
                                       "--out", str(out)])
    assert result.exit_code == 2
    assert result.stderr == ("cnncli: error: train.tensorboard needs the tensorboardX package "
                             "(pip install 'cnncli[tensorboard]')\n")
    assert not out.exists()       # refused before any work
