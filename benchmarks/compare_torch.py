"""cnncli vs PyTorch: training and inference images/s and step memory, interleaved rounds.

Needs PyTorch for the reference side: ``pip install torch==2.13.0`` (pinned: RESULTS.md
quotes that version) in the interpreter given by ``--torch-python``. Without torch there the
script prints a message and exits 0. cnncli runs under ``--cnncli-python``. Each measurement
is a fresh process (bench_worker.py); rounds alternate which framework goes first, so a busy
neighbour on a shared machine slows both alike. Both get the same thread count (``--threads``,
default 2): torch.set_num_threads (and OMP/MKL_NUM_THREADS) for torch; CNNCLI_THREADS for cnncli,
which keeps BLAS on one thread inside its own threads as it does by default (``--cnncli-blas``
gives the threads to OpenBLAS instead).

The networks: LeNet-5, CIFAR-small and ResNet-20 (configs/resnet20_cifar.yaml, always at
batch 64); one that the cnncli under test cannot build (a ResNet before branching networks)
is skipped with the reason on stderr.

One core: ``--threads 1 --taskset 0`` runs every worker under ``taskset -c 0`` with one
thread each (torch.set_num_threads(1); cnncli on one thread, BLAS too), so that a lead comes
from the kernels, not from splitting work over cores. The output starts with the CPU model,
each framework's BLAS and kernel (threadpoolctl's ``internal_api``/``architecture`` where it
is importable, else numpy.show_config) and the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE values the
workers saw; ``--unset-blas-vars`` removes those two from both frameworks' environment (in
this command only), for figures with the machine's defaults.

Beside the ratio of the medians, "per-round" is the median of each round's ratio (steadier
on a machine whose speed drifts).

``--baseline DIR`` also times the cnncli of another checkout (``git worktree add DIR <commit>``)
with that checkout's own bench_worker.py, in the same interleaved rounds, and adds its
images/s and this cnncli's ratio to it (of the medians, and the median of the per-round
ratios): a change's effect on speed, measured side by side.

    python benchmarks/compare_torch.py [--rounds 5] [--batch-sizes 32,64,128] [--markdown]
        [--baseline /tmp/base] [--threads 1 --taskset 0] [--unset-blas-vars]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKER = HERE / "bench_worker.py"
TORCH_VERSION = "2.13.0"
#: Variables that pick OpenBLAS's kernel and cache blocking on some machines.
BLAS_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
NETWORKS = {"LeNet-5": "configs/lenet5.yaml", "CIFAR-small": "configs/cifar_small.yaml",
            "ResNet-20": "configs/resnet20_cifar.yaml"}
#: Networks timed at these batch sizes only, whatever --batch-sizes says: a ResNet-20 training
#: step on CIFAR takes seconds, and 64 is the batch its comparisons usually quote.
FIXED_BATCH_SIZES = {"ResNet-20": [64]}


def torch_version(python: str) -> str | None:
    """torch.__version__ in that interpreter, or None if it cannot import torch."""
    proc = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def batch_sizes(net: str, args) -> list[int]:
    return FIXED_BATCH_SIZES.get(net, args.batch_sizes)


def cnncli_cannot_build(config: str, args) -> str | None:
    """Why the cnncli under test (or the baseline's) cannot build ``config``, or None: a
    ResNet-20 needs branching networks, which an older cnncli lacks."""
    probe = ("import sys; from cnncli.config import check_config; check_config(sys.argv[1])")
    for framework in ["cnncli"] + (["base"] if args.baseline else []):
        proc = subprocess.run([args.cnncli_python, "-c", probe, config], capture_output=True,
                              text=True, cwd=ROOT, env=worker_env(framework, args))
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no message"]
            return f"{'the baseline' if framework == 'base' else 'cnncli'}: {lines[-1]}"
    return None


def worker_env(framework: str, args) -> dict:
    """Both get ``args.threads`` threads. cnncli as it runs by default: its own threads with
    BLAS on one thread inside them (or, with --cnncli-blas, BLAS threads and no own threads)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CNNCLI_THREADS", "PYTHONPATH")}
    if framework == "base":
        env["PYTHONPATH"] = str(Path(args.baseline).resolve())
    blas = args.threads
    if framework in ("cnncli", "base") and not args.cnncli_blas:
        env["CNNCLI_THREADS"], blas = str(args.threads), 1
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(blas)
    if args.unset_blas_vars:
        for var in BLAS_KERNEL_VARS:
            env.pop(var, None)
    return env


def run_worker(python: str, framework: str, config: str, batch: int, args) -> dict:
    env = worker_env(framework, args)
    worker = WORKER if framework != "base" else Path(args.baseline) / "benchmarks" / WORKER.name
    cmd = [python, str(worker), "--framework", "torch" if framework == "torch" else "cnncli",
           "--config", config,
           "--batch-size", str(batch), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(args.threads)]
    if args.taskset is not None:
        cmd = ["taskset", "-c", args.taskset, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{framework} worker failed on {config} batch {batch}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def collect(args) -> dict:
    """{(network, batch, framework): [worker result per round]}."""
    results: dict = {}
    pythons = {"cnncli": args.cnncli_python, "torch": args.torch_python,
               "base": args.cnncli_python}
    frameworks = ["cnncli", "torch"] + (["base"] if args.baseline else [])
    for rnd in range(args.rounds):
        turn = rnd % len(frameworks)  # each goes first in turn
        order = frameworks[turn:] + frameworks[:turn]
        for net in args.networks:
            for batch in batch_sizes(net, args):
                for fw in order:
                    res = run_worker(pythons[fw], fw, NETWORKS[net], batch, args)
                    results.setdefault((net, batch, fw), []).append(res)
                    if args.verbose:
                        print(f"round {rnd + 1} {net} b{batch} {fw}: "
                              f"train {res['train_images_per_s']:.0f}/s "
                              f"infer {res['infer_images_per_s']:.0f}/s", file=sys.stderr)
    return results


def _stats(runs: list[dict], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), min(values), max(values)


def _per_round(results: dict, net: str, batch: int, other: str, key: str) -> float:
    """The median over rounds of cnncli's figure over ``other``'s in the same round. Runs of
    one round ran minutes apart at most: their ratios cancel most of a shared machine's
    drift, so this is steadier than the ratio of the medians."""
    ratios = [mine[key] / theirs[key] for mine, theirs in zip(
        results[(net, batch, "cnncli")], results[(net, batch, other)], strict=True)
        if mine.get(key) and theirs.get(key)]
    return statistics.median(ratios) if ratios else float("nan")


def rows(results: dict, args) -> list[list[str]]:
    out = []
    for net in args.networks:
        for mode, key in (("train", "train_images_per_s"), ("infer", "infer_images_per_s")):
            for batch in batch_sizes(net, args):
                ours = _stats(results[(net, batch, "cnncli")], key)
                ref = _stats(results[(net, batch, "torch")], key)
                row = [net, mode, str(batch), f"{ours[0]:.0f}", f"{ours[1]:.0f}-{ours[2]:.0f}",
                       f"{ref[0]:.0f}", f"{ref[1]:.0f}-{ref[2]:.0f}", f"{ours[0] / ref[0]:.2f}x",
                       f"{_per_round(results, net, batch, 'torch', key):.2f}x"]
                if args.baseline:
                    base = _stats(results[(net, batch, "base")], key)
                    row += [f"{base[0]:.0f}", f"{base[1]:.0f}-{base[2]:.0f}",
                            f"{ours[0] / base[0]:.2f}x",
                            f"{_per_round(results, net, batch, 'base', key):.2f}x"]
                out.append(row)
    return out


def memory_rows(results: dict, args) -> list[list[str]]:
    out = []
    for net in args.networks:
        for batch in batch_sizes(net, args):
            ours, ref = results[(net, batch, "cnncli")], results[(net, batch, "torch")]
            out.append([net, str(batch),
                        f"{_stats(ours, 'step_peak_rss_mb')[0]:.1f}",
                        f"{_stats(ref, 'step_peak_rss_mb')[0]:.1f}",
                        f"{_stats(ours, 'process_peak_rss_mb')[0]:.0f}",
                        f"{_stats(ref, 'process_peak_rss_mb')[0]:.0f}"])
    return out


def machine_lines(results: dict, args) -> str:
    """CPU, load, each framework's BLAS kernel and the OpenBLAS variables the workers saw."""
    first = {fw: runs[0] for (_, _, fw), runs in results.items()}
    cnncli = first["cnncli"]
    pinned = f"taskset -c {args.taskset}" if args.taskset is not None else "no taskset"
    lines = [f"CPU: {cnncli.get('cpu', 'unknown')}; {pinned}; load average after the runs "
             f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}"]
    for fw, res in first.items():
        lines.append(f"{fw}: BLAS {res.get('blas', 'unknown')}; "
                     f"{res.get('blas_variables', 'variables not recorded')}")
    return "\n".join(lines) + "\n"


def render(header: list[str], body: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=True)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cnncli-python", default=sys.executable,
                    help="the interpreter with cnncli installed (default: this one)")
    ap.add_argument("--torch-python", default=os.environ.get("CNNCLI_TORCH_PYTHON",
                                                             sys.executable),
                    help="an interpreter with torch==2.13.0 (default: $CNNCLI_TORCH_PYTHON, "
                         "else this one)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-sizes", default="32,64,128")
    ap.add_argument("--networks", default=",".join(NETWORKS),
                    help=f"comma-separated subset of {', '.join(NETWORKS)}")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per process")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--taskset", metavar="CPUS",
                    help="run every worker under 'taskset -c CPUS' (e.g. 0 with --threads 1)")
    ap.add_argument("--unset-blas-vars", action="store_true",
                    help=f"remove {' and '.join(BLAS_KERNEL_VARS)} from both frameworks' "
                         "environment")
    ap.add_argument("--cnncli-blas", action="store_true",
                    help="give cnncli's threads to BLAS instead of to cnncli's own splitting")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--baseline", metavar="DIR",
                    help="also time the cnncli checked out in DIR (its own bench_worker.py)")
    ap.add_argument("--save", metavar="JSON", help="also write every raw worker result here")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per run on stderr")
    args = ap.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.networks = [n for n in args.networks.split(",") if n]
    unknown = [n for n in args.networks if n not in NETWORKS]
    if unknown:
        raise SystemExit(f"unknown network {unknown[0]!r}; choose from {', '.join(NETWORKS)}")

    version = torch_version(args.torch_python)
    if version is None:
        print(f"compare_torch: skipped: {args.torch_python} cannot import torch "
              f"(pip install torch=={TORCH_VERSION}, or pass --torch-python)")
        return
    if not version.startswith(TORCH_VERSION):
        print(f"compare_torch: warning: torch {version}, the reference figures are for "
              f"{TORCH_VERSION}", file=sys.stderr)

    for net in list(args.networks):
        why = cnncli_cannot_build(NETWORKS[net], args)
        if why is not None:
            print(f"compare_torch: skipped {net}: {why}", file=sys.stderr)
            args.networks.remove(net)
    if not args.networks:
        print("compare_torch: no network left to time")
        return
    results = collect(args)
    if args.save:
        Path(args.save).write_text(json.dumps(
            [{"network": k[0], "batch": k[1], "framework": k[2], "runs": v}
             for k, v in results.items()], indent=1))
    print(machine_lines(results, args))
    how = "BLAS threads" if args.cnncli_blas else "its own threads, BLAS on one thread inside"
    print(f"images/s, median of {args.rounds} interleaved rounds (min-max), {args.steps} "
          f"steps each, {args.threads} threads each (cnncli: {how}); torch {version}\n")
    header = ["network", "mode", "batch", "cnncli", "range", "torch", "range", "cnncli/torch",
              "per-round"]
    if args.baseline:
        header += ["base", "range", "cnncli/base", "per-round"]
    print(render(header, rows(results, args), args.markdown))
    print("\nmemory of a training step, MB: rise of the resident set over the steps "
          "(step) and the whole process's peak (process)\n")
    print(render(["network", "batch", "cnncli step", "torch step", "cnncli process",
                  "torch process"], memory_rows(results, args), args.markdown))


if __name__ == "__main__":
    main()
