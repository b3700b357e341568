"""The one switch (CNNCLI_SPEEDUPS / speedups=): with the execution plan on, a model computes
what the plain math computes, bit for bit where a trick is exact (order, in place, threads)
and to rounding where it sums in another order (cache-sized pieces, chunks, processes)."""

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli import ConfigError, build_model
from cnncli.cli.app import main
from cnncli.nn.model import WholeBatch, model_from_entries
from cnncli.nn.splitter import SERIAL
from cnncli.parallel import speedups_on, threads, thresholds
from cnncli.parallel.plan import THREADED, ProcessInference, apply_plan, plan_training
from cnncli.training.checkpoint import load_checkpoint, save_checkpoint

# Big enough for every layer-side trick: conv1's weight gradient is cut (split-K), its im2col
# matrix is built in two pieces, ReLUs run after their pools and in place.
BIG = ((3, 16, 16), [
    {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1,
     "activation": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "activation": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 12, "activation": "relu"},
    {"type": "dense", "units": 5}])
# Small: at batch 16, one im2col piece and no split-K either way: only the exact tricks differ.
SMALL = ((2, 8, 8), [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1,
     "activation": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 5, "activation": "relu"},
    {"type": "dense", "units": 3}])


def _pair(net, dtype):
    shape, entries = net
    on = apply_plan(model_from_entries(shape, entries, dtype=dtype, seed=2), speedups=True)
    off = apply_plan(model_from_entries(shape, entries, dtype=dtype, seed=2), speedups=False)
    return on, off


def _train_pass(model, x, dlogits):
    model.zero_grad()
    logits = model.forward(x, train=True)
    return logits, model.backward(dlogits), model.grads()


def _batch(model, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + model.input_shape).astype(dtype)
    return x, rng.standard_normal((n,) + model.output_shape).astype(dtype)


def test_the_plan_really_differs_from_the_plain_math():
    on, off = _pair(BIG, np.float32)
    assert on.run_order != off.run_order == list(range(len(off.layers)))
    assert any(layer.may_overwrite_input for layer in on.layers)
    assert not any(layer.may_overwrite_input or layer.may_overwrite_grad for layer in off.layers)
    assert all(layer.splitter is THREADED for layer in on.layers)
    assert all(layer.splitter is SERIAL for layer in off.layers)
    assert type(on.runner) is ProcessInference and type(off.runner) is WholeBatch
    conv = on.layers[0]
    rows = conv._chunks(3, 16, 16, 64)
    assert len(rows) > 1 and len(off.layers[0]._chunks(3, 16, 16, 64)) == 1
    assert conv._split_k_step(27 + 16, 16 * 16 * 64) < 16 * 16 * 64  # split-K cuts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_logits_and_gradients_agree_to_rounding(two_threads, dtype):
    on, off = _pair(BIG, dtype)
    x, dlogits = _batch(on, 64, dtype)
    got, want = _train_pass(on, x, dlogits), _train_pass(off, x, dlogits)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(got[0], want[0], **tol)
    np.testing.assert_allclose(got[1], want[1], **tol)
    for key in want[2]:
        np.testing.assert_allclose(got[2][key], want[2][key], err_msg=key, **tol)


@pytest.fixture
def bias_not_folded(monkeypatch):
    """The plan's one rounding trick that applies at every size, switched off."""
    from cnncli.parallel.plan import ThreadSplitter

    monkeypatch.setattr(ThreadSplitter, "fold_bias", False)


def test_exact_tricks_change_no_bit(two_threads, bias_not_folded):
    on, off = _pair(SMALL, np.float32)
    x, dlogits = _batch(on, 16, np.float32)
    got, want = _train_pass(on, x, dlogits), _train_pass(off, x, dlogits)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    for key in want[2]:
        np.testing.assert_array_equal(got[2][key], want[2][key], err_msg=key)


def test_chunked_inference_and_its_gradient_agree_to_rounding(two_threads):
    on, off = _pair(BIG, np.float64)
    x, dlogits = _batch(on, 2 * thresholds.CHUNK_MIN_IMAGES + 5, np.float64, seed=1)
    results = []
    for model in (on, off):
        model.zero_grad()
        logits = model.forward(x, train=False)
        results.append((logits, model.backward(dlogits), model.grads()))
    assert len(on.runner.bounds) == 3  # two chunks, on two layer copies
    (l_on, dx_on, g_on), (l_off, dx_off, g_off) = results
    np.testing.assert_allclose(l_on, l_off, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx_on, dx_off, rtol=1e-11, atol=1e-13)
    for key in g_off:
        np.testing.assert_allclose(g_on[key], g_off[key], rtol=1e-11, atol=1e-12, err_msg=key)


def test_the_environment_variable_and_the_argument(monkeypatch):
    config = {"input_shape": list(SMALL[0]), "layers": SMALL[1]}
    monkeypatch.setenv("CNNCLI_SPEEDUPS", "off")
    assert not speedups_on()
    plain = build_model(config)
    assert plain.run_order == list(range(len(plain.layers)))
    assert type(plain.runner) is WholeBatch and plain.layers[0].splitter is SERIAL
    fast = build_model(config, speedups=True)  # the argument wins over the variable
    assert fast.run_order != plain.run_order and fast.layers[0].splitter is THREADED
    monkeypatch.setenv("CNNCLI_SPEEDUPS", "on")
    assert speedups_on() and not speedups_on(False)
    assert build_model(config).layers[0].splitter is THREADED
    monkeypatch.delenv("CNNCLI_SPEEDUPS")
    assert speedups_on()
    monkeypatch.setenv("CNNCLI_SPEEDUPS", "fast")
    with pytest.raises(ConfigError, match="^CNNCLI_SPEEDUPS must be on or off, got 'fast'"):
        build_model(config)


