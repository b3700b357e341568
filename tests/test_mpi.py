"""Data-parallel training over MPI ranks (cnncli/parallel/mpi.py).

In-process tests stand two threads in for two ranks (``ThreadWorld``: the same exchanges
through a barrier), so the slicing, the synchronised batch norm, the gradient sums and
rank 0's sole writes are checked everywhere. The tests marked ``needs_mpi`` run real ranks
under ``mpiexec`` (the [mpi] extra): equality with one process, bitwise repeats, resume on
another number of ranks, Ctrl-C, and a rank that hangs or is killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cnncli.cli import main
from cnncli.errors import ConfigError
from cnncli.nn.model import model_from_entries
from cnncli.parallel import MPI_RANK_VARS, MPI_SIZE_VARS, mpi, mpi_launched
from cnncli.parallel.plan import apply_plan
from cnncli.training.checkpoint import load_checkpoint
from cnncli.training.optim import SGD
from cnncli.training.trainer import train, train_step

SHAPE = (2, 6, 6)
LAYERS = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.3},
    {"type": "dense", "units": 8},
    {"type": "batchnorm1d"},
    {"type": "relu"},
    {"type": "dense", "units": 5},
]
CONFIG = """\
name: tiny
seed: 3
model:
  input_shape: [1, 8, 8]
  layers:
    - {type: conv2d, name: conv1, out_channels: 8, kernel_size: 3, padding: 1}
    - {type: batchnorm2d, name: bn1}
    - {type: relu}
    - {type: maxpool2d, kernel_size: 2}
    - {type: flatten}
    - {type: dropout, p: 0.3}
    - {type: dense, name: fc1, units: 32}
    - {type: batchnorm1d, name: bn2}
    - {type: relu}
    - {type: dense, name: out, units: 10}
data:
  dataset: digits
  val_split: 0.1
  normalize: scale
  augment: {random_crop: 1, horizontal_flip: true}
train:
  epochs: 1
  batch_size: 33
  optimizer: sgd
  momentum: 0.9
  lr: 0.05
"""


class ThreadWorld(mpi.World):
    """``mpi.World``'s exchanges between threads of this process (one per rank)."""

    def __init__(self, rank: int, shared: dict):  # no communicator: gather by hand
        self.rank, self.size = rank, shared["size"]
        self.shared = shared

    def gather(self, array):
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = np.array(array, copy=True)
        barrier.wait()
        out = np.stack(slots)
        barrier.wait()  # nobody overwrites a slot before everyone has read them all
        return out


def thread_worlds(size: int) -> list[ThreadWorld]:
    shared = {"size": size, "slots": [None] * size, "barrier": threading.Barrier(size, timeout=60)}
    return [ThreadWorld(rank, shared) for rank in range(size)]


