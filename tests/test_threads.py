"""threads.split: every index exactly once, same numbers for any thread count, errors surface;
the plan's ThreadSplitter keeps small work on the calling thread."""

import numpy as np
import pytest

from cnncli.nn.model import model_from_entries
from cnncli.parallel import threads, thresholds
from cnncli.parallel.plan import THREADED, apply_plan


@pytest.fixture
def thread_count():
    before = threads.get_threads()
    yield threads.set_threads
    threads.set_threads(before)


@pytest.mark.parametrize("count", [1, 2, 3, 8])
@pytest.mark.parametrize("length", [1, 2, 5, 64])
def test_split_covers_each_index_once(thread_count, count, length):
    thread_count(count)
    hits = np.zeros(length, int)

    def part(lo, hi):
        hits[lo:hi] += 1

    threads.split(part, length)
    np.testing.assert_array_equal(hits, 1)


def test_small_work_stays_on_the_calling_thread(thread_count):
    import threading

    thread_count(2)
    seen = set()
    THREADED.split(lambda lo, hi: seen.add((lo, hi, threading.get_ident())), 8,
                   thresholds.MIN_ELEMENTS - 1)
    THREADED.split_matmuls(lambda lo, hi: seen.add((lo, hi, threading.get_ident())), 8,
                           thresholds.CONV_THREADS_MIN_MACS - 1)
    assert seen == {(0, 8, threading.get_ident())}
    assert THREADED.pair(lambda: threading.get_ident(), lambda: threading.get_ident(),
                         thresholds.CONV_PAIR_MIN_MACS - 1) == (threading.get_ident(),) * 2


def test_big_work_is_shared_out(thread_count):
    thread_count(2)
    ranges = []
    THREADED.split(lambda lo, hi: ranges.append((lo, hi)), 8, thresholds.MIN_ELEMENTS)
    THREADED.split_matmuls(lambda lo, hi: ranges.append((lo, hi)), 8,
                           thresholds.CONV_THREADS_MIN_MACS)
    assert sorted(ranges) == [(0, 4), (0, 4), (4, 8), (4, 8)]


def test_worker_errors_propagate(thread_count):
    thread_count(2)

    def part(lo, hi):
        if lo > 0:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        threads.split(part, 4)


def test_model_step_is_bitwise_identical_for_one_and_two_threads(thread_count):
    # Big enough (64 x 16 x 16 x 16 = 262k per map, x2 channels' worth) to take the threaded path.
    entries = [{"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1,
                "activation": "relu"},
               {"type": "maxpool2d", "kernel_size": 2},
               {"type": "flatten"},
               {"type": "dense", "units": 4}]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((160, 3, 16, 16)).astype(np.float32)
    dlogits = rng.standard_normal((160, 4)).astype(np.float32)
    results = []
    for count in (1, 2):
        thread_count(count)
        model = apply_plan(model_from_entries((3, 16, 16), entries, seed=0))
        logits = model.forward(x, train=True)
        dx = model.backward(dlogits)
        grads = model.grads()
        model.zero_grad()
        model.forward(x, train=True)
        model.backward(dlogits, need_input_grad=False)  # the first conv skips dx
        results.append((logits, dx, grads, model.grads()))
    (l1, d1, g1, h1), (l2, d2, g2, h2) = results
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(d1, d2)
    for key in g1:
        np.testing.assert_array_equal(g1[key], g2[key], err_msg=key)
        np.testing.assert_array_equal(h1[key], h2[key], err_msg=key)
        np.testing.assert_array_equal(h1[key], g1[key], err_msg=key)


@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("macs", [0, 1 << 30])
def test_pair_returns_both_results_in_order(thread_count, count, macs):
    thread_count(count)
    assert threads.pair(lambda: "first", lambda: 2) == ("first", 2)
    assert THREADED.pair(lambda: "first", lambda: 2, macs) == ("first", 2)


def test_pair_surfaces_errors_of_either_task(thread_count):
    thread_count(2)

    def fail():
        raise KeyError("worker")

    with pytest.raises(KeyError, match="worker"):
        threads.pair(fail, lambda: 1)
    with pytest.raises(KeyError, match="worker"):
        threads.pair(lambda: 1, fail)


def _fresh_process(code: str, **env_overrides) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in threads.BLAS_VARS and k not in ("CNNCLI_THREADS", "CNNCLI_SPEEDUPS")}
    env.update(env_overrides)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    return proc.stdout.split()


PROBE = ("import os, cnncli; print(os.environ.get('OPENBLAS_NUM_THREADS'), "
         "cnncli.parallel.threads.get_threads())")


def test_import_before_numpy_puts_blas_on_one_thread_and_cnncli_on_every_core():
    # Every core this process may use (the child inherits its affinity, e.g. from taskset).
    assert _fresh_process(PROBE) == ["1", str(threads.usable_cores())]
    assert _fresh_process(PROBE, CNNCLI_THREADS="3") == ["1", "3"]


def test_a_blas_setting_of_the_user_is_kept_and_cnncli_stays_on_one_thread():
    assert _fresh_process(PROBE, OPENBLAS_NUM_THREADS="2") == ["2", "1"]
    assert _fresh_process("import numpy; " + PROBE) == ["None", "1"]


def test_speedups_off_leaves_blas_threads_alone():
    assert _fresh_process(PROBE, CNNCLI_SPEEDUPS="off") == ["None", "1"]
