"""`cnncli bench`: time a model's layers, training steps and inference on synthetic data."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click

from cnncli.cli.app import main
from cnncli.errors import CnncliError

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
REEXEC_GUARD = "CNNCLI_BENCH_REEXEC"


def _blas_limit(blas: int | None, threads: int | None):
    """A context that runs BLAS on ``blas`` threads (None: leave it as it is).

    OpenBLAS reads its thread count once, when NumPy loads it, and NumPy is loaded before any
    command runs. So: threadpoolctl changes it at run time if installed; otherwise the process
    re-executes itself with OPENBLAS_NUM_THREADS/OMP_NUM_THREADS set.
    """
    if blas is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        return threadpool_limits(limits=blas, user_api="blas")
    if os.environ.get(REEXEC_GUARD) == str(blas):
        return contextlib.nullcontext()  # this process was started with the variables set
    if "bench" not in sys.argv[1:]:
        raise CnncliError("--threads/--blas-threads need threadpoolctl when cnncli runs inside "
                          "another program", hint="pip install threadpoolctl, or set "
                          "OPENBLAS_NUM_THREADS before starting Python")
    for var in THREAD_VARS:
        os.environ[var] = str(blas)
    if threads is not None:
        os.environ["CNNCLI_THREADS"] = str(threads)
    os.environ[REEXEC_GUARD] = str(blas)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "cnncli", *sys.argv[1:]])
    raise AssertionError("unreachable")  # pragma: no cover


def _load_config(path: str) -> dict:
    """A YAML config, or the config stored in a checkpoint (.npz) or a run directory."""
    from cnncli.training.checkpoint import is_checkpoint, load_checkpoint

    if is_checkpoint(path):
        return load_checkpoint(path).config
    from cnncli.config.loader import load_config

    return load_config(path)


@main.command()
@click.argument("config", metavar="CONFIG_OR_CHECKPOINT")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per synthetic batch.")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Timed repetitions of each phase (medians are reported).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Untimed repetitions before each phase.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads to compute on: cnncli splits the work over them and keeps BLAS "
                   "on one thread inside them (default: cnncli's setting, all cores).")
@click.option("--blas-threads", type=click.IntRange(min=1), default=None,
              help="Give BLAS this many threads instead (default 1 with --threads).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench(config, batch_size, steps, warmup, threads, blas_threads, as_json):
    """Time each layer's forward/backward, training steps and inference on synthetic data.

    \b
    Examples:
      cnncli bench configs/lenet5.yaml
      cnncli bench runs/digits/best.npz --batch-size 32 --threads 1 --json
    """
    from cnncli import build_model
    from cnncli.inspect.bench import bench_model
    from cnncli.parallel import threads as cnncli_threads

    cfg = _load_config(config)
    before = cnncli_threads.get_threads()
    if threads is not None and blas_threads is None:
        blas_threads = 1
    with _blas_limit(blas_threads, threads):
        if threads is not None:
            cnncli_threads.set_threads(threads)
        try:
            model = build_model(cfg)
            result = bench_model(model, batch_size=batch_size, steps=steps, warmup=warmup)
        finally:
            cnncli_threads.set_threads(before)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_result(result, title=f"{cfg.get('name') or Path(config).stem}: batch "
                                    f"{batch_size}, median of {steps} steps")


def _gflops(value) -> str:
    return "" if value is None else f"{value:.1f}"


def _print_result(result, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    layer_total = sum(t.forward_ms + t.backward_ms for t in result.layers) or 1.0
    table = Table(title=title, title_justify="left")
    for col in ("layer", "type", "output"):
        table.add_column(col)
    for col in ("forward ms", "backward ms", "share", "fwd GFLOP/s", "bwd GFLOP/s"):
        table.add_column(col, justify="right")
    for t in result.layers:
        share = (t.forward_ms + t.backward_ms) / layer_total
        table.add_row(t.name, t.type, "x".join(map(str, t.output_shape)),
                      f"{t.forward_ms:.3f}", f"{t.backward_ms:.3f}", f"{100 * share:.1f}%",
                      _gflops(t.forward_gflops), _gflops(t.backward_gflops))
    console.print(table)
    for note in result.notes:
        console.print(note)
    threads = "default" if result.threads is None else str(result.threads)
    lines = [
        f"training step   {result.train_step_ms:8.2f} ms   {result.train_images_per_s:9.0f} "
        f"images/s  (forward + loss + backward + SGD update; steps took "
        f"{result.train_step_ms_min:.2f}-{result.train_step_ms_max:.2f} ms)",
        f"inference       {result.infer_batch_ms:8.2f} ms   {result.infer_images_per_s:9.0f} "
        "images/s",
        f"peak RSS        {result.peak_rss_mb:8.1f} MB   (getrusage ru_maxrss, whole process)",
        f"step NumPy peak {result.step_numpy_peak_mb:8.1f} MB   (tracemalloc, one training step)",
    ]
    if result.worker_peak_rss_mb is not None:
        lines.insert(3, f"worker peak RSS {result.worker_peak_rss_mb:8.1f} MB   (the process "
                        f"training each batch's second half)")
    if result.matmul_peak_gflops:
        every = result.matmul_peak_all_cores_gflops
        lines.append(f"matmul peak     {result.matmul_peak_gflops:8.1f} GFLOP/s  (float32 "
                     f"2048x2048, {threads} BLAS thread(s)"
                     + (f"; {every:.1f} on every core)" if every else ")"))
    lines.append(f"threads         {result.cnncli_threads} cnncli, {threads} BLAS")
    for line in lines:
        console.print(line)
