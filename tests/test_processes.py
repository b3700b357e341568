"""Training each batch's second half in a worker process (cnncli/parallel/processes.py): where
it applies (cnncli/parallel/plan.py), that it gives the whole batch's gradients, that runs
repeat bit for bit and resume exactly, that small batches stay here, and that a failed worker
is a one-line error. Two processes give the same numbers on one core as on two, so these tests
pretend two usable cores (``two_cores``) and run anywhere."""

import os

import numpy as np
import pytest

from cnncli.nn.losses import softmax_cross_entropy
from cnncli.nn.model import model_from_entries
from cnncli.parallel import processes, threads, thresholds
from cnncli.parallel.plan import apply_plan, can_split, split_model
from cnncli.parallel.processes import SplitBatchModel, WorkerError
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.optim import SGD
from cnncli.training.trainer import train, train_step

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"),
                                reason="the worker's shared memory needs memfd_create (Linux)")

SHAPE = (2, 8, 8)
LAYERS = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "activation": "tanh"},
    {"type": "flatten"},
    {"type": "dense", "units": 5},
]


@pytest.fixture
def any_size(monkeypatch):
    """Split these tests' small networks too (the real threshold keeps them in one process)."""
    monkeypatch.setattr(thresholds, "PROCESS_MIN_MACS", 0)


