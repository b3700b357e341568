"""Inference of small networks in chunks, one per thread, each on its own copy of the layers:
the same logits as the whole batch, parameters shared, training untouched."""

import threading

import numpy as np
import pytest

from cnncli.nn.model import model_from_entries
from cnncli.parallel import threads
from cnncli.parallel.plan import apply_plan
from cnncli.parallel.thresholds import CHUNK_MIN_IMAGES

SMALL = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
    {"type": "batchnorm2d"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 6, "kernel_size": 3, "stride": 2, "activation": "tanh"},
    {"type": "avgpool2d", "kernel_size": 2, "ceil_mode": True},
    {"type": "flatten"},
    {"type": "dense", "units": 12, "activation": "gelu"},
    {"type": "dropout", "p": 0.3},
    {"type": "batchnorm1d"},
    {"type": "dense", "units": 5},
]
SHAPE = (2, 12, 12)


def _trained_model(dtype=np.float32):
    """A model whose batch norms hold non-trivial running statistics."""
    model = apply_plan(model_from_entries(SHAPE, SMALL, dtype=dtype, seed=3))
    rng = np.random.default_rng(1)
    for _ in range(3):
        model.forward(rng.standard_normal((8,) + SHAPE) * 2 + 1, train=True)
    return model


def _whole(model, x):
    before = threads.get_threads()
    threads.set_threads(1)
    try:
        return model.forward(x, train=False)
    finally:
        threads.set_threads(before)


@pytest.mark.parametrize("batch", [2 * CHUNK_MIN_IMAGES, 2 * CHUNK_MIN_IMAGES + 1, 150])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunks_give_the_whole_batch_logits(two_threads, batch, dtype):
    model = _trained_model(dtype)
    x = np.random.default_rng(batch).standard_normal((batch,) + SHAPE)
    want = _whole(model, x)
    got = model.forward(x, train=False)
    assert model.runner.chunks(model, batch) == 2 and len(model.runner.replicas) == 1
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-13,
                               atol=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_array_equal(model.forward(x, train=False), got)  # same numbers again


def test_chunks_run_on_two_threads(two_threads, monkeypatch):
    model = _trained_model()
    seen = set()
    dense = model.layers[-1]
    original = type(dense).forward

    def spy(self, x, train=False):
        seen.add(threading.get_ident())
        return original(self, x, train)

    monkeypatch.setattr(type(dense), "forward", spy)  # the class: every copy of the layer
    model.forward(np.zeros((2 * CHUNK_MIN_IMAGES,) + SHAPE), train=False)
    assert len(seen) == 2


def test_replicas_share_parameters_and_statistics(two_threads):
    model = _trained_model()
    x = np.random.default_rng(0).standard_normal((64,) + SHAPE)
    model.forward(x, train=False)  # the copies exist now
    state = {k: v * 1.5 + 0.1 for k, v in model.state_dict().items()}
    state = {k: np.abs(v) if k.endswith("running_var") else v for k, v in state.items()}
    model.load_state_dict(state)
    np.testing.assert_allclose(model.forward(x, train=False), _whole(model, x),
                               rtol=1e-6, atol=1e-6)


def test_small_batches_heavy_convs_and_training_are_not_chunked(two_threads):
    model = _trained_model()
    assert model.runner.chunks(model, 2 * CHUNK_MIN_IMAGES - 1) == 1
    heavy = apply_plan(model_from_entries((16, 64, 64), [
        {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"type": "global_avg_pool2d"}, {"type": "flatten"}, {"type": "dense", "units": 3}]))
    assert heavy.runner.chunks(heavy, 64) == 1
    threads.set_threads(1)
    assert model.runner.chunks(model, 256) == 1


def test_training_after_chunked_inference_is_unchanged(two_threads):
    x = np.random.default_rng(5).standard_normal((64,) + SHAPE)
    dlogits = np.random.default_rng(6).standard_normal((64, 5))
    chunked, plain = _trained_model(np.float64), _trained_model(np.float64)
    chunked.forward(x, train=False)
    results = []
    for model in (chunked, plain):
        model.zero_grad()
        logits = model.forward(x, train=True)
        results.append((logits, model.backward(dlogits), model.grads()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    for key, grad in results[1][2].items():
        np.testing.assert_array_equal(results[0][2][key], grad, err_msg=key)


def test_backward_after_a_chunked_eval_forward_is_the_whole_batch_one(two_threads):
    """Gradients of an evaluation (saliency maps, say) work through the chunks: each chunk's
    backward runs on its own layer copy, accumulating into the shared gradient arrays."""
    x = np.random.default_rng(7).standard_normal((2 * CHUNK_MIN_IMAGES + 3,) + SHAPE)
    dlogits = np.random.default_rng(8).standard_normal((len(x), 5))
    results = []
    for chunked in (True, False):
        model = _trained_model(np.float64)
        threads.set_threads(2 if chunked else 1)
        model.zero_grad()
        model.forward(x, train=False)
        assert (len(model.runner.bounds) == 3) == chunked
        results.append((model.backward(dlogits), model.grads()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12, atol=1e-14)
    for key, grad in results[1][1].items():
        np.testing.assert_allclose(results[0][1][key], grad, rtol=1e-12, atol=1e-12,
                                   err_msg=key)


def test_eval_gradient_matches_finite_differences():
    """The eval-mode gradient is that of the eval function: batch norm with its running
    statistics, dropout off, max pools routed to the maxima."""
    model = _trained_model(np.float64)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3,) + SHAPE)
    w = rng.standard_normal((3, 5))
    model.forward(x, train=False)
    dx = model.backward(w)
    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (np.sum(w * model.forward(up, train=False))
                        - np.sum(w * model.forward(down, train=False))) / (2 * eps)
    np.testing.assert_allclose(dx, numeric, rtol=1e-5, atol=1e-7)


def test_a_branching_model_in_chunks_gives_the_whole_batch_logits(two_threads):
    layers = [
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1, "activation": "relu"},
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "add", "from": [-1, 0], "activation": "relu"},
        {"type": "maxpool2d", "kernel_size": 2, "from": 0},
        {"type": "maxpool2d", "kernel_size": 2, "from": 2},
        {"type": "concat", "from": [3, 4]},
        {"type": "flatten"},
        {"type": "dense", "units": 5},
    ]
    model = apply_plan(model_from_entries(SHAPE, layers, seed=3))
    batch = 2 * CHUNK_MIN_IMAGES + 1
    x = np.random.default_rng(0).standard_normal((batch,) + SHAPE).astype(np.float32)
    want = _whole(model, x)
    got = model.forward(x, train=False)
    assert model.runner.chunks(model, batch) == 2
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
