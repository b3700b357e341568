"""Inference batches split with a worker process (``ProcessInference`` in
cnncli/parallel/plan.py, ``InferenceWorker`` in processes.py): which models and batches split,
that the logits are those of the two halves computed here, that the worker follows every
change of the weights, that backward after such a forward is the whole batch's, that it
falls back when the worker cannot start or dies, and that the worker never outlives its
model or its process. As in test_processes.py, two usable cores are pretended."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnncli.nn.model import WholeBatch, model_from_entries
from cnncli.parallel import plan, processes, threads, thresholds
from cnncli.parallel.plan import ProcessInference, apply_plan, can_split_inference

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"),
                                reason="the worker's shared memory needs memfd_create (Linux)")

SHAPE = (2, 8, 8)
LAYERS = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "dropout", "p": 0.3},
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "add", "from": [-1, 2], "activation": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 6},
    {"type": "batchnorm1d"},
    {"type": "dense", "units": 5},
]


@pytest.fixture
def split_inference(two_threads, monkeypatch):
    """Two threads and two usable cores as far as the plan can tell, and these tests' small
    networks split too (the real threshold keeps them whole)."""
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(thresholds, "INFERENCE_PROCESS_MIN_MACS", 0)


def _model(layers=LAYERS, dtype=np.float64, seed=3):
    model = apply_plan(model_from_entries(SHAPE, layers, dtype=dtype, seed=seed))
    rng = np.random.default_rng(seed)
    for layer in model.layers:  # running statistics that are not the initial 0 and 1
        for value in layer.buffers.values():
            if value.dtype.kind == "f":
                value[...] = rng.uniform(0.5, 1.5, value.shape)
    return model


def _images(n, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE).astype(dtype)


def _halves_here(model, x):
    """The two halves' logits computed in this process, on one thread."""
    half = len(x) // 2
    with threads.serial():
        return np.concatenate([model.forward_through(model.layers, part, False)
                               for part in (x[:half], x[half:])])


def _ready(model) -> processes.InferenceWorker:
    assert model.runner.wait_for_worker(60)
    return model.runner.worker


def test_which_models_and_batches_split(split_inference, monkeypatch):
    model = _model()
    least = 2 * thresholds.INFERENCE_PROCESS_MIN_IMAGES
    assert can_split_inference(model, least) and not can_split_inference(model, least - 1)
    no_running_stats = [dict(entry) for entry in LAYERS]
    no_running_stats[1]["track_running_stats"] = False  # batch statistics in eval too
    assert not can_split_inference(_model(no_running_stats), 64)
    threads.set_threads(1)
    assert not can_split_inference(model, 64)
    threads.set_threads(2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)  # taskset -c 0
    assert not can_split_inference(model, 64)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(thresholds, "INFERENCE_PROCESS_MIN_MACS", 10**12)
    assert not can_split_inference(model, 64)
    off = apply_plan(model_from_entries(SHAPE, LAYERS), speedups=False)
    assert type(off.runner) is WholeBatch and type(model.runner) is ProcessInference


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_logits_are_the_two_halves_and_the_whole_batch_to_rounding(split_inference,
                                                                          dtype):
    model = _model(dtype=dtype)
    plain = apply_plan(model_from_entries(SHAPE, LAYERS, dtype=dtype), speedups=False)
    plain.load_state_dict(model.state_dict())
    x = _images(45, dtype)  # halves of 22 and 23 images
    with model:
        before = model.forward(x)  # the worker is starting: the second half runs here
        _ready(model)
        logits = model.forward(x)
    np.testing.assert_array_equal(before, logits)
    np.testing.assert_array_equal(logits, _halves_here(model, x))
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12}
    np.testing.assert_allclose(logits, plain.forward(x, train=False), **tolerance)
    assert model.runner.worker is None  # closed with the model


def test_the_worker_follows_every_change_of_the_weights(split_inference):
    from cnncli.nn.losses import softmax_cross_entropy
    from cnncli.training.optim import SGD
    from cnncli.training.trainer import train_step

    model, x = _model(), _images(40)
    with model:
        model.forward(x)
        _ready(model)
        train_step(model, SGD(lr=0.5, momentum=0.9), x, np.arange(40) % 5)  # weights, stats
        np.testing.assert_array_equal(model.forward(x), _halves_here(model, x))
        model.load_state_dict(_model(seed=8).state_dict())
        np.testing.assert_array_equal(model.forward(x), _halves_here(model, x))
        model.layers[-1].params["bias"][0] += 100.0  # a user's assignment
        logits = model.forward(x)
        assert (logits.argmax(axis=1) == 0).all()
        np.testing.assert_array_equal(logits, _halves_here(model, x))
        assert softmax_cross_entropy(logits, np.zeros(40, int))[0] < 1e-3
        replaced = model.layers[-1].params["bias"].copy()
        replaced[0] -= 200.0
        model.layers[-1].params["bias"] = replaced  # a new array, not a write into the old
        logits = model.forward(x)
        assert not (logits.argmax(axis=1) == 0).any()
        np.testing.assert_array_equal(logits, _halves_here(model, x))


