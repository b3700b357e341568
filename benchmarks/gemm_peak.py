"""This machine's float32 GEMM (sgemm) throughput through NumPy's BLAS, for 1 and 2 threads.

    python benchmarks/gemm_peak.py [--threads 1,2] [--seconds 0.3] [--json FILE]

Times ``np.matmul`` on float32 operands: large squares (the peak) and the shapes of the
conv matmuls of the shipped configs at batch 64 (forward ``W @ cols``, weight gradient
``dy @ cols.T``). Each thread count runs in a fresh process with OPENBLAS_NUM_THREADS (and
OMP/MKL_NUM_THREADS) set, since OpenBLAS reads them once at load. The peak is the best
GFLOP/s over the shapes; ``profile_step.py`` quotes conv throughput as a fraction of it.
Prints the BLAS kernel in use (``blas_kernel``) and the OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE
values, which select it on some machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: (label, M, K, N): C (M x N) = A (M x K) @ B (K x N). The conv shapes are batch 64.
SHAPES = [
    ("square 512", 512, 512, 512),
    ("square 1024", 1024, 1024, 1024),
    ("square 2048", 2048, 2048, 2048),
    ("lenet c1 fwd 8x25 @ 25x50176", 8, 25, 50176),
    ("lenet c3 fwd 16x150 @ 150x6400", 16, 150, 6400),
    ("lenet c3 dW 16x6400 @ 6400x150", 16, 6400, 150),
    ("cifar conv1 fwd 32x27 @ 27x65536", 32, 27, 65536),
    ("cifar conv2 fwd 32x288 @ 288x16384", 32, 288, 16384),
    ("cifar conv3 fwd 64x288 @ 288x4096", 64, 288, 4096),
    ("cifar conv3 dW 64x4096 @ 4096x288", 64, 4096, 288),
    ("resnet 16ch fwd 16x144 @ 144x65536", 16, 144, 65536),
    ("resnet 64ch fwd 64x576 @ 576x4096", 64, 576, 4096),
]

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_kernel() -> str:
    """NumPy's BLAS and the kernel it runs: threadpoolctl's ``internal_api``/``architecture``
    when threadpoolctl is importable, else the build's line from numpy.show_config."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                 f"({i.get('num_threads')} threads)"
                 for i in threadpool_info() if i.get("user_api") == "blas"]
        if found:
            return "; ".join(found)
    core = openblas_corename()
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        config = " ".join(str(blas.get("openblas configuration", "")).split())
        return (f"{blas.get('name')} {blas.get('version')} {core or ''} (build: {config}; "
                f"no threadpoolctl)")
    except (KeyError, TypeError, ValueError):
        return core or "unknown"


def openblas_corename() -> str | None:
    """The kernel the loaded OpenBLAS picked (OPENBLAS_CORETYPE can force one), asked through
    ctypes as threadpoolctl does; None where NumPy's BLAS is not a loaded OpenBLAS."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh
                            if "openblas" in line.lower() and line.split()[-1].startswith("/")})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("openblas_get_corename", "scipy_openblas_get_corename64_",
                     "openblas_get_corename64_", "scipy_openblas_get_corename"):
            function = getattr(lib, name, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return None


def blas_variables() -> str:
    """OPENBLAS_CORETYPE=... OPENBLAS_L2_SIZE=... as set in this process (or 'unset')."""
    return " ".join(f"{v}={os.environ.get(v, 'unset')}" for v in BLAS_VARS)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def gflops(m: int, k: int, n: int, seconds: float = 0.3) -> float:
    """Best GFLOP/s of float32 ``A (m x k) @ B (k x n)`` into a reused output over about
    ``seconds`` of repeats."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    np.matmul(a, b, out=c)
    best, spent = float("inf"), 0.0
    while spent < seconds:
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
    return 2.0 * m * k * n / best / 1e9


def measure_here(seconds: float) -> dict:
    """All SHAPES in this process, with whatever BLAS threads it has."""
    rows = [{"shape": label, "m": m, "k": k, "n": n, "gflops": gflops(m, k, n, seconds)}
            for label, m, k, n in SHAPES]
    return {"rows": rows, "peak_gflops": max(r["gflops"] for r in rows),
            "blas": blas_kernel(), "blas_variables": blas_variables()}


def measure(threads: int, seconds: float) -> dict:
    """measure_here in a fresh process with ``threads`` BLAS threads."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    proc = subprocess.run([sys.executable, __file__, "--inner", "--seconds", str(seconds)],
                          capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated BLAS thread counts")
    ap.add_argument("--seconds", type=float, default=0.3, help="time per shape")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(measure_here(args.seconds)))
        return
    counts = [int(t) for t in args.threads.split(",")]
    results = {t: measure(t, args.seconds) for t in counts}
    first = results[counts[0]]
    print(f"CPU: {cpu_model()}; BLAS: {first['blas']}; {first['blas_variables']}; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print("| shape (M x K @ K x N) | " + " | ".join(f"{t} thr GFLOP/s" for t in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for k, (label, *_rest) in enumerate(SHAPES):
        cells = " | ".join(f"{results[t]['rows'][k]['gflops']:.1f}" for t in counts)
        print(f"| {label} | {cells} |")
    print("| **peak** | " + " | ".join(f"**{results[t]['peak_gflops']:.1f}**" for t in counts)
          + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"cpu": cpu_model(), "threads": {str(t): r for t, r in results.items()}},
                      fh, indent=1)


if __name__ == "__main__":
    main()
