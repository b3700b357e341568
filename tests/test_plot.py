"""Training curves: metrics.csv parsing, the braille terminal chart, the matplotlib PNG, the CLI."""

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli.app import main
from cnncli.errors import DataError
from cnncli.inspect import plot

HEADER = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n"


def write_run(directory, epochs=6, offset=0.0, val=True):
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for e in range(1, epochs + 1):
        val_part = f"{1.5 / e + offset:.4f},{0.7 + 0.04 * e:.4f}" if val else ","
        rows.append(f"{e},{2.0 / e + offset:.4f},{0.5 + 0.05 * e:.4f},{val_part},0.003,1.2\n")
    (directory / "metrics.csv").write_text(HEADER + "".join(rows))
    return directory


# ---------------------------------------------------------------- reading

def test_read_metrics_columns_and_missing_validation(tmp_path):
    run = plot.read_metrics(write_run(tmp_path / "a", epochs=4, val=False))
    assert run.name == "a"
    np.testing.assert_array_equal(run.columns["epoch"], [1, 2, 3, 4])
    np.testing.assert_allclose(run.columns["train_loss"], [2.0, 1.0, 2 / 3, 0.5], atol=1e-4)
    assert np.all(np.isnan(run.columns["val_loss"]))
    assert len(run.series("val_accuracy")[0]) == 0


def test_read_metrics_accepts_the_csv_path_itself(tmp_path):
    run = plot.read_metrics(write_run(tmp_path / "b") / "metrics.csv")
    assert run.name == "b" and len(run.columns["epoch"]) == 6


@pytest.mark.parametrize("text, message", [
    (None, "no metrics.csv"),
    ("", "empty file"),
    ("step,loss\n1,2\n", "no 'epoch' column"),
    (HEADER, "no epochs recorded"),
    (HEADER + "1,0.5,0.9\n", ":2: 3 fields"),
    (HEADER + "1,0.5,0.9,0.4,0.8,0.1,1\n2,abc,0.9,0.4,0.8,0.1,1\n",
     ":3: train_loss is not a number"),
    (HEADER + ",0.5,0.9,0.4,0.8,0.1,1\n", "needs an epoch"),
])
def test_malformed_metrics_are_one_line_data_errors(tmp_path, text, message):
    if text is not None:
        (tmp_path / "metrics.csv").write_text(text)
    with pytest.raises(DataError, match=message) as err:
        plot.read_metrics(tmp_path)
    assert "\n" not in str(err.value)


def test_a_metrics_csv_that_is_a_folder_is_named_as_such(tmp_path):
    (tmp_path / "metrics.csv").mkdir()
    with pytest.raises(DataError, match=r"metrics.csv: not a file \(give a run directory"):
        plot.read_metrics(tmp_path)


def test_non_utf8_metrics(tmp_path):
    (tmp_path / "metrics.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not a text metrics.csv"):
        plot.read_metrics(tmp_path)
    np.savez(tmp_path / "best.npz", w=np.zeros(3))          # a checkpoint given by mistake
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "best.npz")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "best.npz: not a text metrics.csv (give a run directory" in result.output


def test_summary_lines_count_epochs_and_keep_four_decimals(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "metrics.csv").write_text(HEADER + "1,2.0,0.5,1.5,0.93,0.003,1.0\n")
    runs = plot.read_runs([tmp_path / "one", write_run(tmp_path / "six")])
    lines = plot.summary_lines(runs)
    assert lines[0] == "one: 1 epoch, last val_accuracy 0.9300, best 0.9300, last val_loss 1.5"
    assert lines[1].startswith("six: 6 epochs, last val_accuracy 0.9400, best 0.9400")


def test_same_directory_names_get_their_paths(tmp_path):
    runs = plot.read_runs([write_run(tmp_path / "x" / "run"), write_run(tmp_path / "y" / "run")])
    assert runs[0].name != runs[1].name


# ---------------------------------------------------------------- terminal chart

def cells_with_ink(lines):
    """Chart body rows (without the y labels) as lists of characters."""
    return [line.split("┤", 1)[1] for line in lines if "┤" in line]


def test_braille_chart_draws_a_rising_line_bottom_left_to_top_right():
    xs, ys = np.arange(1, 11), np.linspace(0.0, 1.0, 10)
    body = cells_with_ink(plot.braille_chart([("up", "*", None, xs, ys)], width=20, height=5))
    assert len(body) == 5 and all(len(row) == 20 for row in body)
    assert body[-1][0] != " " and body[0][-1] != " "
    assert body[0][0] == " " and body[-1][-1] == " "
    # every column has ink, and the inked row never goes down as x grows
    rows = [max(r for r in range(5) if body[r][c] != " ") for c in range(20)]
    assert all(b <= a for a, b in zip(rows, rows[1:], strict=False))


