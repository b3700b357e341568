"""A branching model through the whole tool: train, exact resume, eval, predict, show, bench,
and the execution plan on and off."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli import build_model
from cnncli.cli.app import main
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.trainer import train


def _blobs(path, n_train=96, n_test=24, seed=0):
    """Three classes of 1x6x6 uint8 images, each brightest in its own rows, plus noise."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 3
        x = rng.integers(0, 120, size=(n, 6, 6))
        for c in range(3):
            x[y == c, 2 * c:2 * c + 2, :] += 120
        return x.astype(np.uint8), y.astype(np.int64)

    (x_train, y_train), (x_test, y_test) = make(n_train), make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def _config(data_path, **train_keys):
    return {
        "name": "branchy", "seed": 3,
        "model": {
            "input_shape": [1, 6, 6],
            "blocks": {"res": {"params": {"c": 4}, "layers": [
                {"type": "conv2d", "name": "conv1", "out_channels": "$c", "kernel_size": 3,
                 "padding": 1, "activation": "relu"},
                {"type": "conv2d", "name": "conv2", "out_channels": "$c", "kernel_size": 3,
                 "padding": 1},
                {"type": "add", "name": "sum", "from": [-1, "input"], "activation": "relu"}]}},
            "layers": [
                {"type": "conv2d", "name": "stem", "out_channels": 4, "kernel_size": 3,
                 "padding": 1, "activation": "relu"},
                {"type": "res", "name": "stage1", "repeat": 2},
                {"type": "max_pool2d", "name": "pool", "kernel_size": 2},
                {"type": "conv2d", "name": "side", "out_channels": 2, "kernel_size": 1,
                 "from": "stem"},
                {"type": "avg_pool2d", "kernel_size": 2},
                {"type": "concat", "name": "cat", "from": ["pool", -1]},
                {"type": "flatten"},
                {"type": "dropout", "p": 0.2},
                {"type": "dense", "name": "out", "units": 3}]},
        "data": {"path": str(data_path), "val_split": 0.25, "normalize": "scale"},
        "train": {"epochs": 4, "batch_size": 16, "optimizer": "adam", "lr": 0.01, **train_keys},
    }


@pytest.fixture
def blobs(tmp_path):
    return _blobs(tmp_path / "blobs.npz")


def test_branching_model_trains_and_resumes_bitwise(tmp_path, blobs):
    cfg = _config(blobs)
    straight = train(cfg, out_dir=tmp_path / "straight")
    train(cfg, out_dir=tmp_path / "split", epochs=2)
    train(None, resume=tmp_path / "split", epochs=4)
    a = load_checkpoint(tmp_path / "straight" / "last.npz")
    b = load_checkpoint(tmp_path / "split" / "last.npz")
    assert "stage1.1.conv2.weight" in a.state
    for key in a.state:
        np.testing.assert_array_equal(a.state[key], b.state[key], err_msg=key)
    assert straight.metrics[-1]["train_loss"] < straight.metrics[0]["train_loss"]
    # the checkpoint's config rebuilds the same graph
    assert a.run.model.entries() == b.run.model.entries()
    assert any("from" in e for e in a.config["model"]["layers"])


def test_plan_on_and_off_give_equal_results(blobs):
    cfg = _config(blobs)
    x = np.random.default_rng(0).random((64, 1, 6, 6), dtype=np.float32)
    plain = build_model(cfg, speedups=False)
    fast = build_model(cfg, speedups=True)
    np.testing.assert_array_equal(plain.forward(x), fast.forward(x))
    y_plain, y_fast = plain.forward(x, train=True), fast.forward(x, train=True)
    np.testing.assert_allclose(y_plain, y_fast, rtol=1e-6, atol=1e-6)
    dy = np.random.default_rng(1).standard_normal(y_plain.shape).astype(np.float32)
    plain.zero_grad()
    fast.zero_grad()
    np.testing.assert_allclose(plain.backward(dy), fast.backward(dy), rtol=1e-5, atol=1e-6)
    for (name, _, g1), (_, _, g2) in zip(plain.parameters(), fast.parameters(), strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6, err_msg=name)


def test_eval_predict_show_and_bench_on_a_branching_run(tmp_path, blobs):
    train(_config(blobs, epochs=1), out_dir=tmp_path / "run")
    best = str(tmp_path / "run" / "best.npz")
    runner = CliRunner()

    def ok(*args):
        result = runner.invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    report = json.loads(ok("eval", best, "--json"))
    assert 0.0 <= report["accuracy"] <= 1.0
    images = tmp_path / "few.npy"
    np.save(images, np.random.default_rng(0).random((3, 1, 6, 6), dtype=np.float32))
    ok("predict", best, str(images), "--out", str(tmp_path / "preds.csv"))
    assert len((tmp_path / "preds.csv").read_text().splitlines()) == 4
    ok("show", best, "--receptive-field", "--layer", "stage1.1.sum",
       "--out", str(tmp_path / "rf.png"))
    ok("show", best, "--features", str(images), "--layer", "stem",
       "--out", str(tmp_path / "features.png"))
    ok("show", best, "--features", str(images), "--out", str(tmp_path / "all.png"))
    bench = json.loads(ok("bench", best, "--batch-size", "4", "--json", "--steps", "1",
                          "--warmup", "0"))
    assert bench
