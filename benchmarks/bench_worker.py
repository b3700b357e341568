"""One timed run of one framework, in its own process; prints a JSON line.

Used by compare_torch.py, which starts it once per (framework, network, batch size) so
that neither framework shares an interpreter, allocator or thread pool with the other.

    python bench_worker.py --framework cnncli|torch --config configs/lenet5.yaml
        --batch-size 64 --steps 30 --warmup 5 --threads 2

The torch side needs PyTorch: ``pip install torch==2.13.0`` (pinned; the figures in
RESULTS.md are for that version). It builds the network from the same YAML config with
torch.nn (lazy layers infer the input sizes; a config with blocks or ``from:`` runs as a graph
of its flat layer list, read from the YAML by this script) and never imports cnncli; the
cnncli side never imports torch. The thread variables must be set by the parent before this
process starts.

Memory: ``step_peak_rss_mb`` is the rise of the resident set during the training steps over
the resident set just before them (the kernel's high-water mark is reset via
/proc/self/clear_refs first), so library and interpreter size do not count;
``process_peak_rss_mb`` is the whole process's peak (ru_maxrss). Where cnncli trains each
batch's second half in a worker process, the worker's rise and peak are added to both, less
the block of memory the two share (both resident sets count its pages; it is there once).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import time

import numpy as np
import yaml
from gemm_peak import blas_kernel, blas_variables, cpu_model


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux only); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _timed(fn, steps: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- cnncli

def cnncli_runner(config: dict, x: np.ndarray, y: np.ndarray, threads: int):
    from cnncli import build_model
    from cnncli.parallel.plan import plan_training, wait_for_inference_worker
    from cnncli.training.optim import SGD
    from cnncli.training.trainer import train_step

    model = build_model(config)
    optimizer = SGD(lr=0.01, momentum=0.9)
    split = plan_training(model, len(x))  # as cnncli train runs it: maybe a worker process
    trained = split or model

    def train():
        train_step(trained, optimizer, x, y)

    started = []

    def infer():
        model.forward(x, train=False)
        if not started:  # its first batch may start a worker process: time it once it runs
            started.append(wait_for_inference_worker(model))

    infer.started = started
    return train, infer, split


# ---------------------------------------------------------------- torch

def torch_layers(entry: dict) -> list:
    """torch.nn modules for one cnncli layer entry (the types the benchmarks use), then its
    ``activation:``."""
    import torch.nn as nn

    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU,
            "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
    mods = []
    e = dict(entry)
    kind = e.pop("type")
    e.pop("name", None)
    e.pop("from", None)
    act = e.pop("activation", None)
    if kind == "conv2d":
        mods.append(nn.LazyConv2d(
            e.pop("out_channels", e.pop("filters", None)), e.pop("kernel_size"),
            stride=e.pop("stride", 1), padding=e.pop("padding", 0),
            dilation=e.pop("dilation", 1), groups=e.pop("groups", 1),
            bias=e.pop("bias", True)))
    elif kind in ("maxpool2d", "avgpool2d"):
        cls = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        mods.append(cls(e.pop("kernel_size"), stride=e.pop("stride", None),
                        padding=e.pop("padding", 0), ceil_mode=e.pop("ceil_mode", False)))
    elif kind == "flatten":
        mods.append(nn.Flatten())
    elif kind in ("global_avg_pool2d", "global_average_pooling2d"):
        mods.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    elif kind in ("dense", "linear"):
        mods.append(nn.LazyLinear(e.pop("units", e.pop("out_features", None)),
                                  bias=e.pop("bias", True)))
    elif kind == "dropout":
        mods.append(nn.Dropout(e.pop("p", 0.5)))
    elif kind in ("batchnorm2d", "batch_norm2d"):
        mods.append(nn.LazyBatchNorm2d())
    elif kind in ("add", "concat"):
        pass  # torch_net's graph merges the inputs; only the activation is a module
    elif kind in acts:
        mods.append(acts[kind]())
    else:
        raise SystemExit(f"bench_worker: layer type {kind!r} has no torch equivalent here")
    if e:
        raise SystemExit(f"bench_worker: {kind} keys {sorted(e)} not mapped to torch")
    if act:
        mods.append(acts[act]())
    return mods


def _substitute(value, params: dict):
    """A block's ``$name`` values replaced by its parameters."""
    if isinstance(value, str) and value.startswith("$"):
        return params[value[1:]]
    if isinstance(value, list):
        return [_substitute(v, params) for v in value]
    return value


