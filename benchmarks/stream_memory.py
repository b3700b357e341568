"""Peak memory and speed of training, streamed from disk against in memory.

    python benchmarks/stream_memory.py [--sizes 10000 100000] [--rounds 2]
        [--configs configs/lenet5.yaml configs/digits.yaml configs/dense_digits.yaml
                   configs/cifar_small.yaml configs/resnet20_cifar.yaml]
        [--loader-threads 1] [--timed-images N] [--work DIR]

For each config and size, writes that many random images of the config's input shape as a PNG
folder (10 class folders), packs it with `cnncli data pack` into an npy_dir and saves the same
images as an .npz; then trains one epoch of the config (its data section pointed at each source,
no validation split, its normalisation and augmentation kept) in a fresh process per run, the
sources interleaved and their order reversed every other round. The in-memory run and the
image folder with `data.cache: true` train two epochs, timed apart (the cache's first epoch
decodes and writes it, the second reads it); a later epoch's ratio is to in memory's later
epoch, the others' to in memory's first. Only the first N images of each epoch are timed when
--timed-images is given (the whole dataset is still read, listed and normalised as for a full
epoch, so the peak memory is the same; a first epoch of two runs to its end untimed).

Prints each source's peak RSS (the process's ru_maxrss), img/s (median of the rounds), its
ratio to in memory (median of the per-round ratios, with their range), the CPU time of the
whole process per image (every thread: the work, whatever share of the cores it got) and what
decoding an image cost on its own, and the load average. On a shared machine the process CPU
per image is the steadier figure: a process with more busy threads gets more of the cores, so
wall-clock ratios flatter the threaded loader. Streamed peaks should not grow with the dataset
beyond the prefetch queue (and, for an image folder, its list of file paths).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

CHILD = r"""
import json, resource, sys, time, yaml
from cnncli.data import decoding_cost
from cnncli.training.trainer import Callbacks, train

class Enough(Exception):
    pass

class Clock(Callbacks):
    # Wall and process CPU time (every thread) of each epoch's first `limit` images; the
    # epoch goes on untimed (a cache is complete only after a whole epoch).
    def __init__(self, limit, epochs):
        self.limit, self.epochs, self.timed = limit, epochs, []
    def on_start(self, run):
        self.run = run
    def on_epoch_start(self, epoch, epochs, num_batches, lr):
        self.epoch, self.images = epoch, 0
        self.wall, self.cpu = time.perf_counter(), time.process_time()
    def on_batch(self, batch, size, loss, correct):
        self.images += size
        if self.images >= self.limit and len(self.timed) < self.epoch:
            self.timed.append({"images": self.images,
                               "seconds": time.perf_counter() - self.wall,
                               "cpu": time.process_time() - self.cpu})
            if self.epoch == self.epochs:
                raise Enough

config = yaml.safe_load(open(sys.argv[1]))
data = config["data"]
keys = json.loads(sys.argv[4])
epochs = keys.pop("epochs", 1)
config["data"] = {"path": sys.argv[2], "val_split": 0.0, **keys,
                  **{k: data[k] for k in ("normalize", "augment") if k in data}}
config["train"]["epochs"] = epochs
config["train"].pop("lr_schedule", None)
clock = Clock(int(sys.argv[5]), epochs)
try:
    train(config, out_dir=sys.argv[3], overwrite=True, callbacks=clock)
except Enough:
    pass
cost = decoding_cost(clock.run.dataset)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps([dict(t, peak_mib=peak, decode_us=None if cost is None or i else cost * 1e6)
                  for i, t in enumerate(clock.timed)]))
"""

IN_MEMORY = "in memory (.npz)"
CACHED = "image folder, data.cache"
LATER = "later epoch"


def make_images(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
    """n random images of shape (C, H, W) as PNGs in 10 class folders, written in pieces."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    c, h, w = shape
    for label in range(10):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        pixels = rng.integers(0, 256, (count, h, w, c), dtype=np.uint8)
        for i in range(count):
            image = pixels[i, :, :, 0] if c == 1 else pixels[i]
            Image.fromarray(image).save(folder / str((start + i) % 10) / f"{start + i}.png")