def on_threads(size: int, work) -> list:
    """``work(world)`` on ``size`` threads, one ThreadWorld each; their results in rank order."""
    results, errors = [None] * size, []

    def run(world):
        try:
            results[world.rank] = work(world)
        except BaseException as err:  # noqa: BLE001 (re-raised below)
            errors.append(err)
            world.shared["barrier"].abort()

    workers = [threading.Thread(target=run, args=(w,)) for w in thread_worlds(size)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return results


def _model():
    return apply_plan(model_from_entries(SHAPE, LAYERS, seed=5))


def _relative(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


# ---------------------------------------------------------------- detection and the pieces

@pytest.mark.parametrize("env, launched", [
    ({}, False),
    ({"PMI_SIZE": "2", "PMI_RANK": "0"}, True),
    ({"PMI_SIZE": "1", "PMI_RANK": "0"}, False),          # mpiexec -n 1: a plain run
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
    ({"PMIX_RANK": "0", "SLURM_NTASKS": "8"}, True),     # srun --mpi=pmix
    ({"PMIX_RANK": "0", "SLURM_NTASKS": "1"}, False),
])
def test_mpi_is_detected_from_the_launchers_environment(env, launched, monkeypatch):
    for var in (*MPI_SIZE_VARS, *MPI_RANK_VARS, "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert mpi_launched() is launched


def test_a_plain_run_does_not_import_mpi4py():
    code = ("import sys, cnncli.cli, cnncli.training.trainer; "
            "print('mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "PMIX"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    assert done.stdout.strip() == "False"


def test_slices_cover_the_batch_once_larger_first():
    for n in (2, 5, 32, 33):
        for size in (1, 2, 3, 4):
            bounds = mpi.slice_bounds(n, size)
            assert bounds[0] == 0 and bounds[-1] == n
            widths = np.diff(bounds)
            assert widths.max() - widths.min() <= 1 and (widths >= 0).all()


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_timeout_is_refused(value, monkeypatch):
    monkeypatch.setenv(mpi.TIMEOUT_VAR, value)
    with pytest.raises(ConfigError, match="CNNCLI_MPI_TIMEOUT must be a positive number"):
        mpi.exchange_timeout()


def test_ranks_without_the_extra_says_what_to_install(monkeypatch, tmp_path):
    for var in (*MPI_SIZE_VARS, *MPI_RANK_VARS):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py raises ImportError
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(main, ["train", str(config), "--ranks", "2"])
    assert result.exit_code == 2
    assert "pip install 'cnncli[mpi]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- two ranks on two threads

@pytest.mark.parametrize("n", [12, 13])
def test_a_step_on_two_ranks_is_the_whole_batch_step(n):
    """Sliced forward/backward with batch norm over the global batch, dropout masks of the
    whole batch and gradients summed over ranks: the one-process step to float32 rounding,
    and the very same weights on every rank."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n,) + SHAPE).astype(np.float32)
    y = rng.integers(0, 5, size=n)
    whole = _model()
    loss_whole, correct_whole = train_step(whole, SGD(lr=0.1, momentum=0.9), x, y)

    def step(world):
        model = _model()
        sliced = mpi.RankSliceModel(model, world)
        loss, correct = train_step(sliced, SGD(lr=0.1, momentum=0.9), x, y)
        sliced.close()
        return loss, correct, model

    results = on_threads(2, step)
    for loss, correct, model in results:
        assert loss == pytest.approx(loss_whole, rel=1e-6) and correct == correct_whole
        for (name, value, _), (_, expected, _) in zip(model.parameters(), whole.parameters(),
                                                      strict=True):
            assert _relative(expected, value) < 1e-5, name
        for layer, reference in zip(model.layers, whole.layers, strict=True):
            for key, value in layer.buffers.items():  # running statistics of the global batch
                np.testing.assert_allclose(value, reference.buffers[key], rtol=1e-5, atol=1e-7)
    for (_, a, _), (_, b, _) in zip(results[0][2].parameters(), results[1][2].parameters(),
                                    strict=True):
        assert np.array_equal(a, b)
    assert all(type(layer).batch_sums is layer.batch_sums for layer in results[0][2].layers
               if hasattr(layer, "batch_sums"))  # the hook is uninstalled after the step


def test_batch_norm_gradients_on_two_ranks_match_the_whole_batch():
    """The input gradient of a synchronised batch norm: the whole batch's, slice by slice."""
    from cnncli.nn.layers.norm import BatchNorm2d

    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 4, 10)).astype(np.float64)  # internal layout: batch last
    dy = rng.standard_normal(x.shape)
    whole = BatchNorm2d()
    whole.build((3, 4, 4), rng, np.float64)
    whole.params["weight"][:] = [0.5, 2.0, -1.0]
    whole.zero_grad()
    whole._forward(x, train=True)
    dx_whole = whole._backward(dy)

    def part(world):
        layer = BatchNorm2d()
        layer.build((3, 4, 4), rng, np.float64)
        layer.params["weight"][:] = [0.5, 2.0, -1.0]
        layer.zero_grad()
        layer.batch_sums = mpi.RankSums(world)
        lo, hi = (0, 4) if world.rank == 0 else (4, 10)
        y = layer._forward(x[..., lo:hi], train=True)
        return y, layer._backward(dy[..., lo:hi]), layer

    (y0, dx0, a), (y1, dx1, b) = on_threads(2, part)
    np.testing.assert_allclose(np.concatenate([dx0, dx1], axis=-1), dx_whole, rtol=1e-10,
                               atol=1e-12)
    for key in ("weight", "bias"):  # each rank's own part: the trainer sums them
        np.testing.assert_allclose(a.grads[key] + b.grads[key], whole.grads[key], rtol=1e-10)
    np.testing.assert_allclose(a.buffers["running_var"], whole.buffers["running_var"],
                               rtol=1e-12)


def test_training_on_two_ranks_follows_one_process_and_rank_0_alone_writes(tmp_path,
                                                                           monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    from cnncli.config import load_config

    alone = train(load_config(config), out_dir=tmp_path / "alone")
    local = threading.local()
    monkeypatch.setattr(mpi, "world", lambda: getattr(local, "world", None))

    def rank(world):
        local.world = world
        return train(load_config(config), out_dir=tmp_path / f"rank{world.rank}")

    runs = on_threads(2, rank)
    assert not (tmp_path / "rank1").exists()  # only rank 0 touched its run directory
    assert sorted(p.name for p in (tmp_path / "rank0").iterdir()) == \
        sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert runs[0].ranks == 2 and alone.ranks == 1
    assert runs[1].test is None and runs[0].test is not None
    for key in ("train_loss", "val_loss"):
        assert runs[0].metrics[0][key] == pytest.approx(alone.metrics[0][key], rel=1e-5)
    two = load_checkpoint(tmp_path / "rank0" / "last.npz").state
    one = load_checkpoint(tmp_path / "alone" / "last.npz").state
    for name, value in one.items():
        if value.dtype.kind == "f":
            assert _relative(value, two[name]) < 1e-5, name


# ---------------------------------------------------------------- real ranks under mpiexec

def _mpiexec() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return (shutil.which("mpiexec", path=os.path.dirname(sys.executable))
            or shutil.which("mpiexec"))


needs_mpi = pytest.mark.skipif(_mpiexec() is None,
                               reason="needs mpi4py and mpiexec: pip install 'cnncli[mpi]'")
RANK_START = ("import sys; sys.path[0] = {root!r}; from cnncli.cli import main; "
              "main(prog_name='cnncli')")
ROOT = str(Path(__file__).resolve().parents[1])


def _environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "PMIX"))}
    return {**env, "CNNCLI_THREADS": "1", **extra}


