"""numpy's GEMM rate on the products of the reference workloads, in the three layouts a Dense
layer uses, for reading beside crank's `dense` bench (`cargo bench --bench dense -- gemm`):

    taskset -c 0 python3 bench/compare/gemm_shapes.py [--dtype f32|f64]

numpy runs at its best kernels (`peers.py`) on one thread (threadpoolctl); the header names the
CPU and the BLAS kernels. Each cell is the best of seven rounds of about 0.2 s, in GFLOP/s.
Layouts: `nn` is `x·W`, `tn` reads `a` column-major (`xᵀ·δ`), `nt` reads `b` column-major
(`δ·Wᵀ`); shapes are `m×k×n`.
"""
import argparse
import time

from peers import blas_kernels, cpu_model, peers_at_their_best

peers_at_their_best()  # before numpy loads its OpenBLAS

import numpy as np
from threadpoolctl import threadpool_limits

# The products of S (batch 64), M (batch 128 and 256), L (batch 256) and M's inference (1024),
# and a 1024³ reference: the same list as the `dense` bench's `gemm` group.
SHAPES = [
    (64, 784, 128), (784, 64, 128), (64, 128, 784),
    (256, 784, 512), (784, 256, 512), (256, 512, 512), (512, 256, 512),
    (128, 784, 512), (784, 128, 512), (128, 512, 512), (512, 128, 512),
    (256, 1024, 1024), (1024, 256, 1024),
    (1024, 784, 512), (1024, 512, 512),
    (1024, 1024, 1024),
]


def rate(a, b, c):
    m, k = a.shape
    n = b.shape[1]
    flops = 2 * m * k * n
    calls = max(3, int(0.2 * 200e9 / flops))
    best = float("inf")
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        best = min(best, (time.perf_counter() - t) / calls)
    return flops / best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=["f32", "f64"], default="f32")
    dtype = np.float32 if ap.parse_args().dtype == "f32" else np.float64
    print(f"# {cpu_model()}, {time.strftime('%Y-%m-%d %H:%M')}, numpy {np.__version__}, {dtype.__name__}, one thread")
    for line in blas_kernels():
        print(f"#   {line}")
    print(f"{'shape':>16} {'nn':>7} {'tn':>7} {'nt':>7}")
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        for m, k, n in SHAPES:
            cells = []
            for layout in ["nn", "tn", "nt"]:
                a = rng.standard_normal((m, k)).astype(dtype)
                b = rng.standard_normal((k, n)).astype(dtype)
                if layout == "tn":
                    a = np.ascontiguousarray(a.T).T
                if layout == "nt":
                    b = np.ascontiguousarray(b.T).T
                cells.append(rate(a, b, np.empty((m, n), dtype)))
            print(f"{m:>5}x{k:>4}x{n:>5} " + " ".join(f"{r:7.1f}" for r in cells), flush=True)


if __name__ == "__main__":
    main()