def prepare(work: Path, n: int, shape: tuple[int, int, int]) -> dict[str, Path]:
    """The three copies of n images of ``shape``: PNG folder, npy_dir, .npz (made once)."""
    tag = f"{n}_{'x'.join(map(str, shape))}"
    folder, packed, npz = work / f"png_{tag}", work / f"npy_{tag}", work / f"mem_{tag}.npz"
    if not folder.exists():
        make_images(folder, n, shape)
    if not packed.exists():
        subprocess.run([sys.executable, "-m", "cnncli", "data", "pack", str(folder), str(packed),
                        "--channels", str(shape[0])], check=True, capture_output=True)
    if not npz.exists():
        arrays = {k: np.load(packed / f"{k}.npy") for k in ("x_train", "y_train")}
        np.savez(npz, **arrays, class_names=np.array([str(c) for c in range(10)]))
    return {"png": folder, "npy": packed, "npz": npz}


def epochs(config: str, data: Path, run: Path, data_keys: dict, limit: int) -> list[dict]:
    """One run in a fresh process (``data_keys["epochs"]`` epochs, default 1, into an emptied
    run directory): the first ``limit`` images of each epoch, timed."""
    shutil.rmtree(run, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, config, str(data), str(run),
                          json.dumps(data_keys), str(limit)], check=True, capture_output=True,
                         text=True)
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for result in results:
        result["img_s"] = result["images"] / result["seconds"]
        result["cpu_us"] = result["cpu"] / result["images"] * 1e6
    return results


def measure(config: str, files: dict[str, Path], run: Path, rounds: int,
            loader_threads: list[int], limit: int) -> dict[str, list[dict]]:
    """Each source's runs, interleaved: round r runs the sources in turn, reversed every other
    round, so a change in the machine's load falls on all of them. The cached image folder
    trains two epochs: its first (decoding, writing the cache) and second (reading it)."""
    sources = [(IN_MEMORY, files["npz"], {"epochs": 2}), ("npy_dir", files["npy"], {})]
    sources += [(f"image folder ({t} loader thread{'s' * (t > 1)})", files["png"],
                 {"loader_threads": t}) for t in loader_threads]
    sources += [(CACHED, files["png"], {"cache": True, "epochs": 2})]
    results: dict[str, list[dict]] = {}
    for r in range(rounds):
        for label, data, keys in (sources if r % 2 == 0 else sources[::-1]):
            timed = epochs(config, data, run, keys, limit)
            if len(timed) == 2:
                results.setdefault(f"{label}, first epoch", []).append(timed[0])
                results.setdefault(f"{label}, {LATER}", []).append(timed[1])
            else:
                results.setdefault(label, []).append(timed[0])
    return results


def report(name: str, n: int, results: dict[str, list[dict]]) -> None:
    """One table row per source; a later epoch is compared with in memory's later epoch (no
    start-up in either), every first epoch with in memory's first."""
    for label, runs in results.items():
        memory = results[f"{IN_MEMORY}, {LATER if label.endswith(LATER) else 'first epoch'}"]
        ratios = [run["img_s"] / mem["img_s"] for run, mem in zip(runs, memory, strict=True)]
        decode = [r["decode_us"] for r in runs if r["decode_us"] is not None]
        print(f"| {name} | {n} | {runs[0]['images']} | {label} | "
              f"{max(r['peak_mib'] for r in runs):.0f} | "
              f"{statistics.median(r['img_s'] for r in runs):.0f} | "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
              f"{statistics.median(r['cpu_us'] for r in runs):.0f} | "
              f"{f'{statistics.median(decode):.1f}' if decode else '-'} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    # The shipped configs with a dataset to train on (alexnet and resnet18 take 224x224
    # placeholders, "summary only"); resnet20_cifar's step is slow: --timed-images 1000.
    parser.add_argument("--configs", nargs="+", default=[
        "configs/lenet5.yaml", "configs/digits.yaml", "configs/dense_digits.yaml",
        "configs/cifar_small.yaml", "configs/resnet20_cifar.yaml"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loader-threads", type=int, nargs="+", default=[1])
    parser.add_argument("--timed-images", type=int, default=None,
                        help="time only the first N images of each epoch (default: all)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cnncli-stream-"))
    print(f"load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| config | images | timed | source | peak RSS MiB | img/s | img/s / in memory "
          "(range) | process CPU us/img | decoding CPU us/img |")
    print("|---|---:|---:|---|---:|---:|---|---:|---:|")
    for config in args.configs:
        spec = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        shape = tuple(int(s) for s in spec["model"]["input_shape"])
        for n in args.sizes:
            files = prepare(work, n, shape)
            results = measure(config, files, work / "run", args.rounds, args.loader_threads,
                              min(n, args.timed_images or n))
            report(spec.get("name", Path(config).stem), n, results)
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"(files in {work}; CNNCLI_THREADS={os.environ.get('CNNCLI_THREADS', 'default')})")


if __name__ == "__main__":
    main()