@pytest.fixture
def two_cores(two_threads, monkeypatch):
    """Two cnncli threads and two usable cores as far as the plan can tell, whatever this
    machine allows (``taskset -c 0``): the decisions, and the worker, do not need them."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)


def _model(layers=LAYERS, shape=SHAPE, dtype=np.float32):
    return apply_plan(model_from_entries(shape, layers, dtype=dtype, seed=3))


def _batch(n, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n,) + SHAPE).astype(dtype), rng.integers(0, 5, size=n)


DROPOUT = (LAYERS[:2] + [{"type": "dropout", "p": 0.2}] + LAYERS[2:-1]  # spatial and flat
           + [{"type": "dropout", "p": 0.4}, LAYERS[-1]])
# a branching model: a shortcut read twice, a dropout on a branch, add and concat
BRANCHING = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "add", "from": [-1, 0], "activation": "relu"},
    {"type": "dropout", "p": 0.3, "from": 0},
    {"type": "concat", "from": [2, 3]},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 5},
]
# batch norm: a plain conv + batch norm chain (2-D and 1-D, one without affine weights) ...
NORM_CHAIN = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d", "momentum": 0.3},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 6, "kernel_size": 3},
    {"type": "batchnorm2d", "affine": False, "momentum": None},
    {"type": "flatten"},
    {"type": "dense", "units": 7},
    {"type": "batchnorm1d"},
    {"type": "dense", "units": 5},
]
# ... and a small ResNet-20: a stem, an identity block, a stride-2 block with a 1x1 conv +
# batch norm shortcut (configs/resnet20_cifar.yaml's `basic` and `down`), global pooling.
RESNET = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False},
    {"type": "batchnorm2d"},
    {"type": "add", "from": [-1, 2], "activation": "relu"},
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "stride": 2, "padding": 1,
     "bias": False},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1, "bias": False},
    {"type": "batchnorm2d"},
    {"type": "conv2d", "out_channels": 8, "kernel_size": 1, "stride": 2, "bias": False,
     "from": 8},
    {"type": "batchnorm2d"},
    {"type": "add", "from": [13, 15], "activation": "relu"},
    {"type": "global_avg_pool2d"},
    {"type": "dense", "units": 5},
]


def test_which_networks_split(two_cores, any_size, monkeypatch):
    model = _model()
    assert can_split(model, 64) and not can_split(model, 63)
    assert can_split(_model(DROPOUT), 64)  # its masks are drawn for the whole batch
    assert can_split(_model(NORM_CHAIN), 64) and can_split(_model(RESNET), 64)  # sums exchanged
    assert not can_split(_model([{"type": "flatten"}, {"type": "dense", "units": 40_000}]), 64)
    big = _model([{"type": "conv2d", "out_channels": 64, "kernel_size": 3},
                  {"type": "flatten"}, {"type": "dense", "units": 5}], (16, 32, 32))
    assert can_split(big, 64)
    threads.set_threads(4)  # more threads than two processes use: a big conv shares them out
    assert not can_split(big, 64) and can_split(model, 64)
    threads.set_threads(1)
    assert not can_split(model, 64) and split_model(model, 64) is None
    threads.set_threads(2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)  # taskset -c 0
    assert not can_split(model, 64)


def test_networks_too_small_to_repay_the_hand_offs_stay_in_one_process(two_cores):
    lenet_like = _model([{"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2},
                         {"type": "maxpool2d", "kernel_size": 2}, {"type": "flatten"},
                         {"type": "dense", "units": 10}], (1, 28, 28))
    per_image = sum(layer.macs(shape) for layer, shape in zip(lenet_like.layers,
                                                              lenet_like.shapes, strict=False))
    enough = 2 * -(-thresholds.PROCESS_MIN_MACS // per_image)  # the smallest batch that splits
    assert can_split(lenet_like, enough) and not can_split(lenet_like, enough - 2)
    assert not can_split(_model(), 1024)  # 5.6 thousand multiply-adds an image


def test_the_worker_ignores_modules_in_the_working_directory(two_threads, any_size,
                                                            tmp_path, monkeypatch):
    for name in ("random", "numbers", "json"):  # what python -m would import from here
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed')\n")
    (tmp_path / "cnncli.py").write_text("print('ok 1 2')\n")
    monkeypatch.chdir(tmp_path)
    with SplitBatchModel(_model(), 64) as stand_in:
        loss, _ = train_step(stand_in, SGD(lr=0.1), *_batch(64))
    assert np.isfinite(loss)


def test_the_shared_memory_descriptor_avoids_a_closed_stdin():
    saved = os.dup(0)
    os.close(0)
    try:
        fd = processes._memfd_above_stdio("test")
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    os.close(fd)
    assert fd >= 3


def test_overflow_in_the_worker_is_for_the_loss_check_even_with_warnings_as_errors(
        two_threads, any_size, monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    with SplitBatchModel(_model(), 64) as stand_in:
        x, y = _batch(64)
        with np.errstate(over="ignore", invalid="ignore"):  # as the training loop runs it
            loss, _ = train_step(stand_in, SGD(lr=0.1), x * np.float32(3e38), y)
    assert not np.isfinite(loss)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("layers", [LAYERS, DROPOUT, BRANCHING, NORM_CHAIN, RESNET],
                         ids=["plain", "dropout", "branching", "batch-norm", "resnet"])
def test_a_split_batch_gives_the_whole_batch_logits_loss_and_gradients(two_threads, any_size,
                                                                       layers, label_smoothing):
    """Each process computes its own half's logit gradients (one exchange a batch): the
    gradients are still the whole batch's."""
    whole, split = _model(layers, dtype=np.float64), _model(layers, dtype=np.float64)
    x, y = _batch(71, np.float64)  # halves of 35 and 36 images
    whole.zero_grad()
    logits = whole.forward(x, train=True)
    loss, dlogits = softmax_cross_entropy(logits, y, label_smoothing)
    whole.backward(dlogits, need_input_grad=False)
    with SplitBatchModel(split, 71) as stand_in:
        stand_in.zero_grad()
        split_logits, split_loss = stand_in.train_batch(x, y, label_smoothing)
    np.testing.assert_allclose(split_logits, logits, rtol=1e-12, atol=1e-14)
    assert split_loss == pytest.approx(loss, rel=1e-12)
    for (name, _, grad), (_, _, split_grad) in zip(whole.parameters(), split.parameters(),
                                                   strict=True):
        np.testing.assert_allclose(split_grad, grad, rtol=1e-10, atol=1e-13, err_msg=name)
    for layer, reference in zip(split.layers, whole.layers, strict=True):
        for key, value in layer.buffers.items():  # running statistics of the whole batch
            np.testing.assert_allclose(value, reference.buffers[key], rtol=1e-12, atol=1e-15,
                                       err_msg=f"{layer.name}.{key}")
    assert all(type(layer).batch_sums is layer.batch_sums for layer in split.layers
               if hasattr(layer, "batch_sums"))  # the hook is uninstalled after the step


