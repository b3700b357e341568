"""Evaluation metrics: a hand-worked example, scikit-learn as a reference, and edge cases."""

import csv
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import log_softmax as scipy_log_softmax

from cnncli.errors import DataError
from cnncli.nn.losses import softmax_cross_entropy
from cnncli.training.evaluate import classification_report, cross_entropy, top_k_indices


def _logits_for(predicted, num_classes):
    logits = np.zeros((len(predicted), num_classes), dtype=np.float32)
    logits[np.arange(len(predicted)), predicted] = 3.0
    return logits


def test_hand_computed_report():
    # true:      0 0 1 1 2 2     (class 3 never occurs and is never predicted)
    # predicted: 0 1 1 1 0 2
    labels = np.array([0, 0, 1, 1, 2, 2])
    report = classification_report(_logits_for([0, 1, 1, 1, 0, 2], 4), labels,
                                   ["a", "b", "c", "d"], top_k=1)
    assert report["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0],
                                          [0, 0, 0, 0]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["top_k_accuracy"] == pytest.approx(4 / 6)
    got = {r["class"]: (r["precision"], r["recall"], r["f1"], r["support"])
           for r in report["per_class"]}
    assert got["a"] == pytest.approx((1 / 2, 1 / 2, 1 / 2, 2))
    assert got["b"] == pytest.approx((2 / 3, 1.0, 0.8, 2))
    assert got["c"] == pytest.approx((1.0, 1 / 2, 2 / 3, 2))
    assert got["d"] == (0.0, 0.0, 0.0, 0)
    # class d is absent from labels and predictions: left out, as scikit-learn does
    assert report["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert report["macro_f1_classes"] == 3


def test_macro_f1_averages_only_classes_present_in_labels_or_predictions():
    # true: 0 0 1 1, predicted: 0 0 1 2 -> class 2 is predicted once but never true (f1 0,
    # counted), class 3 never occurs at all (left out, as scikit-learn's macro average does)
    report = classification_report(_logits_for([0, 0, 1, 2], 4), np.array([0, 0, 1, 1]),
                                   [], top_k=1)
    f1 = [r["f1"] for r in report["per_class"]]
    assert f1 == pytest.approx([1.0, 2 / 3, 0.0, 0.0])
    assert report["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert report["macro_f1_classes"] == 3


def test_top_k_hand_computed():
    logits = np.array([[0.1, 0.5, 0.4, 0.0],    # label 2 is 2nd
                       [0.9, 0.0, 0.06, 0.05],  # label 3 is last -> not in top 2
                       [0.0, 0.2, 0.3, 0.5]])   # label 3 is 1st
    labels = np.array([2, 3, 3])
    np.testing.assert_array_equal(top_k_indices(logits, 2), [[1, 2], [0, 2], [3, 2]])
    report = classification_report(logits, labels, [], top_k=2)
    assert report["top_k"] == 2 and report["top_k_accuracy"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(1 / 3)
    assert [r["class"] for r in report["per_class"]] == ["0", "1", "2", "3"]


@given(st.integers(0, 10_000), st.integers(3, 7), st.integers(1, 60))
def test_matches_scikit_learn(seed, num_classes, n):
    # scikit-learn is not a test dependency; this cross-check runs where it is installed.
    metrics = pytest.importorskip("sklearn.metrics")

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, num_classes)).astype(np.float32)
    labels = rng.integers(0, num_classes, n)
    report = classification_report(logits, labels, [], top_k=2)
    classes = list(range(num_classes))
    predicted = logits.argmax(axis=1)
    np.testing.assert_array_equal(report["confusion_matrix"],
                                  metrics.confusion_matrix(labels, predicted, labels=classes))
    p, r, f, s = metrics.precision_recall_fscore_support(labels, predicted, labels=classes,
                                                         zero_division=0)
    np.testing.assert_allclose([c["precision"] for c in report["per_class"]], p)
    np.testing.assert_allclose([c["recall"] for c in report["per_class"]], r)
    np.testing.assert_allclose([c["f1"] for c in report["per_class"]], f)
    np.testing.assert_array_equal([c["support"] for c in report["per_class"]], s)
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted))
    assert report["macro_f1"] == pytest.approx(metrics.f1_score(labels, predicted,
                                                                average="macro", zero_division=0))
    assert report["top_k_accuracy"] == pytest.approx(
        metrics.top_k_accuracy_score(labels, logits, k=2, labels=classes))