def test_braille_chart_labels_the_value_range():
    lines = plot.braille_chart([("s", "*", None, [1, 2, 3], [0.25, 0.5, 2.0])], 30, 6)
    top, bottom = float(lines[0].split("┤")[0]), float(lines[5].split("┤")[0])
    assert top >= 2.0 and bottom <= 0.25 and top - bottom < 2.0
    assert "epoch 3" in lines[-1]


def test_terminal_plot_has_every_series_in_its_legend(tmp_path):
    runs = plot.read_runs([write_run(tmp_path / "first"), write_run(tmp_path / "second", 5, 0.3)])
    text = plot.terminal_plot(runs, width=40, height=8)
    for name in ("first", "second"):
        for part in ("train loss", "val loss", "train accuracy", "val accuracy"):
            assert f"{name} {part}" in text
    assert any(0x2800 <= ord(ch) <= 0x28FF for ch in text)  # braille dots were drawn
    assert text.count("┤") == 16 and "loss" in text.splitlines()[0]


def test_terminal_plot_markers_sit_on_the_data_points(tmp_path):
    run = plot.read_runs([write_run(tmp_path / "r", epochs=3, val=False)])
    text = plot.terminal_plot(run, width=30, height=6)
    loss_body = cells_with_ink(text.split("accuracy")[0].splitlines())
    # epoch 1 has the largest loss (top-left), epoch 3 the smallest (bottom-right)
    assert loss_body[0][0] == "*" and loss_body[-1][-1] == "*"


# ---------------------------------------------------------------- PNG

def test_plot_png_has_the_right_size_and_shows_the_runs(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    runs = plot.read_runs([write_run(tmp_path / "a"), write_run(tmp_path / "b", 6, 0.4)])
    out = plot.plot_png(runs, tmp_path / "curves.png")
    image = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert image.shape == (400, 1000, 3)
    # matplotlib's first two cycle colours (C0 blue, C1 orange) are drawn: one per run
    for colour in ((31, 119, 180), (255, 127, 14)):
        close = np.abs(image - colour).sum(axis=-1) < 30
        assert close[:, :500].sum() > 100 and close[:, 500:].sum() > 100
    assert (image.sum(axis=-1) < 600).mean() > 0.01  # not blank


# ---------------------------------------------------------------- CLI

def test_cli_plot_writes_png_in_the_run_dir(tmp_path):
    pytest.importorskip("matplotlib")
    run = write_run(tmp_path / "run")
    result = CliRunner().invoke(main, ["plot", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "curves.png").is_file()
    assert f"wrote {run / 'curves.png'}" in result.output
    assert "run: 6 epochs, last val_accuracy 0.94" in result.output


def test_cli_plot_without_matplotlib_exits_2_with_the_install_command(tmp_path, monkeypatch):
    """No picture and exit 0 would look like success: say what to install, or --terminal."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    run = write_run(tmp_path / "run")
    for extra in ([], ["--out", str(tmp_path / "c.png")]):
        result = CliRunner().invoke(main, ["plot", str(run), *extra])
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and result.stderr.count("\n") == 1
        assert result.stderr == ("cnncli: error: writing the plot as a picture needs matplotlib "
                                 f"(pip install 'cnncli[plot]', or draw it in the terminal: "
                                 f"cnncli plot {run} --terminal)\n")
    assert not (tmp_path / "c.png").exists() and not (run / "curves.png").exists()
    terminal = CliRunner().invoke(main, ["plot", str(run), "--terminal"])
    assert terminal.exit_code == 0 and "run val accuracy" in terminal.stdout


def test_cli_plot_terminal_flag_overlays_runs(tmp_path):
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", 4)
    result = CliRunner().invoke(main, ["plot", str(a), str(b), "--terminal"])
    assert result.exit_code == 0, result.output
    assert "a train loss" in result.output and "b val loss" in result.output
    assert "pip install" not in result.output


def test_cli_plot_missing_metrics_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["plot", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "no metrics.csv" in result.output
    assert isinstance(result.exception, SystemExit)


def test_terminal_chart_is_plain_text_when_not_a_tty(tmp_path):
    result = CliRunner().invoke(main, ["plot", str(write_run(tmp_path / "r")), "--terminal"])
    assert result.exit_code == 0 and "\x1b[" not in result.output


def test_long_runs_still_carry_markers_for_every_series():
    xs = np.arange(1, 201)
    series = [("a", "*", None, xs, np.linspace(1, 0, 200)), ("b", "o", None, xs, np.zeros(200))]
    text = "\n".join(plot.braille_chart(series, width=40, height=8))
    assert text.count("*") >= 5 and text.count("o") >= 5


def test_cli_plot_out_with_an_unwritable_suffix_is_a_usage_error(tmp_path):
    """Refused before any work (with or without matplotlib), exit 2 like other usage errors."""
    run = write_run(tmp_path / "run")
    result = CliRunner().invoke(main, ["plot", str(run), "--out", str(tmp_path / "c.txt")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "is not a .png, .svg, .pdf file" in result.stderr
    assert not (tmp_path / "c.txt").exists()
