"""Side-by-side training-step and inference throughput: crank, the seed's numpy design, PyTorch
(when installed) and JAX (when installed), on the same workloads and thread counts.

    python3 bench/compare/compare.py [--threads 1 2] [--quick] [--best-of N] [--features openblas]
    python3 bench/compare/compare.py --rss [--features openblas]

`--rss` prints instead the peak resident memory (VmHWM) of a fresh process training M at
batch 256 in each framework.

Prints one table of samples/s per workload and thread count, with crank's ratio to the best
other and to the best of numpy and PyTorch, and the GEMM-only bound crank's bench measures. Threads are pinned the same way for all:
threadpoolctl for numpy, torch.set_num_threads, XLA flags for JAX, and RAYON_NUM_THREADS for
crank (its one pool, which also splits large GEMMs; the GEMM backends run single-threaded).
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

WORKLOADS = [
    # name, sizes, batch, inference, dtype
    ("S b64", [784, 128, 10], 64, False, "f32"),
    ("M b128", [784, 512, 512, 10], 128, False, "f32"),
    ("M b256", [784, 512, 512, 10], 256, False, "f32"),
    ("M b256 f64", [784, 512, 512, 10], 256, False, "f64"),
    ("L b256", [1024, 1024, 1024, 1024, 10], 256, False, "f32"),
    ("M infer b1024", [784, 512, 512, 10], 1024, True, "f32"),
    ("tiny b32", [6, 64, 8, 4], 32, False, "f32"),
    ("tiny infer b1", [6, 64, 8, 4], 1, True, "f32"),
]


def timeit(f, quick):
    for _ in range(3):
        f()
    t0 = time.perf_counter()
    f()
    once = max(time.perf_counter() - t0, 1e-9)
    target = 0.05 if quick else 0.2
    calls = int(min(max(target / once, 1), 1_000_000))
    samples = []
    for _ in range(5 if quick else 15):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        samples.append((time.perf_counter() - t0) / calls)
    # The fastest repeat, as crank's bench reports: interference on a shared machine only adds.
    return min(samples)


def data(batch, sizes, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = np.arange(batch) % sizes[-1]
    return x, y


def numpy_seed(sizes, batch, inference, dtype, quick):
    """The seed's design: Dense layers with He init, ReLU, softmax cross-entropy, SGD."""
    rng = np.random.default_rng(1)
    layers = [
        [(rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype), np.zeros(o, dtype)]
        for i, o in zip(sizes[:-1], sizes[1:])
    ]
    x, y = data(batch, sizes, dtype)
    lr = dtype(1e-3)

    def forward(h):
        zs, inputs = [], []
        for k, (w, b) in enumerate(layers):
            inputs.append(h)
            z = h @ w + b
            zs.append(z)
            h = np.maximum(z, 0) if k < len(layers) - 1 else z
        return h, zs, inputs

    def step():
        out, zs, inputs = forward(x)
        e = np.exp(out - out.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(batch), y] -= 1
        for k in reversed(range(len(layers))):
            w, b = layers[k]
            delta = g if k == len(layers) - 1 else g * (zs[k] > 0)
            dw = inputs[k].T @ delta / batch
            db = delta.sum(axis=0) / batch
            if k > 0:
                g = delta @ w.T
            w -= lr * dw
            b -= lr * db

    return timeit((lambda: forward(x)) if inference else step, quick)


def torch_run(sizes, batch, inference, dtype, quick):
    import torch

    mods = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(i, o))
        if k < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    model = torch.nn.Sequential(*mods).to(tdtype)
    x, y = data(batch, sizes, dtype)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    return timeit(infer if inference else step, quick)


def jax_run(sizes, batch, inference, dtype, quick):
    import jax
    import jax.numpy as jnp

    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    key = jax.random.PRNGKey(1)
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (i, o), dtype) * np.sqrt(2.0 / i), jnp.zeros(o, dtype)))
    x, y = data(batch, sizes, dtype)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def forward(params, x):
        h = x
        for k, (w, b) in enumerate(params):
            h = h @ w + b
            if k < len(params) - 1:
                h = jax.nn.relu(h)
        return h

    def loss(params):
        logits = forward(params, x)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(batch), y])

    @jax.jit
    def step(params):
        grads = jax.grad(loss)(params)
        return [(w - 1e-3 * gw, b - 1e-3 * gb) for (w, b), (gw, gb) in zip(params, grads)]

    infer = jax.jit(forward)
    state = {"p": params}

    def run_step():
        state["p"] = step(state["p"])
        jax.block_until_ready(state["p"])

    def run_infer():
        jax.block_until_ready(infer(params, x))

    return timeit(run_infer if inference else run_step, quick)