def test_loss_matches_training_loss_and_scipy():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((20, 5)) * 4).astype(np.float32)
    labels = rng.integers(0, 5, 20)
    expected = -scipy_log_softmax(logits.astype(np.float64), axis=1)[np.arange(20), labels].mean()
    assert cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-12)
    assert softmax_cross_entropy(logits, labels)[0] == pytest.approx(expected, rel=1e-5)
    assert classification_report(logits, labels, [])["loss"] == pytest.approx(expected)


def test_empty_split_and_bad_labels_are_data_errors():
    with pytest.raises(DataError, match="empty"):
        classification_report(np.zeros((0, 3)), np.zeros(0, np.int64), [])
    with pytest.raises(DataError, match="0..2"):
        classification_report(np.zeros((2, 3)), np.array([0, 3]), [])


# ------------------------------------------------------------------ eval / predict commands

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained for 2 epochs on three separable classes of 1x4x4 images."""
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    tmp = tmp_path_factory.mktemp("eval")
    data = _blobs(tmp / "blobs.npz")
    train(_config(data), out_dir=tmp / "run", epochs=2)
    return tmp


def _invoke(*args):
    from click.testing import CliRunner

    from cnncli.cli.app import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_eval_json_fields_agree_with_the_model(trained):
    from cnncli.training.checkpoint import load_checkpoint

    result = _invoke("eval", trained / "run" / "best.npz", "--json", "--top-k", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in ("loss", "accuracy", "per_class", "confusion_matrix", "top_k_accuracy"):
        assert key in report
    assert {"class", "precision", "recall", "f1", "support"} <= set(report["per_class"][0])
    with np.load(trained / "blobs.npz") as data:
        y = data["y_test"]
    assert report["checkpoint"].endswith("best.npz") and report["split"] == "test"
    assert load_checkpoint(trained / "run" / "best.npz").epoch >= 1
    cm = np.array(report["confusion_matrix"])
    assert cm.sum() == len(y) and list(cm.sum(axis=1)) == list(np.bincount(y, minlength=3))
    assert report["accuracy"] == pytest.approx(np.trace(cm) / len(y))


def test_eval_table_and_split_choice(trained):
    result = _invoke("eval", trained / "run", "--split", "val")
    assert result.exit_code == 0, result.output
    assert "on the val split: 24 images" in result.stdout
    assert "confusion matrix" in result.stdout and "precision" in result.stdout


def test_eval_missing_checkpoint_is_one_line(tmp_path):
    result = _invoke("eval", tmp_path / "none.npz")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "no checkpoint" in result.stderr


def test_predict_table_and_csv(trained, tmp_path):
    with np.load(trained / "blobs.npz") as data:
        np.save(tmp_path / "four.npy", data["x_test"][:4])
        expected = data["y_test"][:4]
    table = _invoke("predict", trained / "run" / "best.npz", tmp_path / "four.npy")
    assert table.exit_code == 0, table.output
    assert "four.npy" in table.stdout
    out = tmp_path / "preds.csv"
    result = _invoke("predict", trained / "run" / "best.npz", tmp_path / "four.npy", "--top",
                     "2", "--out", out)
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["input", "predicted", "probability", "class_2", "probability_2"]
    assert len(rows) == 4
    for row in rows:
        assert 0 <= float(row["probability_2"]) <= float(row["probability"]) <= 1
    # the trained model separates the blobs: predictions are the true classes
    assert [int(r["predicted"]) for r in rows] == list(expected)



def test_predict_out_creates_folders_and_an_unwritable_path_is_one_line(trained, tmp_path):
    with np.load(trained / "blobs.npz") as data:
        np.save(tmp_path / "two.npy", data["x_test"][:2])
    ckpt = trained / "run" / "best.npz"
    nested = tmp_path / "new" / "folder" / "preds.csv"
    result = _invoke("predict", ckpt, tmp_path / "two.npy", "--out", nested)
    assert result.exit_code == 0, result.output
    with open(nested) as f:
        assert [r["input"] for r in csv.DictReader(f)] == ["two.npy[0]", "two.npy[1]"]
    blocked = _invoke("predict", ckpt, tmp_path / "two.npy", "--out",
                      tmp_path / "two.npy" / "preds.csv")  # a file where a folder should be
    assert blocked.exit_code == 1 and blocked.stderr.count("\n") == 1, blocked.output
    assert blocked.stderr.startswith("cnncli: error: cannot write --out ")
    assert blocked.stderr.endswith(f"{tmp_path / 'two.npy'} is a file, not a folder\n")
    deeper = _invoke("predict", ckpt, tmp_path / "two.npy", "--out",
                     tmp_path / "two.npy" / "sub" / "preds.csv")
    assert deeper.stderr.endswith(f"{tmp_path / 'two.npy'} is a file, not a folder\n")

def test_eval_other_data_uses_the_checkpoints_statistics(tmp_path):
    """--data FILE is normalised with the stored training statistics, not its own."""
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    data = _blobs(tmp_path / "blobs.npz")
    cfg = _config(data)
    cfg["data"]["normalize"] = "standardize"
    train(cfg, out_dir=tmp_path / "run", epochs=2)
    with np.load(data) as d:
        # same test images; training images with very different statistics
        np.savez(tmp_path / "other.npz", x_train=d["x_train"] // 4, y_train=d["y_train"],
                 x_test=d["x_test"], y_test=d["y_test"])
    own = _invoke("eval", tmp_path / "run" / "last.npz", "--json")
    other = _invoke("eval", tmp_path / "run" / "last.npz", "--json", "--data",
                    tmp_path / "other.npz")
    assert own.exit_code == 0 and other.exit_code == 0, other.output
    a, b = json.loads(own.stdout), json.loads(other.stdout)
    assert a["loss"] == b["loss"] and a["confusion_matrix"] == b["confusion_matrix"]
    missing = _invoke("eval", tmp_path / "run" / "last.npz", "--data", tmp_path / "nope.npz")
    assert missing.exit_code == 2 and "neither a dataset name" in missing.stderr


def test_eval_elsewhere_of_a_run_with_a_relative_data_path_says_what_to_do(tmp_path,
                                                                           monkeypatch):
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    (tmp_path / "project").mkdir()
    _blobs(tmp_path / "project" / "blobs.npz")
    monkeypatch.chdir(tmp_path / "project")
    train(_config("blobs.npz"), out_dir="run", epochs=1)
    assert _invoke("eval", "run/best.npz").exit_code == 0
    monkeypatch.chdir(tmp_path)
    result = _invoke("eval", "project/run/best.npz")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "the run's data.path 'blobs.npz' does not exist" in result.stderr
    assert "--data PATH" in result.stderr
    fixed = _invoke("eval", "project/run/best.npz", "--data", "project/blobs.npz")
    assert fixed.exit_code == 0, fixed.output


def test_eval_of_the_runs_own_data_uses_the_stored_statistics(tmp_path):
    """Training images changed after training: the test split is still normalised as trained."""
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    data = _blobs(tmp_path / "blobs.npz")
    cfg = _config(data)
    cfg["data"]["normalize"] = "standardize"
    train(cfg, out_dir=tmp_path / "run", epochs=2)
    before = json.loads(_invoke("eval", tmp_path / "run" / "best.npz", "--json").stdout)
    with np.load(data) as d:
        arrays = dict(d)
    arrays["x_train"] = arrays["x_train"] // 2          # other training statistics
    np.savez(data, **arrays)
    after = _invoke("eval", tmp_path / "run" / "best.npz", "--json")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["loss"] == before["loss"]


def test_eval_other_data_maps_its_classes_onto_the_checkpoints_by_name(tmp_path):
    """An image folder (or .npz) numbers its own classes: with one class missing or other
    classes, index 0 is not the checkpoint's class 0. Map by name; refuse unknown names."""
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    data = _blobs(tmp_path / "blobs.npz")
    with np.load(data) as d:
        arrays = dict(d)
    np.savez(data, **arrays, class_names=np.array(["x", "y", "z"]))
    train(_config(data), out_dir=tmp_path / "run", epochs=3)
    ckpt = tmp_path / "run" / "best.npz"
    own = json.loads(_invoke("eval", ckpt, "--json").stdout)
    # the same test images without class "x": the others renumbered 0, 1 as "y", "z"
    keep = arrays["y_test"] != 0
    np.savez(tmp_path / "yz.npz", x_train=arrays["x_train"], y_train=arrays["y_train"] % 2,
             x_test=arrays["x_test"][keep], y_test=arrays["y_test"][keep] - 1,
             class_names=np.array(["y", "z"]))
    result = _invoke("eval", ckpt, "--json", "--data", tmp_path / "yz.npz")
    assert result.exit_code == 0, result.output
    sub = json.loads(result.stdout)
    assert [row["class"] for row in sub["per_class"]] == ["x", "y", "z"]
    assert sub["confusion_matrix"][1:] == own["confusion_matrix"][1:]
    assert sub["confusion_matrix"][0] == [0, 0, 0]
    np.savez(tmp_path / "other.npz", x_train=arrays["x_train"], y_train=arrays["y_train"],
             class_names=np.array(["x", "w", "z"]))
    wrong = _invoke("eval", ckpt, "--data", tmp_path / "other.npz", "--split", "train")
    assert wrong.exit_code == 2 and wrong.stderr.count("\n") == 1, wrong.output
    assert "other.npz has classes the checkpoint was not trained on: w (its classes are " \
           "x, y, z)" in wrong.stderr


