"""A first-time user's data: class-name counts, hidden folders, control characters in names
and CSV cells a spreadsheet would run as formulas."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_train import _blobs, _config

from cnncli.cli import main
from cnncli.config import DataConfig
from cnncli.data import load_dataset
from cnncli.errors import DataError, printable
from cnncli.inspect.render import csv_text
from cnncli.training.trainer import train

CFG = {"dataset": None, "layout": None, "val_split": 0.0, "normalize": "none"}


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _named_blobs(path, names):
    _blobs(path)
    with np.load(path) as d:
        arrays = dict(d)
    np.savez(path, **arrays, class_names=np.array(names))
    return path


def test_class_names_count_differing_from_the_labels_names_both_counts(tmp_path, monkeypatch):
    data = _named_blobs(tmp_path / "two.npz", ["a", "b"])  # labels 0..2
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(**{**CFG, "path": str(data)}), (1, 4, 4), 3, seed=0)
    assert str(err.value) == (f"{data}: class_names has 2 names but the labels have 3 classes "
                              f"(0..2) (give one name per class, in label order)")
    assert err.value.key == "path"
    cfg = _config(data)
    cfg["data"]["path"] = "two.npz"
    (tmp_path / "net.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    result = _invoke("train", "net.yaml", "--out", "run")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("cnncli: error: net.yaml:")  # at data.path's line
    assert result.stderr.endswith(": two.npz: class_names has 2 names but the labels have 3 "
                                  "classes (0..2) (give one name per class, in label order)\n")


def test_class_names_count_differing_from_the_model_names_both_counts(tmp_path):
    data = _named_blobs(tmp_path / "four.npz", ["a", "b", "c", "d"])
    with pytest.raises(DataError, match="the data has 4 classes but the model outputs 3 scores"):
        load_dataset(DataConfig(**{**CFG, "path": str(data)}), (1, 4, 4), 3, seed=0)


def _png_folder(root, classes, hidden=()):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    for name in (*classes, *hidden):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(
                root / name / f"{i}.png")


def test_hidden_folders_are_skipped_and_the_data_summary_line_says_so(tmp_path):
    _png_folder(tmp_path / "imgs", ["cat", "dog", "eel"], hidden=[".ipynb_checkpoints"])
    ds = load_dataset(DataConfig(**{**CFG, "path": str(tmp_path / "imgs")}), (1, 4, 4), 3, seed=0)
    assert ds.class_names == ["cat", "dog", "eel"] and ds.skipped == [".ipynb_checkpoints"]
    result = _invoke("train", _write_config(tmp_path, tmp_path / "imgs"), "--out",
                     tmp_path / "run")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.endswith("; skipped 1 hidden folder: .ipynb_checkpoints"), first
    _png_folder(tmp_path / "split" / "train", ["cat", "dog"], hidden=[".git"])
    _png_folder(tmp_path / "split" / "test", ["cat"], hidden=[".git", ".cache"])
    ds = load_dataset(DataConfig(**{**CFG, "path": str(tmp_path / "split")}), (1, 4, 4), 2, seed=0)
    assert ds.skipped == ["train/.git", "test/.cache", "test/.git"]


def _write_config(tmp_path, data_path, units=3):
    cfg = _config(data_path, epochs=1)
    cfg["model"]["layers"][-1]["units"] = units
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_printable_escapes_every_control_character():
    assert printable("a\x1b[31mb\nc\td\re\x00f\x7fg\x85h\u2028i ü") == \
        "a\\x1b[31mb\\nc\\td\\re\\x00f\\x7fg\\x85h\\u2028i ü"
    for code in [*range(32), *range(127, 160)]:
        assert printable(chr(code)).isprintable()


BAD_NAMES = ["red\x1b[31m", "two\nlines", "=HYPERLINK(1)"]


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    data = _named_blobs(tmp / "blobs.npz", BAD_NAMES)
    train(_config(data), out_dir=tmp / "run", epochs=1)
    with np.load(data) as d:
        np.save(tmp / "bell\x07.npy", d["x_test"][:3])
    return tmp


def test_control_characters_in_class_and_file_names_are_escaped_in_printed_lines(named_run):
    table = _invoke("eval", named_run / "run" / "best.npz")
    predicted = _invoke("predict", named_run / "run" / "best.npz", named_run / "bell\x07.npy")
    for result in (table, predicted):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "red\\x1b[31m" in table.stdout and "two\\nlines" in table.stdout
    assert "bell\\x07.npy[0]" in predicted.stdout
    missing = _invoke("eval", named_run / "no\x1b[2Jsuch.npz")  # an error line too
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    assert "\x1b" not in missing.stderr and "no\\x1b[2Jsuch.npz" in missing.stderr


def test_csv_cells_starting_like_a_formula_get_a_quote(named_run, tmp_path):
    assert [csv_text(t) for t in ("=1+2", "+1", "-x", "@SUM(A1)", "\tq", "a=b", "0.5")] == \
        ["'=1+2", "'+1", "'-x", "'@SUM(A1)", "'\tq", "a=b", "0.5"]
    with np.load(named_run / "blobs.npz") as d:
        np.save(tmp_path / "=cmd.npy", d["x_test"][:3])
    out = tmp_path / "preds.csv"
    result = _invoke("predict", named_run / "run" / "best.npz", tmp_path / "=cmd.npy", "--out",
                     out)
    assert result.exit_code == 0, result.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == ["'=cmd.npy[0]", "'=cmd.npy[1]", "'=cmd.npy[2]"]
    cells = {r[k] for r in rows for k in ("predicted", "class_2", "class_3")}
    assert "'=HYPERLINK(1)" in cells and "=HYPERLINK(1)" not in cells


def test_summary_csv_never_holds_a_formula_like_layer_name(tmp_path):
    """Layer names cannot start with = + - @ (the name rule), and the CSV writer would
    neutralise one anyway."""
    from cnncli.inspect.render import csv_text

    assert [csv_text(s) for s in ("@risky", "=1+1", "-2", "conv1")] == \
        ["'@risky", "'=1+1", "'-2", "conv1"]
    path = tmp_path / "net.yaml"
    path.write_text("model:\n  input_shape: [1, 4, 4]\n  layers:\n"
                    "    - {type: flatten, name: '@risky'}\n    - {type: dense, units: 2}\n")
    result = _invoke("summary", path, "--format", "csv")
    assert result.exit_code == 2 and "name must be" in result.stderr
