"""`cnncli eval --plot/--errors`: the confusion matrix and the most confident errors as PNGs."""

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.inspect import pictures
from cnncli.inspect.eval_pictures import (
    confusion_picture,
    errors_picture,
    most_confident_errors,
)

PIL = pytest.importorskip("PIL.Image")
DIGITS = Path(__file__).resolve().parent.parent / "configs" / "digits.yaml"


def decode(path) -> np.ndarray:
    return np.asarray(PIL.open(io.BytesIO(Path(path).read_bytes())).convert("RGB"))


def test_confusion_cells_are_coloured_by_row_share():
    matrix = [[8, 2], [0, 5]]
    cell = 30
    image = confusion_picture(matrix, ["cat", "dog"], cell=cell)
    # find the grid: the colour of cell (1, 1) (share 1) is the top of the map, cell (1, 0)
    # (share 0) its bottom, cell (0, 1) 0.2 of the way
    top_color = tuple(int(v) for v in pictures.sequential(np.array([1.0]), 0.0, 1.0)[0])
    low_color = tuple(int(v) for v in pictures.sequential(np.array([0.0]), 0.0, 1.0)[0])
    mid_color = tuple(int(v) for v in pictures.sequential(np.array([0.2]), 0.0, 1.0)[0])
    flat = image.reshape(-1, 3)
    counts = {c: int((flat == c).all(axis=1).sum()) for c in (top_color, low_color, mid_color)}
    # a cell is cell x cell pixels less its grid line and its digits
    assert all(cell * cell // 2 < n <= cell * cell for n in counts.values()), counts


def test_confusion_picture_is_as_big_as_its_classes():
    small = confusion_picture(np.eye(3, dtype=int), ["a", "b", "c"])
    large = confusion_picture(np.eye(10, dtype=int), [str(i) for i in range(10)])
    assert large.shape[0] - small.shape[0] == 7 * 30
    assert large.dtype == np.uint8 and large.shape[2] == 3


def test_errors_are_the_wrong_ones_most_confident_first():
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]]))
    labels = np.array([0, 0, 0, 1])
    picks, probs = most_confident_errors(logits, labels)
    assert list(picks) == [1, 2]            # sample 0 and 3 are right; 0.8 before 0.6
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    x = np.random.default_rng(0).random((4, 1, 8, 8))
    image, shown = errors_picture(x, labels, logits, ["zero", "one"])
    assert shown == 2 and image.dtype == np.uint8
    none, shown = errors_picture(x[:1], labels[:1], logits[:1], ["zero", "one"])
    assert shown == 0


def test_cli_writes_both_pngs(tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(main, ["train", str(DIGITS), "--epochs", "1", "--out", str(run),
                                "-q"]).exit_code == 0
    result = runner.invoke(main, ["eval", str(run / "best.npz"), "--json",
                                  "--plot", str(tmp_path / "cm.png"),
                                  "--errors", str(tmp_path / "errors.png")])
    assert result.exit_code == 0, result.stderr
    import json

    report = json.loads(result.stdout)       # the JSON stays clean; the lines go to stderr
    wrong = report["num_samples"] - round(report["accuracy"] * report["num_samples"])
    assert f"wrote {tmp_path / 'cm.png'} (confusion matrix)" in result.stderr
    assert f"({min(wrong, 36)} most confidently misclassified images)" in result.stderr
    n = len(report["confusion_matrix"])
    cm = decode(tmp_path / "cm.png")
    assert cm.shape[0] > n * 30 and cm.shape[1] > n * 30
    assert decode(tmp_path / "errors.png").shape[2] == 3


def test_cli_refuses_a_non_png_name(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "x.npz"), "--plot",
                                       str(tmp_path / "cm.jpg")])
    assert result.exit_code == 2
    assert result.stderr == (f"cnncli: error: --plot {tmp_path / 'cm.jpg'} is not a .png file "
                             "(give a name ending in .png)\n")


def test_feature_vectors_have_no_error_pictures():
    from cnncli.errors import DataError

    with pytest.raises(DataError, match="the inputs are vectors of 5 values, not images"):
        errors_picture(np.zeros((3, 5)), np.array([0, 1, 0]), np.zeros((3, 2)), ["a", "b"])