def _ranks(n: int, *args, folder: Path, timeout=240, **env) -> subprocess.CompletedProcess:
    command = [_mpiexec(), "-n", str(n), sys.executable, "-c", RANK_START.format(root=ROOT),
               "train", *args]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True,
                          timeout=timeout, env=_environment(**env))


def _cli(*args, folder: Path, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RANK_START.format(root=ROOT), "train", *args],
                          cwd=folder, capture_output=True, text=True, timeout=timeout,
                          env=_environment())


def _weights(path: Path) -> dict:
    state = load_checkpoint(path).state
    return {k: v for k, v in state.items() if v.dtype.kind == "f"}


@needs_mpi
def test_two_ranks_follow_one_process_and_repeat_bit_for_bit(tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    one = _cli("tiny.yaml", "--out", "one", folder=tmp_path)
    assert one.returncode == 0, one.stderr
    runs = [_ranks(2, "tiny.yaml", "--out", out, folder=tmp_path) for out in ("a", "b")]
    for run in runs:
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert lines[0].startswith("training tiny on 2 ranks: ")
        assert sum(line.startswith("epoch 1/1") for line in lines) == 1  # rank 0 alone
        assert run.stderr == ""
    alone, a, b = (_weights(tmp_path / d / "last.npz") for d in ("one", "a", "b"))
    for name, value in alone.items():
        if name.startswith("params/"):
            assert _relative(value, a[name]) < 1e-5, name
        assert np.array_equal(a[name], b[name]), name


@needs_mpi
def test_a_run_on_two_ranks_resumes_on_one_or_two(tmp_path):
    """On 1 rank: the 2-rank run's numbers to rounding; on 2 ranks: bit for bit."""
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    first = _ranks(2, "tiny.yaml", "--out", "split", folder=tmp_path)
    assert first.returncode == 0, first.stderr
    shutil.copytree(tmp_path / "split", tmp_path / "again")
    resumed = _cli("--resume", "split", "--epochs", "2", folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    again = _ranks(2, "--resume", "again", "--epochs", "2", folder=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("resuming tiny on 2 ranks: ")
    whole = _ranks(2, "tiny.yaml", "--out", "whole", "--epochs", "2", folder=tmp_path)
    assert whole.returncode == 0, whole.stderr
    split, two, straight = (_weights(tmp_path / d / "last.npz")
                            for d in ("split", "again", "whole"))
    for name, value in straight.items():
        if name.startswith("params/"):
            assert _relative(value, split[name]) < 1e-5, name
        assert np.array_equal(value, two[name]), name
    assert load_checkpoint(tmp_path / "split" / "last.npz").epoch == 2


def _rank_pid(parent: int, rank: int, deadline: float) -> int:
    """The pid of rank ``rank`` among the descendants of ``parent``."""
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                if f"PMI_RANK={rank}".encode() in environ and \
                        f"CNNCLI_TEST_PARENT={parent}".encode() in environ:
                    return int(entry.name)
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} did not start")


def _started(n: int, *args, folder: Path, **env) -> subprocess.Popen:
    command = [_mpiexec(), "-n", str(n), sys.executable, "-c", RANK_START.format(root=ROOT),
               "train", *args]
    marker = str(os.getpid()) + str(time.monotonic_ns())
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=_environment(CNNCLI_TEST_PARENT=marker, **env))
    process.marker = marker
    return process


def _wait_for_epoch(process: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("epoch "):
            return
        if not line and process.poll() is not None:
            break
    raise AssertionError("no epoch finished")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks in /proc")
@needs_mpi
@pytest.mark.parametrize("how", ["hang", "kill"])
def test_a_rank_that_hangs_or_dies_stops_the_run(how, tmp_path):
    """A stopped (SIGSTOP) rank: the others give up after CNNCLI_MPI_TIMEOUT with one line;
    a killed one: mpiexec stops the rest at once. Never a silent hang."""
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    process = _started(2, "tiny.yaml", "--out", "run", "--epochs", "200", folder=tmp_path,
                       CNNCLI_MPI_TIMEOUT="3")
    try:
        _wait_for_epoch(process)
        victim = _rank_pid(process.marker, 1, time.monotonic() + 30)
        os.kill(victim, signal.SIGSTOP if how == "hang" else signal.SIGKILL)
        started = time.monotonic()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert time.monotonic() - started < 30
    if how == "hang":
        errors = [line for line in stderr.splitlines() if line.startswith("cnncli: error:")]
        assert len(errors) == 1 and "no reply from the other ranks" in errors[0], stderr
    assert load_checkpoint(tmp_path / "run" / "last.npz").epoch >= 1  # intact


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds ranks in /proc")
@needs_mpi
def test_ctrl_c_under_mpiexec_saves_once_and_says_how_to_resume(tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    process = _started(2, "tiny.yaml", "--out", "run", "--epochs", "200", folder=tmp_path)
    try:
        _wait_for_epoch(process)
        process.send_signal(signal.SIGINT)  # mpiexec passes it on to every rank
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr.count("interrupted: state after epoch") == 1
    assert "resume with: cnncli train --resume run --epochs 200" in stderr
    saved = load_checkpoint(tmp_path / "run" / "last.npz")
    assert stderr.count(f"state after epoch {saved.epoch} saved") == 1


@needs_mpi
@pytest.mark.parametrize("sets, code, says", [
    (["--set", "train.lr=-1"], 2, "train.lr must be a finite number > 0"),
    (["--set", "train.lr=50.0", "--set", "train.momentum=0.99"], 1, "times its starting value"),
])
def test_an_error_every_rank_meets_is_told_once_by_rank_0(sets, code, says, tmp_path):
    (tmp_path / "tiny.yaml").write_text(CONFIG)
    done = _ranks(2, "tiny.yaml", "--out", "run", *sets, folder=tmp_path, timeout=60)
    assert done.returncode == code
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("cnncli: error:") and says in errors[0]


FOLLOWER_FAILS = """
import sys, time
sys.path[0] = {root!r}
import numpy as np
from cnncli.parallel import mpi
world = mpi.world()
if world.rank == 1:  # as the CLI does
    stopped = mpi.tell_rank_0("data/train.npy: cannot read it (input/output error)", 2)
    if stopped is None:
        print("rank 1 told it itself", file=sys.stderr)
    mpi.stop_now(5 if stopped is None else stopped)
time.sleep(0.5)  # rank 1's error waits for rank 0's next exchange, as in a real run
try:
    world.gather(np.zeros(3))
except mpi.RankFailed as err:
    print(err.exit_code, err, flush=True)
    mpi.stop_now(err.exit_code)
print("no error reached rank 0")
"""


@needs_mpi
def test_an_error_one_follower_meets_is_told_by_rank_0_naming_the_rank(tmp_path):
    """Deterministic, not a race: rank 0 receives the follower's error in its next exchange
    and tells it; the follower never prints it, and exits on rank 0's word (mpiexec does not
    always stop it)."""
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c",
                           FOLLOWER_FAILS.format(root=ROOT)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env=_environment(CNNCLI_MPI_TIMEOUT="30"))
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        "2 rank 1 of 2: data/train.npy: cannot read it (input/output error)"]
    assert "told it itself" not in done.stderr