def test_backward_after_a_split_forward_is_the_whole_batch_gradient(split_inference):
    model, x = _model(), _images(40)
    plain = apply_plan(model_from_entries(SHAPE, LAYERS, dtype=np.float64), speedups=False)
    plain.load_state_dict(model.state_dict())
    dlogits = np.random.default_rng(5).standard_normal((40, 5))
    with model:
        model.forward(x)
        _ready(model)
        model.forward(x)
        model.zero_grad()
        dx = model.backward(dlogits)
    plain.forward(x, train=False)
    plain.zero_grad()
    np.testing.assert_allclose(dx, plain.backward(dlogits), rtol=1e-10, atol=1e-13)
    for (name, _, grad), (_, _, expected) in zip(model.parameters(), plain.parameters(),
                                                 strict=True):
        np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-13, err_msg=name)


def test_no_worker_or_a_dead_one_falls_back_to_this_process(split_inference, monkeypatch):
    model, x = _model(), _images(40)
    expected = _halves_here(model, x)
    with model:
        model.forward(x)
        worker = _ready(model)
        worker._worker.kill()
        worker._worker.wait()
        np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12)
        assert model.runner.worker_failed and model.runner.worker is None

    def no_process(*args, **kwargs):
        raise OSError("no process to spare")

    monkeypatch.setattr(plan, "InferenceWorker", no_process)
    other = _model()
    np.testing.assert_allclose(other.forward(x), expected, rtol=1e-12)
    assert other.runner.worker_failed


def test_a_bigger_batch_starts_a_bigger_worker_and_small_batches_stay_here(split_inference):
    model = _model()
    with model:
        model.forward(_images(40))
        first = _ready(model)
        small = 2 * thresholds.INFERENCE_PROCESS_MIN_IMAGES - 1
        model.forward(_images(small))
        assert model.runner.worker is first  # not split, the worker kept
        x = _images(90)
        model.forward(x)  # 45 images: a new worker with room for them
        assert first._worker is None and _ready(model).capacity == 45
        np.testing.assert_array_equal(model.forward(x), _halves_here(model, x))


CHILD = """
import os, sys, time
import numpy as np
from cnncli.nn.model import model_from_entries
from cnncli.parallel import threads, thresholds
from cnncli.parallel.plan import apply_plan
threads.set_threads(2)
threads.usable_cores = lambda: 2
thresholds.INFERENCE_PROCESS_MIN_MACS = 0
model = apply_plan(model_from_entries([2, 8, 8], [{"type": "conv2d", "out_channels": 3,
    "kernel_size": 3}, {"type": "flatten"}, {"type": "dense", "units": 4}]))
model.forward(np.zeros((40, 2, 8, 8), np.float32))
assert model.runner.wait_for_worker(60)
print(model.runner.worker._worker.pid, flush=True)
if sys.argv[1] == "wait":
    time.sleep(60)
"""


def _gone(pid: int, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as fh:  # a zombie has exited: its parent reaps it
            if fh.read().split(") ")[-1].startswith("Z"):
                return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", ["exit", "killed"])
def test_the_worker_ends_with_its_process(how):
    """At interpreter exit, and when its process is killed (SIGKILL: no atexit), the worker
    stops: never an orphan."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, "wait" if how == "killed" else ""],
                             stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        worker_pid = int(child.stdout.readline())
        if how == "killed":
            child.send_signal(signal.SIGKILL)
        child.wait(60)
        assert _gone(worker_pid)
    finally:
        child.kill()
        child.wait()


def test_an_idle_worker_lets_go_of_its_last_batch(split_inference):
    from cnncli.parallel.worker import IDLE_SECONDS

    model = apply_plan(model_from_entries((8, 32, 32), [
        {"type": "conv2d", "out_channels": 32, "kernel_size": 3, "padding": 1},
        {"type": "batchnorm2d"}, {"type": "relu"}, {"type": "global_avg_pool2d"},
        {"type": "dense", "units": 5}]))
    x = np.random.default_rng(0).standard_normal((256, 8, 32, 32)).astype(np.float32)
    with model:
        model.forward(x)
        worker = _ready(model)
        expected = _halves_here(model, x)
        np.testing.assert_array_equal(model.forward(x), expected)
        holding = worker.worker_memory_mb()[0]  # a 16 MB map per layer for 128 images
        time.sleep(IDLE_SECONDS + 1.0)
        assert worker.worker_memory_mb()[0] < holding - 20
        np.testing.assert_array_equal(model.forward(x), expected)  # and it works on
