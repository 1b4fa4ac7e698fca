"""Serving the same ONNX files in crank, ONNX Runtime and tract: M (784-512-512-10) at batch
1024, S (784-128-10) at 64 and the tiny network (6-64-8-4) at batch 1, on one and two threads.

    python3 bench/onnx/compare.py [--rounds N] [--repeats R]

crank exports the three networks (`Sequential::save_onnx`, ReLU hidden layers, seed 7) and
every runtime reads those files: crank imports them back (`Sequential::load_onnx`), tract
(`tract-onnx`, optimised plan, one thread: its default) and ONNX Runtime (CPU provider,
`intra_op_num_threads` 1 or 2, sequential execution, all graph optimisations) run them as
given. crank and tract run in one Rust process (bench/onnx/src/main.rs), taking turns in ~50 ms
rounds; ONNX Runtime in this Python process, in the same rounds, called with the whole batch
(at batch 1 its figure is Python's call overhead: reported, not a claim). The driver alternates
the two processes `--repeats` times per thread count and keeps each cell's best, all pinned to
the same cores (taskset). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the peers'
environment (ONNX Runtime uses its own kernels; the line says so) and given back to crank's.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "compare"))
from peers import CRANK_ENV, PEER_HANDICAPS, cpu_model, peers_at_their_best  # noqa: E402

peers_at_their_best()

import numpy as np  # noqa: E402

NETWORKS = [("M", 784, 1024), ("S", 784, 64), ("tiny", 6, 1)]


def ort_rates(folder, threads, rounds):
    import onnxruntime as ort

    out = {}
    for name, inputs, batch in NETWORKS:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(os.path.join(folder, f"{name}.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        i, j = np.meshgrid(np.arange(batch), np.arange(inputs), indexing="ij")
        x = (((i * 7 + j * 3) % 13) / 6.5 - 1.0).astype(np.float32)
        feed = {"input": x}
        session.run(None, feed)
        best = 0.0
        for _ in range(rounds):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < 0.05:
                session.run(None, feed)
                calls += 1
            best = max(best, calls * batch / (time.perf_counter() - start))
        out[name] = best
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ort-only", nargs=3, metavar=("DIR", "THREADS", "ROUNDS"))
    args = parser.parse_args()
    if args.ort_only:
        folder, threads, rounds = args.ort_only
        rates = ort_rates(folder, int(threads), int(rounds))
        # What this very process had in its environment, for the header.
        rates["_handicaps"] = [v for v in PEER_HANDICAPS if v in os.environ]
        print(json.dumps(rates))
        return

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=HERE, check=True)
    binary = os.path.join(HERE, "target", "release", "crank-onnx-bench")
    crank_env = dict(os.environ, **json.loads(os.environ.get(CRANK_ENV, "{}")))
    folder = tempfile.mkdtemp(prefix="crank-onnx-bench-")
    subprocess.run([binary, "write", folder], check=True, env=crank_env)

    import onnxruntime
    import onnx

    print(f"CPU: {cpu_model()}")
    with open(os.path.join(HERE, "Cargo.lock")) as f:
        lock = f.read().split("[[package]]")
    tract = next(p for p in lock if 'name = "tract-onnx"' in p).split('version = "')[1].split('"')[0]
    print(f"onnxruntime {onnxruntime.__version__} (CPU provider, its MLAS kernels), tract-onnx {tract}, "
          f"onnx {onnx.__version__}; crank's default build (faer's GEMM)")
    rows = []
    handicaps = set()
    for threads in (1, 2):
        cores = "1" if threads == 1 else "0,1"
        best = {}
        for _ in range(args.repeats):
            env = dict(crank_env, RAYON_NUM_THREADS=str(threads))
            lines = subprocess.run(["taskset", "-c", cores, binary, "run", folder, str(args.rounds)],
                                   env=env, check=True, capture_output=True, text=True).stdout
            for line in lines.splitlines():
                r = json.loads(line)
                key = (r["network"], r["runtime"])
                best[key] = max(best.get(key, 0.0), r["samples_per_s"])
            out = subprocess.run(["taskset", "-c", cores, sys.executable, __file__, "--ort-only", folder,
                                  str(threads), str(args.rounds)], check=True, capture_output=True,
                                 text=True).stdout
            rates = json.loads(out)
            handicaps.update(rates.pop("_handicaps"))
            for name, rate in rates.items():
                best[(name, "onnxruntime")] = max(best.get((name, "onnxruntime"), 0.0), rate)
        for name, _, batch in NETWORKS:
            c, o, t = (best[(name, k)] for k in ("crank", "onnxruntime", "tract"))
            rows.append(f"| {name} | {batch} | {threads} | {c:,.0f} | {o:,.0f} | {t:,.0f} | {c / o:.2f}x | {c / t:.2f}x |")
    print("onnxruntime's processes: " + (f"still had {sorted(handicaps)}" if handicaps
                                         else f"no {' or '.join(PEER_HANDICAPS)} in their environment")
          + f"; rounds {args.rounds} x repeats {args.repeats}")
    print()
    print("| network | batch | threads | crank | onnxruntime | tract (1 thread) | crank / onnxruntime | crank / tract |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