def test_eval_flat_image_folder_has_no_test_split_and_split_all_takes_every_image(trained,
                                                                                  tmp_path):
    Image = pytest.importorskip("PIL.Image")
    with np.load(trained / "blobs.npz") as data:
        x, y = data["x_test"], data["y_test"]
    for i, (img, label) in enumerate(zip(x, y, strict=True)):  # flat: <class>/<file>.png
        (tmp_path / "flat" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "flat" / str(label) / f"{i}.png")
    ckpt = trained / "run" / "best.npz"
    empty = _invoke("eval", ckpt, "--data", tmp_path / "flat")
    assert empty.exit_code == 2 and empty.stderr.count("\n") == 1, empty.output
    assert "the test split of this data is empty (use --split all for every image" \
        in empty.stderr
    result = _invoke("eval", ckpt, "--data", tmp_path / "flat", "--split", "all", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "all" and report["num_samples"] == len(y)
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == \
        np.bincount(y, minlength=3).tolist()
    # the same images as the .npz's test split: the same numbers
    npz = json.loads(_invoke("eval", ckpt, "--json").stdout)
    assert report["confusion_matrix"] == npz["confusion_matrix"]


def test_eval_split_all_of_the_runs_own_data_is_train_val_and_test(trained):
    sizes = {s: json.loads(_invoke("eval", trained / "run", "--split", s, "--json").stdout)
             ["num_samples"] for s in ("train", "val", "test", "all")}
    assert sizes == {"train": 96, "val": 24, "test": 30, "all": 150}
    table = _invoke("eval", trained / "run", "--split", "all")
    assert "on every image (train, val and test): 150 images" in table.stdout


def test_eval_table_piped_keeps_long_class_names_whole(tmp_path):
    from test_train import _blobs, _config

    from cnncli.training.trainer import train

    data = _blobs(tmp_path / "blobs.npz")
    with np.load(data) as d:
        arrays = dict(d)
    names = ["a_rather_long_class_name_that_would_not_fit_eighty_columns_" + c for c in "xyz"]
    np.savez(data, **arrays, class_names=np.array(names))
    train(_config(data), out_dir=tmp_path / "run", epochs=1)
    result = _invoke("eval", tmp_path / "run" / "best.npz")  # CliRunner: not a terminal
    assert result.exit_code == 0, result.output
    for name in names:
        assert name in result.stdout


def test_predict_on_an_empty_npz_is_one_clear_line(trained, tmp_path):
    np.savez(tmp_path / "empty.npz")
    np.savez(tmp_path / "none.npz", x=np.zeros((0, 1, 4, 4), np.float32))
    ckpt = trained / "run" / "best.npz"
    for name, words in (("empty.npz", "is an .npz file with no arrays in it (save the images "
                                      "in it as x"),
                        ("none.npz", "holds no images (an empty array of shape (0, 1, 4, 4))")):
        result = _invoke("predict", ckpt, tmp_path / name)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith(f"cnncli: error: input '{tmp_path / name}' {words}")
