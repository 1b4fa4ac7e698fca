#!/usr/bin/env python3
"""Data-parallel scaling of crank on MPI: samples/s at a fixed global batch on 1 and 2 ranks
(one thread each), and the time each step spends in the gradients' all-reduce.

    python3 bench/mpi/scaling.py [--rounds 5] [--optimizer sgd|adam] [--mca KEY=VALUE ...]

Builds `examples/data_parallel.rs` (release, `--features mpi`) and runs it under
`mpirun -np 1` and `-np 2 --bind-to core`, in alternating order, `--rounds` times per workload;
a cell is the best round. With SGD (the default), one rank is plain `fit` (its products fold
the update); two ranks compute half a batch each, sum their gradients with MPI_Allreduce and apply the same
update. `--mca` passes Open MPI settings to every run (for example
`btl_vader_single_copy_mechanism=none`). Needs Open MPI (`apt-get install libopenmpi-dev
openmpi-bin libclang-dev`).
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "compare"))
from peers import cpu_model  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.path.join(ROOT, "target", "release", "examples", "data_parallel")
WORKLOADS = [("M", 256), ("M", 512), ("L", 256)]


def run(ranks, workload, batch, optimizer, mca):
    env = dict(os.environ, RAYON_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    cmd = ["mpirun", "-np", str(ranks), "--bind-to", "core"]
    for setting in mca:
        key, value = setting.split("=", 1)
        cmd += ["--mca", key, value]
    cmd += [BINARY, workload, str(batch), optimizer]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--mca", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--quiet", "--release", "--features", "mpi",
                    "--example", "data_parallel"], cwd=ROOT, check=True)
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    version = version.splitlines()[0] if version else "mpirun ?"
    print(f"# {cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, {version}"
          + (f", --mca {' '.join(args.mca)}" if args.mca else ""))
    print(f"# {args.optimizer}, best of {args.rounds} rounds, 1 and 2 ranks alternating, one thread per rank")
    print("| workload | global batch | 1 rank | 2 ranks | speed-up | step, 2 ranks | all-reduce per step |")
    print("|---|---|---|---|---|---|---|")
    for workload, batch in WORKLOADS:
        best = {}
        for r in range(args.rounds):
            for ranks in ([1, 2] if r % 2 == 0 else [2, 1]):
                got = run(ranks, workload, batch, args.optimizer, args.mca)
                if ranks not in best or got["samples_per_s"] > best[ranks]["samples_per_s"]:
                    best[ranks] = got
        one, two = best[1], best[2]
        print(f"| {workload} | {batch} | {one['samples_per_s']:,.0f} | {two['samples_per_s']:,.0f} | "
              f"{two['samples_per_s'] / one['samples_per_s']:.2f}× | {two['step_ms']:.2f} ms | "
              f"{two['allreduce_ms_per_step']:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