def test_off_trains_in_one_process_and_checkpoints_load_plain(two_threads, monkeypatch,
                                                                tmp_path):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(thresholds, "PROCESS_MIN_MACS", 0)
    shape, entries = SMALL
    model = model_from_entries(shape, entries)
    assert plan_training(model, 64, speedups=False) is None
    assert model.layers[0].splitter is SERIAL
    split = plan_training(model, 64)
    try:
        assert split is not None and model.layers[0].splitter is THREADED
    finally:
        split.close()
    config = {"seed": 0, "model": {"input_shape": list(shape), "layers": entries}}
    save_checkpoint(tmp_path / "m.npz", config=config, model_state=model.state_dict())
    loaded = load_checkpoint(tmp_path / "m.npz")
    assert loaded.model().layers[0].splitter is THREADED
    assert loaded.model(speedups=False).layers[0].splitter is SERIAL
    monkeypatch.setenv("CNNCLI_SPEEDUPS", "fast")  # the switch's error, not the file's
    with pytest.raises(ConfigError, match="^CNNCLI_SPEEDUPS must be on or off"):
        loaded.model()


def test_a_bad_switch_is_one_line_and_exit_2(tmp_path, monkeypatch):
    path = tmp_path / "tiny.yaml"
    path.write_text("model:\n  input_shape: [1, 8, 8]\n  layers:\n    - {type: flatten}\n"
                    "    - {type: dense, units: 3}\n")
    monkeypatch.setenv("CNNCLI_SPEEDUPS", "fast")
    result = CliRunner().invoke(main, ["bench", str(path), "--steps", "1", "--warmup", "0"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "cnncli: error: CNNCLI_SPEEDUPS must be on or off, got 'fast' (unset it, or set "
        "CNNCLI_SPEEDUPS=off for the plain math)"]


def test_convs_share_one_scratch_pool_and_agree_to_rounding(two_threads):
    # Two convs of one shape: with the plan, their one-call arrays (rebuilt im2col pieces,
    # padded and im2col'd gradients) are one set in one pool; the numbers do not change.
    from cnncli.nn.kernels import SharedScratch

    same = ((8, 16, 16), [
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1,
         "activation": "relu"},
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1,
         "activation": "relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 3}])
    on, off = _pair(same, np.float32)
    convs = [layer for layer in on.layers if hasattr(layer, "use_scratch")]
    assert isinstance(convs[0].scratch, SharedScratch) and convs[0].scratch is convs[1].scratch
    assert all(layer.scratch is layer._buffers for layer in off.layers
               if hasattr(layer, "use_scratch"))
    x, dlogits = _batch(on, 64, np.float32)
    for _ in range(2):  # the second pass reuses what the first left in the pool
        got, want = _train_pass(on, x, dlogits), _train_pass(off, x, dlogits)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-5)
        for key in want[2]:
            np.testing.assert_allclose(got[2][key], want[2][key], rtol=1e-4, atol=1e-5,
                                       err_msg=key)
    pool = convs[0].scratch._arrays
    assert pool and len(pool) == len({role for role, _, _ in pool})  # one set


@pytest.mark.parametrize("out_channels", [4, 6])      # 6: weight rows padded to 8 as well
@pytest.mark.parametrize("limit", [1, 1 << 30])       # row pieces (a tail among them), one piece
def test_a_folded_bias_gives_the_bias_and_its_gradient_to_rounding(out_channels, limit,
                                                                  monkeypatch):
    """[W | b] times im2col with a row of ones: the same outputs and gradients as the bias
    added and summed on their own, whatever another layer left in the shared piece's row."""
    from cnncli.nn.layers.base import to_internal
    from cnncli.nn.layers.conv import Conv2d
    from cnncli.parallel.plan import ThreadSplitter

    monkeypatch.setattr(ThreadSplitter, "im2col_max_bytes", limit)
    rng = np.random.default_rng(7)
    x = to_internal(rng.standard_normal((3, 2, 7, 7)))
    bias = rng.standard_normal(out_channels)
    results = []
    for fold in (True, False):
        monkeypatch.setattr(ThreadSplitter, "fold_bias", fold)
        layer = Conv2d(out_channels, 3, padding=1)
        layer.build((2, 7, 7), np.random.default_rng(0), np.float64)
        layer.params["bias"][...] = bias
        layer.splitter = ThreadSplitter()
        for _ in range(2):  # the second step finds its pieces' last rows overwritten
            layer.zero_grad()
            y = layer.forward(x.copy(), train=True)
            dx = layer.backward(np.random.default_rng(8).standard_normal(y.shape))
            for role, piece in layer._buffers._arrays.items():
                if role.startswith("cols"):  # as another layer's piece of this shape might
                    piece[-1] = 5.0
        assert layer._fold is fold
        results.append((y, dx, {k: v.copy() for k, v in layer.grads.items()}))
    (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y1, y2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-12, atol=1e-12)
    for key in g2:
        np.testing.assert_allclose(g1[key], g2[key], rtol=1e-12, atol=1e-12, err_msg=key)