def flat_entries(layers: list, blocks: dict, source, params: dict, out: list):
    """Append the entries of ``layers`` (blocks expanded, ``$params`` substituted) to ``out``,
    each with ``from``: indices into ``out`` or "input"; returns the last one's index.

    ``source`` is what ``input`` means here (the enclosing block's input). The issue 13
    syntax, read independently of cnncli so that the torch side checks it, not copies it."""
    named, done = {}, []  # this scope's names and the outputs of its entries so far
    for raw in layers:
        entry = {key: _substitute(value, params) for key, value in raw.items()}
        wanted = entry.pop("from", -1)
        refs = []
        for ref in wanted if isinstance(wanted, list) else [wanted]:
            if ref == "input":
                refs.append(source)
            elif isinstance(ref, int):
                refs.append(([source] + done)[len(done) + 1 + ref])
            else:
                refs.append(named[ref])
        if entry["type"] in blocks:
            block = blocks[entry["type"]]
            values = {**(block.get("params") or {}),
                      **{k: v for k, v in entry.items() if k not in ("type", "name", "repeat")}}
            last = refs[0]
            for _ in range(entry.get("repeat", 1)):
                last = flat_entries(block["layers"], blocks, last, values, out)
        else:
            out.append({**entry, "from": refs})
            last = len(out) - 1
        if "name" in entry:
            named[entry["name"]] = last
        done.append(last)
    return done[-1]


def torch_net(config: dict):
    """A torch.nn module for a cnncli config's model: a Sequential for a chain of layers, else a
    graph that runs the flat entries in order. Lazy layers infer the input sizes."""
    import torch
    import torch.nn as nn

    model = config["model"]
    if "blocks" not in model and not any("from" in entry for entry in model["layers"]):
        return nn.Sequential(*[m for entry in model["layers"] for m in torch_layers(entry)])
    entries: list = []
    flat_entries(model["layers"], model.get("blocks") or {}, "input", {}, entries)

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.sources = [entry["from"] for entry in entries]
            self.merges = [entry["type"] for entry in entries]
            self.steps = nn.ModuleList(nn.ModuleList(torch_layers(e)) for e in entries)

        def forward(self, x):
            outputs = []
            for refs, kind, modules in zip(self.sources, self.merges, self.steps, strict=True):
                inputs = [x if ref == "input" else outputs[ref] for ref in refs]
                h = torch.cat(inputs, dim=1) if kind == "concat" else inputs[0]
                for other in inputs[1:] if kind == "add" else []:
                    h = h + other
                for module in modules:
                    h = module(h)
                outputs.append(h)
            return outputs[-1]

    return Graph()


def torch_runner(config: dict, x: np.ndarray, y: np.ndarray, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch_net(config)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        net(xt[:1])  # materialise the lazy layers
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def train():
        net.train()
        optimizer.zero_grad(set_to_none=True)
        logits = net(xt)
        loss = F.cross_entropy(logits, yt)
        loss.backward()
        optimizer.step()
        loss.item()

    def infer():
        net.eval()
        with torch.inference_mode():
            net(xt)

    return train, infer, None


def torch_blas() -> str:
    """The BLAS torch was built with and the CPU kernels it picked (e.g. MKL, AVX512)."""
    import torch

    info = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    return (f"torch {torch.__version__}: {info.group(1) if info else 'blas unknown'}, "
            f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; "
            f"numpy: {blas_kernel()}")


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--framework", choices=("cnncli", "torch"), required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    with open(args.config) as fh:
        config = yaml.safe_load(fh)
    rng = np.random.default_rng(0)
    shape = tuple(config["model"]["input_shape"])
    classes = config["model"]["layers"][-1].get("units", 10)
    x = rng.standard_normal((args.batch_size,) + shape, dtype=np.float32)
    y = rng.integers(0, classes, size=args.batch_size)

    runner = cnncli_runner if args.framework == "cnncli" else torch_runner
    train, infer, split = runner(config, x, y, args.threads)

    # cnncli may train each batch's second half in a worker process: its memory counts too.
    worker_base = split.worker_memory_mb()[0] if split is not None else 0.0
    if split is not None:
        split.reset_worker_peak()
    base_kb = _status_kb("VmRSS")
    reset = _reset_peak_rss()
    train_times = _timed(train, args.steps, args.warmup)
    step_peak_kb = _status_kb("VmHWM") if reset else None
    worker_peak = split.worker_memory_mb()[1] - split.shared_mb if split is not None else 0.0
    if split is not None:
        split.close()
    infer_times = _timed(infer, args.steps, args.warmup)

    train_s, infer_s = statistics.median(train_times), statistics.median(infer_times)
    print(json.dumps({
        "framework": args.framework, "config": args.config, "batch_size": args.batch_size,
        "train_images_per_s": args.batch_size / train_s,
        "infer_images_per_s": args.batch_size / infer_s,
        "step_peak_rss_mb": (None if step_peak_kb is None or base_kb is None
                             else (step_peak_kb - base_kb) / 1024 + worker_peak - worker_base),
        "process_peak_rss_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                                + worker_peak),
        "worker_process": split is not None,
        "inference_worker": any(getattr(infer, "started", [])),
        "cpu": cpu_model(),
        "blas": blas_kernel() if args.framework == "cnncli" else torch_blas(),
        "blas_variables": blas_variables(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }))


if __name__ == "__main__":
    main()