def jax_worker(threads, quick):
    """Runs every workload in JAX in this fresh process, pinned to `threads` cores, and prints
    one JSON object of samples/s per workload."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    rates = {}
    for name, sizes, batch, inference, dt in WORKLOADS:
        dtype = np.float32 if dt == "f32" else np.float64
        rates[name] = batch / jax_run(sizes, batch, inference, dtype, quick)
    print(json.dumps(rates))


def jax_rates(threads, quick):
    """JAX's samples/s per workload at `threads`, from a child process: XLA sizes its thread pool
    once, at start-up, from XLA_FLAGS and the CPUs the process may use."""
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    env = dict(os.environ, XLA_FLAGS=flags)
    cmd = [sys.executable, os.path.abspath(__file__), "--jax-worker", str(threads)] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        print(f"  jax: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return {}
    return json.loads(out.stdout.strip().splitlines()[-1])


def crank_run(threads, quick, features):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "bench", "--quiet", "--bench", "workloads"]
    if features:
        cmd += ["--features", features]
    cmd += ["--", "--json"] + (["--quick"] if quick else [])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {r["workload"]: r for r in rows}


def peak_rss_mib():
    """Peak resident set of this process's address space (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_worker(framework):
    """Trains M at batch 256 in `framework` (in this fresh process) and prints its peak RSS."""
    run = {"numpy-seed": numpy_seed, "pytorch": torch_run}[framework]
    run([784, 512, 512, 10], 256, False, np.float32, True)
    print(json.dumps({"framework": framework, "peak_rss_mib": round(peak_rss_mib(), 1)}))


def rss(features):
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    cmd = ["cargo", "build", "--quiet", "--release", "--example", "peak_rss"]
    if features:
        cmd += ["--features", features]
    subprocess.run(cmd, cwd=root, check=True)
    rows = [subprocess.run([os.path.join(root, "target", "release", "examples", "peak_rss")], capture_output=True, text=True, check=True).stdout]
    for framework in ["numpy-seed", "pytorch"]:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-worker", framework], capture_output=True, text=True)
        if out.returncode == 0:
            rows.append(out.stdout)
        else:
            print(f"  {framework}: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    print(f"# peak resident memory training M (784-512-512-10) at batch 256, {time.strftime('%Y-%m-%d')}, crank features: {features or 'default'}")
    for row in rows:
        r = json.loads(row.strip().splitlines()[-1])
        print(f"{r['framework']:<12} {r['peak_rss_mib']:>8.1f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--best-of", type=int, default=1, help="full rounds; each cell is its fastest")
    ap.add_argument("--features", default="")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--rss-worker", choices=["numpy-seed", "pytorch"])
    ap.add_argument("--jax-worker", type=int)
    args = ap.parse_args()
    if args.jax_worker:
        return jax_worker(args.jax_worker, args.quick)
    if args.rss_worker:
        return rss_worker(args.rss_worker)
    if args.rss:
        return rss(args.features)

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        sys.exit("needs threadpoolctl: pip install threadpoolctl")
    others = {"numpy-seed": numpy_seed}
    versions = [f"numpy {np.__version__}"]
    try:
        import torch

        others["pytorch"] = torch_run
        versions.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    has_jax = importlib.util.find_spec("jax") is not None
    if has_jax:
        from importlib.metadata import version

        versions.append(f"jax {version('jax')}")

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, " + ", ".join(versions))
    names = list(others) + (["jax-jit"] if has_jax else [])
    header = f"{'workload':<15} {'thr':>3} {'crank':>10} " + " ".join(f"{k:>11}" for k in names) + f" {'GEMM bound':>11} {'crank/best':>10} {'/np,torch':>9} {'of bound':>8}"
    print(header)
    for threads in args.threads:
        # Each framework's fastest over --best-of full rounds: on a shared machine interference
        # only slows a run down, and rounds spread every framework over the same minutes.
        best_rates = {}  # (workload, framework) -> samples/s
        for _ in range(args.best_of):
            crank = crank_run(threads, args.quick, args.features)
            jax = jax_rates(threads, args.quick) if has_jax else {}
            for name, sizes, batch, inference, dt in WORKLOADS:
                dtype = np.float32 if dt == "f32" else np.float64
                rates = {}
                with threadpool_limits(limits=threads):
                    if "pytorch" in others:
                        import torch

                        torch.set_num_threads(threads)
                    for k, f in others.items():
                        try:
                            rates[k] = batch / f(sizes, batch, inference, dtype, args.quick)
                        except Exception as e:  # a framework that cannot run a workload
                            print(f"  {k} {name}: {e}", file=sys.stderr)
                if name in jax:
                    rates["jax-jit"] = jax[name]
                c = crank.get(name, {})
                rates["crank"] = c.get("samples_per_s", float("nan"))
                rates["bound"] = c.get("gemm_only_samples_per_s", float("nan"))
                for k, v in rates.items():
                    old = best_rates.get((name, k), float("nan"))
                    best_rates[(name, k)] = v if not old >= v else old
        for name, *_ in WORKLOADS:
            get = lambda k: best_rates.get((name, k), float("nan"))
            rate, bound = get("crank"), get("bound")
            # crank against the best of all others, and against the best of numpy and PyTorch
            # alone (what the speed targets name).
            best = max([get(k) for k in names if get(k) == get(k)], default=float("nan"))
            best_np_torch = max([get(k) for k in others if get(k) == get(k)], default=float("nan"))
            print(
                f"{name:<15} {threads:>3} {rate:>10.0f} "
                + " ".join(f"{get(k):>11.0f}" for k in names)
                + f" {bound:>11.0f} {rate / best:>9.2f}x {rate / best_np_torch:>8.2f}x {rate / bound:>7.0%}"
            )

if __name__ == "__main__":
    main()
