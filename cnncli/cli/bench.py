"""`cnncli bench`: time a model's layers, training steps and inference on synthetic data."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import click

from cnncli.cli.app import main, table_console
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
    from cnncli.inspect.sources import checked_source
    from cnncli.parallel import threads as cnncli_threads

    run = checked_source(config).run
    before = cnncli_threads.get_threads()
    if threads is not None and blas_threads is None:
        blas_threads = 1
    with _blas_limit(blas_threads, threads):
        if threads is not None:
            cnncli_threads.set_threads(threads)
        try:
            model = build_model(run)
            result = bench_model(model, batch_size=batch_size, steps=steps, warmup=warmup)
        finally:
            cnncli_threads.set_threads(before)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        _print_result(result, title=f"{run.name}: batch "
                                    f"{batch_size}, median of {steps} steps")


def _print_result(result, title: str) -> None:
    from cnncli.inspect.render import bench_lines, bench_table

    console = table_console()
    console.print(bench_table(result, title))
    for line in result.notes + bench_lines(result):
        console.print(line)
