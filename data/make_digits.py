"""Convert scikit-learn's bundled digits.csv.gz into data/digits.npz (NumPy only).

Usage: python data/make_digits.py [path/to/digits.csv.gz] [--out data/digits.npz]
Without a path, the file is located inside the installed scikit-learn package.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
from pathlib import Path

import numpy as np

N_TEST = 359
SEED = 0


def locate_sklearn_csv() -> Path:
    """Find sklearn/datasets/data/digits.csv.gz without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-learn is not installed; pass the path to digits.csv.gz")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if not path.is_file():
        raise SystemExit(f"{path} not found; pass the path to digits.csv.gz")
    return path


def read_digits(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 64 pixel values (0-16) then the label -> uint8 images (N, 8, 8), labels (N,)."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise SystemExit(f"{path}: expected 65 columns, got shape {table.shape}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"{path}: values out of range (pixels 0-16, labels 0-9)")
    return pixels.reshape(-1, 8, 8).astype(np.uint8), labels.astype(np.uint8)


def stratified_test_indices(labels: np.ndarray, n_test: int, seed: int) -> np.ndarray:
    """Pick n_test indices, each class in proportion to its size (largest remainder)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n_test / len(labels)
    take = np.floor(quota).astype(int)
    # Hand the leftover places to the classes with the largest fractional parts.
    leftover = n_test - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:leftover]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k]
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(picked))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, help="digits.csv.gz (default: sklearn's)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("digits.npz"))
    args = parser.parse_args()
    images, labels = read_digits(args.csv or locate_sklearn_csv())
    test = np.zeros(len(labels), dtype=bool)
    test[stratified_test_indices(labels, N_TEST, SEED)] = True
    np.savez_compressed(
        args.out,
        x_train=images[~test], y_train=labels[~test],
        x_test=images[test], y_test=labels[test],
        class_names=np.array([str(d) for d in range(10)], dtype="<U1"),
    )
    print(f"wrote {args.out}: {int((~test).sum())} train, {int(test.sum())} test")


if __name__ == "__main__":
    main()
