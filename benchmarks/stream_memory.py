"""Peak memory and speed of one training epoch, streamed from disk against in memory.

    python benchmarks/stream_memory.py [--sizes 10000 100000] [--config configs/lenet5.yaml]
                                       [--work DIR]

For each size, writes that many synthetic 28x28 images as a PNG folder, packs it with
`cnncli data pack` into an npy_dir and saves the same images as an .npz; then trains one epoch
of CONFIG (its data section replaced) on each in a fresh process and prints the process's peak
RSS and img/s. Streamed peaks should not grow with the dataset beyond the prefetch queue.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time, yaml
from cnncli.training.trainer import train
config = yaml.safe_load(open(sys.argv[1]))
config["data"] = {"path": sys.argv[2], "val_split": 0.0, "normalize": "standardize"}
config["train"]["epochs"] = 1
config["train"].pop("lr_schedule", None)
run = train(config, out_dir=sys.argv[3], overwrite=True)
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": run.metrics[0]["seconds"], "peak_mib": peak_kib / 1024}))
"""


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """n random 28x28 grey PNGs in 10 class folders, written in pieces (never all in memory)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(10):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    for start in range(0, n, 1000):
        count = min(1000, n - start)
        pixels = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        for i in range(count):
            Image.fromarray(pixels[i]).save(folder / str((start + i) % 10) / f"{start + i}.png")


def epoch(config: str, data: Path, run: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, config, str(data), str(run)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--config", default="configs/lenet5.yaml")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cnncli-stream-"))
    print(f"{'images':>8} {'source':<14} {'peak RSS MiB':>12} {'img/s':>8}")
    for n in args.sizes:
        folder, packed, npz = work / f"png{n}", work / f"npy{n}", work / f"mem{n}.npz"
        if not folder.exists():
            make_images(folder, n)
        if not packed.exists():
            subprocess.run([sys.executable, "-m", "cnncli", "data", "pack", str(folder),
                            str(packed)], check=True, capture_output=True)
        if not npz.exists():
            arrays = {k: np.load(packed / f"{k}.npy") for k in ("x_train", "y_train")}
            np.savez(npz, **arrays, class_names=np.array([str(c) for c in range(10)]))
        for label, data in (("in memory", npz), ("npy_dir", packed), ("image folder", folder)):
            result = epoch(args.config, data, work / "run")
            print(f"{n:>8} {label:<14} {result['peak_mib']:>12.0f} "
                  f"{n / result['seconds']:>8.0f}", flush=True)
    print(f"(files in {work}; CNNCLI_THREADS={os.environ.get('CNNCLI_THREADS', 'default')})")


if __name__ == "__main__":
    main()
