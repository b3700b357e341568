"""The memory guard: one estimate (nn/memory.py), the machine's available memory, and the
refusals of train, build_model, bench and inference before anything big is allocated."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cnncli.nn.memory as memory
from cnncli import build_model
from cnncli.cli.app import main
from cnncli.config import check_config, check_text
from cnncli.data.footprint import dataset_bytes
from cnncli.errors import ConfigError, MemoryLimitError
from cnncli.inspect.summary import summarize
from cnncli.nn.memory import USABLE_FRACTION, available_memory, format_bytes, parse_size
from cnncli.nn.model import model_from_entries
from cnncli.training.evaluate import evaluate
from cnncli.training.memory import inference_batch_size
from cnncli.training.optim import make_optimizer
from cnncli.training.trainer import Trainer, train_step, with_overrides

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
DIGITS = CONFIGS / "digits.yaml"
DIGITS_NPZ = Path(__file__).resolve().parent.parent / "data" / "digits.npz"

# fc1 holds 64 * 2e9 + 2e9 weights: 484 GiB as float32, a training step about 2.5 TiB.
HUGE = """name: huge
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: flatten}
    - {type: dense, name: fc1, units: 2000000000}
    - {type: dense, name: out, units: 10}
train:
  batch_size: 64
"""


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    return result


@pytest.fixture
def huge(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(HUGE)
    return path


@pytest.fixture
def plenty(monkeypatch):
    """A machine with 64 GiB available, whatever this one has."""
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "64G")


# ---------------------------------------------------------------- refusals

def test_train_refuses_a_terabyte_dense_layer_before_allocating(huge, tmp_path, plenty):
    out = tmp_path / "run"
    result = run("train", huge, "--out", out)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert line.count("\n") == 0 and line.startswith(f"cnncli: error: {huge}:")
    assert "needs about 2.5 TiB" in line and "but 64.0 GiB is available" in line
    assert "weights 558.8 GiB" in line and "activations for batch 64" in line
    assert "shrink layer 2 'fc1' (dense) (the largest layer: 484.3 GiB of weights" in line
    assert not out.exists()


def test_summary_shows_the_estimate_without_allocating(huge, plenty):
    tracemalloc.start()
    result = run("summary", huge, "--json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.exit_code == 0
    assert peak < 50 * 2**20     # the weights alone would be 484 GiB
    memory_json = json.loads(result.stdout)["memory"]
    assert memory_json["params_bytes"] == (64 * 2 * 10**9 + 2 * 10**9 + 2 * 10**10 + 10) * 4
    assert "a training step at batch size 1 needs about 1.1 TiB but 64.0 GiB is available" \
        in result.stderr


def test_build_model_refuses_weights_that_do_not_fit(huge, plenty):
    with pytest.raises(MemoryLimitError, match=r"this model needs about 1\.1 TiB \(weights "
                                               r"558\.8 GiB, gradients 558\.8 GiB\)"):
        build_model(str(huge))


def test_a_normal_config_under_a_low_limit_is_refused_with_the_right_numbers(monkeypatch,
                                                                           tmp_path):
    checked = check_config(DIGITS)
    run_config = checked.run                  # batch 32, adam
    step = summarize(checked, batch_size=32)
    x = np.load(DIGITS_NPZ)
    data = (len(x["x_train"]) + len(x["x_test"])) * 64 * (4 + 1)   # float32 + stored uint8
    per_sample = summarize(checked, batch_size=1).memory["forward_backward_bytes"]
    fixed = step.memory["total_bytes"] - step.memory["forward_backward_bytes"] + data
    limit = int((fixed + 10.5 * per_sample) / USABLE_FRACTION)    # room for 10 samples
    monkeypatch.setenv(memory.LIMIT_VARIABLE, str(limit))
    with pytest.raises(MemoryLimitError) as caught:
        Trainer(run_config, tmp_path / "run")
    message = str(caught.value)
    assert f"needs about {format_bytes(step.memory['total_bytes'] + data)} (" in message
    assert f"data {format_bytes(data)}" in message
    assert f"but {format_bytes(limit)} is available" in message
    assert "; lower train.batch_size (32) to 10 or less or shrink layer 5 'fc1'" in message
    assert caught.value.exit_code == 1 and caught.value.key == "batch_size"
    assert not (tmp_path / "run").exists()
    Trainer(with_overrides(run_config, batch_size=10), tmp_path / "ok")   # the fix fits


def test_bench_names_its_flag(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1M")
    result = run("bench", CONFIGS / "lenet5.yaml", "--steps", 1, "--warmup", 0)
    assert result.exit_code == 1
    assert "bench needs about" in result.stderr
    assert "lower --batch-size 64 to " in result.stderr


def test_inference_halves_its_batch_until_it_fits(monkeypatch):
    model = model_from_entries((1, 8, 8), [
        {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "flatten"}, {"type": "dense", "units": 3}], seed=0)
    x = np.random.default_rng(0).standard_normal((300, 1, 8, 8), dtype=np.float32)
    y = np.arange(300) % 3
    full = evaluate(model, x, y, ["a", "b", "c"])
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "300K")   # 41 images
    per_image = (64 + 512 + 512 + 3 + 9 * 64) * 4       # input, conv, flatten, dense, im2col
    assert inference_batch_size(model, 256) == 32
    assert 32 * per_image <= USABLE_FRACTION * 300 * 1024 < 64 * per_image
    assert evaluate(model, x, y, ["a", "b", "c"]) == full
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1K")
    with pytest.raises(MemoryLimitError, match="inference of one image needs about"):
        inference_batch_size(model, 256)


# ---------------------------------------------------------------- the estimate vs reality

@pytest.mark.parametrize("config, batch_size", [("digits.yaml", 32), ("lenet5.yaml", 8)])
def test_the_estimate_is_within_a_factor_two_of_the_measured_peak(config, batch_size):
    """docs/train.md promises: a training step's NumPy peak (tracemalloc, weights built inside
    the trace) is between half and twice the estimate."""
    checked = check_config(CONFIGS / config)
    estimate = summarize(checked, batch_size=batch_size).memory["total_bytes"]
    run_config = checked.run
    tracemalloc.start()
    model = model_from_entries(run_config.model.input_shape, run_config.model.entries())
    optimizer = make_optimizer(run_config.train)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *run_config.model.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    for _ in range(2):          # the second step has the optimizer state too
        train_step(model, optimizer, x, y)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert 0.5 <= peak / estimate <= 2.0, (peak, estimate)


# ---------------------------------------------------------------- available memory

@pytest.mark.parametrize("text, expected", [("1000", 1000), ("2K", 2048), ("1.5G", 3 * 2**29),
                                            ("3m", 3 * 2**20), ("1 GiB", 2**30), ("1T", 2**40)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_the_limit_variable_overrides_and_off_disables(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "5M")
    assert available_memory() == 5 * 2**20
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "off")
    assert available_memory() is None
    memory.check_memory(memory.MemoryEstimate(1, 2**60, 0, 0, 0, 0, 0))   # no limit: passes
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "lots")
    with pytest.raises(ConfigError, match="CNNCLI_MEMORY_LIMIT must be a number of bytes"):
        available_memory()


def test_a_bad_limit_is_bad_input_exit_2(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "-3")
    result = run("train", DIGITS, "--epochs", 1)
    assert result.exit_code == 2 and "CNNCLI_MEMORY_LIMIT must be" in result.stderr


def test_available_memory_is_the_smaller_of_the_machine_and_the_cgroup(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_VARIABLE, raising=False)
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 8 * 2**30)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 2 * 2**30)
    assert available_memory() == 2 * 2**30
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert available_memory() == 8 * 2**30


def test_the_cgroup_room_is_its_limit_minus_its_usage(monkeypatch, tmp_path):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text("73741824\n")
    files = {"/sys/fs/cgroup/memory.max": tmp_path / "memory.max",
             "/sys/fs/cgroup/memory.current": tmp_path / "memory.current"}
    monkeypatch.setattr(memory, "_read_int", lambda p: int(files[p].read_text())
                        if p in files else None)
    assert memory._cgroup_room() == 10**9


def test_meminfo_is_read_on_linux():
    if not Path("/proc/meminfo").exists():
        pytest.skip("no /proc/meminfo")
    assert memory._meminfo_available() > 0


# ---------------------------------------------------------------- dataset sizes

def test_dataset_bytes_from_npz_headers(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((50, 3, 4, 4), np.float64), y_train=np.zeros(50, int),
             x_test=np.zeros((7, 3, 4, 4), np.float64), y_test=np.zeros(7, int))
    data = check_text(f"model: {{input_shape: [3, 4, 4], layers: [{{type: flatten}}, "
                      f"{{type: dense, units: 2}}]}}\ndata: {{path: {path}}}\n").run.data
    assert dataset_bytes(data, (3, 4, 4)) == 57 * 48 * (4 + 8)


def test_dataset_bytes_from_idx_headers_and_image_folders(tmp_path):
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(bytes([0, 0, 8, 3]) + (20).to_bytes(4, "big") + (5).to_bytes(4, "big")
                       + (5).to_bytes(4, "big") + bytes(500))
    folder = tmp_path / "pictures"
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            (folder / name / f"{i}.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    for path, count in ((images, 20), (folder, 6)):
        data = check_text(f"model: {{input_shape: [1, 5, 5], layers: [{{type: flatten}}, "
                          f"{{type: dense, units: 2}}]}}\ndata: {{path: {path}}}\n").run.data
        assert dataset_bytes(data, (1, 5, 5)) == count * 25 * 5
    # a streamed image folder holds its prefetch queue (4 batches ahead + 2), not its images
    assert dataset_bytes(data, (1, 5, 5), batch_size=8) == (4 + 2) * 8 * 25 * 5
    (folder / "cat" / "3.png").write_bytes(b"")
    assert dataset_bytes(data, (1, 5, 5), batch_size=8) == (4 + 2) * 8 * 25 * 5


def test_an_unreadable_source_counts_zero(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"PK not a zip")
    data = check_text(f"model: {{input_shape: [1, 5, 5], layers: [{{type: flatten}}, "
                      f"{{type: dense, units: 2}}]}}\n"
                      f"data: {{path: {tmp_path / 'broken.npz'}}}\n").run.data
    assert dataset_bytes(data, (1, 5, 5)) == 0


# ---------------------------------------------------------------- the documented examples