def _train(model, steps, split):
    """``steps`` SGD steps on fixed batches of 64; the state dict after them."""
    optimizer = SGD(lr=0.05, momentum=0.9)
    stand_in = split_model(model, 64) if split else None
    try:
        for step in range(steps):
            train_step(stand_in or model, optimizer, *_batch(64, seed=step))
    finally:
        if stand_in is not None:
            stand_in.close()
    return model.state_dict()


@pytest.mark.parametrize("layers", [LAYERS, DROPOUT, NORM_CHAIN, RESNET],
                         ids=["plain", "dropout", "batch-norm", "resnet"])
def test_split_training_repeats_bit_for_bit_and_matches_one_process_to_rounding(two_threads,
                                                                                any_size, layers):
    first = _train(_model(layers), 6, split=True)
    again = _train(_model(layers), 6, split=True)
    alone = _train(_model(layers), 6, split=False)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
        np.testing.assert_allclose(first[key], alone[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_small_batches_stay_here_and_a_dead_worker_is_a_one_line_error(two_threads, any_size):
    model = _model()
    stand_in = SplitBatchModel(model, 64)
    try:
        stand_in._worker.kill()
        stand_in._worker.wait()
        x, y = _batch(64)
        loss, _ = train_step(stand_in, SGD(lr=0.1), x[:40], y[:40])  # 20 + 20: not split
        assert np.isfinite(loss)
        with pytest.raises(WorkerError) as err:
            train_step(stand_in, SGD(lr=0.1), x, y)
        assert "worker process" in str(err.value) and len(str(err.value).splitlines()) == 1
        assert "CNNCLI_THREADS=1" in str(err.value)
    finally:
        stand_in.close()


def test_the_worker_reports_its_memory_and_stops_when_closed(two_threads, any_size):
    stand_in = SplitBatchModel(_model(), 64)
    worker = stand_in._worker
    now, peak = stand_in.worker_memory_mb()
    assert 0 < now <= peak
    stand_in.close()
    assert worker.poll() is not None
    stand_in.close()  # twice is harmless


def _digits_config(**train_settings):
    return {"name": "split", "seed": 1,
            "model": {"input_shape": [1, 8, 8], "layers": [
                {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1,
                 "activation": "relu"},
                {"type": "maxpool2d", "kernel_size": 2},
                {"type": "flatten"},
                {"type": "dense", "units": 10}]},
            "data": {"dataset": "digits", "val_split": 0.1, "normalize": "scale"},
            "train": {"epochs": 4, "batch_size": 64, "optimizer": "sgd", "lr": 0.1,
                      "momentum": 0.9, **train_settings}}


def test_a_split_run_learns_and_resumes_bit_for_bit(two_cores, any_size, tmp_path):
    cfg = _digits_config()
    assert can_split(model_from_entries([1, 8, 8], cfg["model"]["layers"]), 64)
    straight = train(cfg, out_dir=tmp_path / "straight")
    train(cfg, out_dir=tmp_path / "cut", epochs=2)
    train(None, resume=tmp_path / "cut", epochs=4)
    a = load_checkpoint(tmp_path / "straight" / "last.npz").state
    b = load_checkpoint(tmp_path / "cut" / "last.npz").state
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert straight.test["accuracy"] > 0.8


def test_bad_input_is_the_models_error_and_the_worker_stays_in_step(two_threads, any_size):
    from cnncli.errors import DataError

    model = _model()
    with SplitBatchModel(model, 64) as stand_in:
        x, y = _batch(64)
        with pytest.raises(DataError, match=r"expects input of shape \(N, 2, 8, 8\)"):
            stand_in.train_batch(x[:, :1], y)
        bad = y.copy()
        bad[-1] = 5  # in the worker's half: found here, before the worker is asked
        with pytest.raises(DataError, match="label 5 is out of range for 5 classes"):
            train_step(stand_in, SGD(lr=0.1), x, bad)
        loss, _ = train_step(stand_in, SGD(lr=0.1), x, y)
        assert np.isfinite(loss)
        assert stand_in.worker_memory_mb()[0] > 0  # replies still answer their requests


def test_batch_norm_sums_between_two_sides_and_a_failed_side():
    """``PairSums`` on two threads: both sides get the same total, first half then second,
    through two rounds of slots; a side that fails or stops wakes the other with an error."""
    import threading

    slots = np.zeros((2, 2, 64), np.uint8)
    there, here = os.pipe(), os.pipe()
    sides = [processes.PairSums(slots, 0, here[0], there[1]),
             processes.PairSums(slots, 1, there[0], here[1])]
    parts = [np.float32([0.1, 2.5, -3.0]), np.float32([1e-8, 1e8, 3.0])]
    results: list = [[], []]

    def run(side):
        for step in range(5):
            results[side].append(sides[side].total(parts[side] * (step + 1)))

    runs = [threading.Thread(target=run, args=(side,)) for side in (0, 1)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    for step in range(5):
        expected = parts[0] * (step + 1)
        expected += parts[1] * (step + 1)
        np.testing.assert_array_equal(results[0][step], expected)
        np.testing.assert_array_equal(results[1][step], expected)
    sides[1].abort()
    with pytest.raises(processes.PartnerFailed) as failed:
        sides[0].total(parts[0])
    assert not failed.value.stopped
    for fd in (*there, here[1]):
        os.close(fd)
    with pytest.raises(processes.PartnerFailed) as stopped:
        sides[0].total(parts[0])  # the other side's descriptors are closed: it stopped
    assert stopped.value.stopped
    os.close(here[0])


def test_a_failure_midway_through_a_batch_norm_batch_stops_the_worker_at_once(two_threads,
                                                                              any_size):
    """The worker waits for this half's batch-norm sums: if this half fails (Ctrl-C, say),
    the worker is stopped rather than waited for, and later batches say that it stopped."""
    model = _model(NORM_CHAIN)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with SplitBatchModel(model, 64) as stand_in:
        worker = stand_in._worker
        model.layers[5]._forward = interrupted  # after the first batch norm's exchanges
        with pytest.raises(KeyboardInterrupt):
            train_step(stand_in, SGD(lr=0.1), *_batch(64))
        assert worker.poll() is not None
        del model.layers[5]._forward
        with pytest.raises(WorkerError, match="stopped"):
            train_step(stand_in, SGD(lr=0.1), *_batch(64))
    assert all(type(layer).batch_sums is layer.batch_sums for layer in model.layers
               if hasattr(layer, "batch_sums"))


def test_a_wait_for_the_other_process_polls_then_leaves_the_wait_to_a_blocking_read():
    """``wait_readable`` returns once a byte is in (within its polling or after it), or once
    the polling time is over with nothing in, so that the caller's read blocks instead."""
    import threading
    import time

    read_fd, write_fd = os.pipe()
    try:
        started = time.perf_counter()
        processes.wait_readable(read_fd, 0.05)  # nothing comes: back after the polling
        assert time.perf_counter() - started >= 0.05
        for late in (0.01, 0.2):  # within the polling time, and after it
            writer = threading.Timer(late, os.write, (write_fd, b"+"))
            writer.start()
            processes.wait_readable(read_fd, 0.1)
            assert os.read(read_fd, 1) == b"+"  # blocks until the byte is in, if need be
            writer.join()
        os.write(write_fd, b"!")
        started = time.perf_counter()
        processes.wait_readable(read_fd, 10.0)  # already in: no polling
        assert time.perf_counter() - started < 5.0
        assert os.read(read_fd, 1) == b"!"
    finally:
        os.close(read_fd)
        os.close(write_fd)
