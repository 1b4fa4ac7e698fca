"""Side-by-side training-step and inference throughput: crank, the numpy design it grew from, PyTorch
(when installed) and JAX (when installed), on the same workloads and thread counts.

    python3 bench/compare/compare.py [--threads 1 2] [--rounds N] [--features openblas]
    python3 bench/compare/compare.py --rss [--features openblas]

`--rss` prints instead the peak resident memory (VmHWM) of a fresh process training M at
batch 256 in each framework.

Prints one table of samples/s per workload and thread count, with crank's ratio to the best
other and to the best of numpy and PyTorch, and the GEMM-only bound crank's bench measures.
Threads are pinned the same way for all: threadpoolctl for numpy, torch.set_num_threads, XLA
flags for JAX, and RAYON_NUM_THREADS for crank (its one pool, which also splits large GEMMs;
the GEMM backends run single-threaded).

Peers run at their best kernels: `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE`, which some hosts
set for older OpenBLAS builds and which hold a current one to older kernels, are removed from
the environment of numpy, PyTorch and JAX (the script restarts itself without them) and given
back to crank's own process. The header names the CPU, the BLAS kernels each peer loaded
(threadpoolctl), PyTorch's CPU capability and crank's GEMM and kernels.

The frameworks take turns: per workload, `--rounds` rounds (default 20), and in each round
every framework runs its step for about 50 ms, in an order that rotates from round to round.
crank (its `workloads` bench in `--serve` mode, with the step's GEMM bound) and JAX (which sizes
its thread pool at start-up) answer from child processes kept for the whole run; numpy and
PyTorch run in this one. A cell is the framework's fastest round: on a shared machine whose
speed changes from second to second, rounds this short and this interleaved give every
framework the same chances at the same speed, and interference only ever adds time. "of bound"
is the median over rounds of the GEMM bound's time over crank's step's time in the same round.

On more than one thread, each turn starts after a pause (`--settle`, 0.2 s by default): the
thread pools of numpy's OpenBLAS and of PyTorch keep their workers busy-waiting for a while
after a call, and a worker still spinning on one of the cores slows the next framework's turn,
most of all a step that forks and joins often (see the README's "Performance" for the runs
with and without the pause).
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

from peers import CRANK_ENV, blas_kernels, cpu_model, peers_at_their_best

peers_at_their_best()  # before numpy loads its OpenBLAS

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
    # Reduced-precision inference: crank's `Sequential::quantize`, PyTorch's `quantize_dynamic`
    # (int8) and `autocast(bfloat16)`, ONNX Runtime's dynamically quantized model (int8).
    ("M infer int8 b1024", [784, 512, 512, 10], 1024, True, "int8"),
    # Static int8: activation ranges calibrated beforehand (crank's `quantize_static`, PyTorch's
    # eager-mode post-training static quantization with Linear+ReLU fused).
    ("M infer int8 static b1024", [784, 512, 512, 10], 1024, True, "int8s"),
    ("M infer bf16 b1024", [784, 512, 512, 10], 1024, True, "bf16"),
    ("S infer b64", [784, 128, 10], 64, True, "f32"),
    ("S infer int8 b64", [784, 128, 10], 64, True, "int8"),
    ("S infer bf16 b64", [784, 128, 10], 64, True, "bf16"),
    ("tiny infer int8 b1", [6, 64, 8, 4], 1, True, "int8"),
    ("tiny infer bf16 b1", [6, 64, 8, 4], 1, True, "bf16"),
]


class Skip(Exception):
    """A framework without this workload (no training in ONNX Runtime, no int8 in numpy): its
    cell is left empty without a message."""


def float_dtype(dt):
    """numpy's type for a workload's dtype; int8 and bf16 workloads compute on f32 inputs."""
    return np.float64 if dt == "f64" else np.float32


ROUND_S = 0.05
SETTLE_S = 0.2  # the default pause before each turn on more than one thread (`--settle`)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")  # the crate


class Timer:
    """Rounds of calls to `f`: three warm-up calls, then as many calls per round as take about
    ROUND_S seconds."""

    def __init__(self, f):
        self.f = f
        for _ in range(3):
            f()
        t0 = time.perf_counter()
        f()
        once = max(time.perf_counter() - t0, 1e-9)
        self.calls = int(min(max(ROUND_S / once, 1), 1_000_000))

    def round(self):
        """Seconds per call over one round."""
        t0 = time.perf_counter()
        for _ in range(self.calls):
            self.f()
        return (time.perf_counter() - t0) / self.calls


class Server:
    """A child process that answers a workload's name with one timed round, as a JSON line."""

    def __init__(self, cmd, env, cwd=None):
        self.p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def round(self, name):
        self.p.stdin.write(name + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the child process ended (exit {self.p.wait()})")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def data(batch, sizes, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = np.arange(batch) % sizes[-1]
    return x, y


def numpy_seed(sizes, batch, inference, dt):
    """The numpy design crank grew from: Dense layers with He init, ReLU, softmax cross-entropy, SGD. Returns
    the step (or inference) to time."""
    if dt in ("int8", "int8s", "bf16"):
        raise Skip
    dtype = float_dtype(dt)
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

    return (lambda: forward(x)) if inference else step


def torch_run(sizes, batch, inference, dt):
    import torch

    dtype = float_dtype(dt)
    mods = []
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(i, o))
        if k < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    model = torch.nn.Sequential(*mods).to(tdtype).eval()
    x, y = data(batch, sizes, dtype)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    if dt == "int8":
        # Dynamic quantization: int8 weights per tensor, activations quantized per batch (fbgemm
        # or x86 engine).
        import warnings

        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)

        def infer_int8():
            with torch.no_grad():
                qmodel(x)

        return infer_int8
    if dt == "int8s":
        # Post-training static quantization (eager mode, the x86 engine's default qconfig:
        # histogram observer for activations, per-channel weights), Linear+ReLU fused,
        # calibrated on the batch it then serves.
        import warnings

        class Quantized(torch.nn.Module):
            def __init__(self, body):
                super().__init__()
                self.quant, self.body, self.dequant = torch.ao.quantization.QuantStub(), body, torch.ao.quantization.DeQuantStub()

            def forward(self, v):
                return self.dequant(self.body(self.quant(v)))

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fused = [[str(k), str(k + 1)] for k in range(0, len(mods) - 1, 2)]
            body = torch.ao.quantization.fuse_modules(model, fused) if fused else model
            qmodel = Quantized(body).eval()
            qmodel.qconfig = torch.ao.quantization.get_default_qconfig(torch.backends.quantized.engine)
            torch.ao.quantization.prepare(qmodel, inplace=True)
            with torch.no_grad():
                qmodel(x)
            torch.ao.quantization.convert(qmodel, inplace=True)

        def infer_int8_static():
            with torch.no_grad():
                qmodel(x)

        return infer_int8_static
    if dt == "bf16":

        def infer_bf16():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                model(x)

        return infer_bf16
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(x)

    return infer if inference else step


def ort_run(sizes, batch, inference, dt, threads=1):
    """ONNX Runtime on the same MLP (MatMul, Add, Relu), f32, dynamically quantized to int8
    (`onnxruntime.quantization.quantize_dynamic`, int8 weights) or statically
    (`quantize_static`, QDQ, per-channel int8 weights, u8 activations calibrated on the batch it
    then serves), on `threads` threads."""
    if not inference or dt not in ("f32", "int8", "int8s"):
        raise Skip
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    nodes, inits, h = [], [], "x"
    for k, (i, o) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = (rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(np.zeros(o, np.float32), f"b{k}")]
        nodes += [helper.make_node("MatMul", [h, f"w{k}"], [f"m{k}"]), helper.make_node("Add", [f"m{k}", f"b{k}"], [f"z{k}"])]
        h = f"z{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [h], [f"r{k}"]))
            h = f"r{k}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, ["batch", sizes[-1]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    folder = tempfile.mkdtemp(prefix="compare-ort-")
    path = os.path.join(folder, "f32.onnx")
    onnx.save(model, path)
    if dt == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        import logging

        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the model
        quantize_dynamic(path, os.path.join(folder, "int8.onnx"), weight_type=QuantType.QInt8)
        path = os.path.join(folder, "int8.onnx")
    if dt == "int8s":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        import logging

        logging.getLogger().setLevel(logging.ERROR)
        calibration = [{"x": data(batch, sizes, np.float32)[0]}]

        class Reader(CalibrationDataReader):
            def get_next(self):
                return calibration.pop() if calibration else None

        quantize_static(path, os.path.join(folder, "int8s.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        path = os.path.join(folder, "int8s.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x, _ = data(batch, sizes, np.float32)
    out = session.get_outputs()[0].name
    return lambda: session.run([out], {"x": x})


def jax_run(sizes, batch, inference, dt):
    import jax
    import jax.numpy as jnp

    if dt in ("int8", "int8s", "bf16"):
        raise Skip
    dtype = float_dtype(dt)
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

    return run_infer if inference else run_step


def jax_worker(threads):
    """Serves JAX rounds in this fresh process, pinned to `threads` cores: a workload's name in,
    `{"s": seconds per call}` of one round out."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    timers = {}
    for line in sys.stdin:
        name = line.strip()
        if name not in timers:
            _, sizes, batch, inference, dt = next(w for w in WORKLOADS if w[0] == name)
            try:
                timers[name] = Timer(jax_run(sizes, batch, inference, dt))
            except Skip:
                timers[name] = None
        print(json.dumps({"s": timers[name].round() if timers[name] else None}), flush=True)


def jax_server(threads):
    """JAX in a child process: XLA sizes its thread pool once, at start-up, from XLA_FLAGS and
    the CPUs the process may use."""
    flags = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} intra_op_parallelism_threads={threads}"
    env = dict(os.environ, XLA_FLAGS=flags)
    return Server([sys.executable, os.path.abspath(__file__), "--jax-worker", str(threads)], env)


def crank_commit():
    """The checkout's commit, with "+changes" when the work tree differs from it, or "unknown"."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("+changes" if dirty else "")


def crank_env(**extra):
    """This process's environment with the host's OpenBLAS settings given back (see
    PEER_HANDICAPS), for crank's own processes."""
    env = {k: v for k, v in os.environ.items() if k != CRANK_ENV}
    env.update(json.loads(os.environ.get(CRANK_ENV, "{}")), **extra)
    return env


def peer_kernels():
    """Which BLAS kernels the peers loaded in this process run, and the instruction set
    PyTorch's own kernels dispatch to; one line each."""
    lines = blas_kernels()
    try:
        import torch

        config = torch.__config__.show()
        blas = next((part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")), "?")
        lines.insert(-1, f"torch: BLAS {blas} (built in), CPU capability {torch.backends.cpu.get_cpu_capability()}, quantized engine {torch.backends.quantized.engine}")
    except ImportError:
        pass
    return lines


def crank_server(threads, features):
    """crank's `workloads` bench in `--serve` mode, on `threads` threads."""
    env = crank_env(RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "bench", "--quiet", "--bench", "workloads"]
    if features:
        cmd += ["--features", features]
    subprocess.run(cmd + ["--no-run"], cwd=ROOT, check=True, env=env)
    return Server(cmd + ["--", f"--serve={ROUND_S}"], env, cwd=ROOT)


def peak_rss_mib():
    """Peak resident set of this process's address space (Linux), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_worker(framework):
    """Trains M at batch 256 in `framework` (in this fresh process) and prints its peak RSS."""
    step = {"numpy-seed": numpy_seed, "pytorch": torch_run}[framework]([784, 512, 512, 10], 256, False, np.float32)
    for _ in range(20):
        step()
    print(json.dumps({"framework": framework, "peak_rss_mib": round(peak_rss_mib(), 1)}))


def rss(features):
    cmd = ["cargo", "build", "--quiet", "--release", "--example", "peak_rss"]
    if features:
        cmd += ["--features", features]
    subprocess.run(cmd, cwd=ROOT, check=True, env=crank_env())
    rows = [subprocess.run([os.path.join(ROOT, "target", "release", "examples", "peak_rss")], capture_output=True, text=True, check=True, env=crank_env()).stdout]
    for framework in ["numpy-seed", "pytorch"]:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-worker", framework], capture_output=True, text=True)
        if out.returncode == 0:
            rows.append(out.stdout)
        else:
            print(f"  {framework}: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    print(f"# peak resident memory training M (784-512-512-10) at batch 256, {time.strftime('%Y-%m-%d')}, crank {crank_commit()} features: {features or 'default'}")
    for row in rows:
        r = json.loads(row.strip().splitlines()[-1])
        print(f"{r['framework']:<12} {r['peak_rss_mib']:>8.1f} MiB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=20, help="rounds per workload; each cell is the fastest")
    ap.add_argument("--features", default="")
    ap.add_argument("--only", help="run only the workloads whose name contains this")
    ap.add_argument("--settle", type=float, help=f"seconds of pause before each turn (default {SETTLE_S} on more than one thread, else 0)")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--rss-worker", choices=["numpy-seed", "pytorch"])
    ap.add_argument("--jax-worker", type=int)
    args = ap.parse_args()
    if args.jax_worker:
        return jax_worker(args.jax_worker)
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
    if importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None:
        import onnxruntime

        others["onnxruntime"] = ort_run
        versions.append(f"onnxruntime {onnxruntime.__version__}")
    has_jax = importlib.util.find_spec("jax") is not None
    if has_jax:
        from importlib.metadata import version

        versions.append(f"jax {version('jax')}")

    print(f"# {cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
          + ", ".join(versions) + f", crank {crank_commit()} features: {args.features or 'default'}, {args.rounds} rounds, "
          + (f"{args.settle} s pause before each turn" if args.settle is not None else f"{SETTLE_S} s pause before each turn above one thread"))
    for line in peer_kernels():
        print(f"#   {line}")
    names = list(others) + (["jax-jit"] if has_jax else [])
    header = f"{'workload':<19} {'thr':>3} {'crank':>10} " + " ".join(f"{k:>11}" for k in names) + f" {'GEMM bound':>11} {'crank/best':>10} {'/np,torch':>9} {'of bound':>8}"
    print(header)
    for threads in args.threads:
        settle = args.settle if args.settle is not None else (SETTLE_S if threads > 1 else 0.0)
        crank = crank_server(threads, args.features)
        if threads == args.threads[0]:
            print(f"#   crank: {crank.round('backend')['backend']}", flush=True)
        jax = jax_server(threads) if has_jax else None
        for name, sizes, batch, inference, dt in WORKLOADS:
            if args.only and args.only not in name:
                continue
            best = {}  # framework -> seconds per call, its fastest round
            shares = []  # per crank round: its GEMM bound's time over its step's time

            def keep(k, t):
                best[k] = min(best.get(k, float("inf")), t)

            with threadpool_limits(limits=threads):
                if "pytorch" in others:
                    torch.set_num_threads(threads)
                timers = {}
                for k, build in others.items():
                    try:
                        extra = {"threads": threads} if k == "onnxruntime" else {}
                        timers[k] = Timer(build(sizes, batch, inference, dt, **extra))
                    except Skip:
                        pass
                    except Exception as e:  # a framework that cannot run a workload
                        print(f"  {k} {name}: {e}", file=sys.stderr)
                turns = ["crank"] + list(timers) + (["jax-jit"] if jax else [])
                for r in range(args.rounds):
                    for k in turns[r % len(turns):] + turns[: r % len(turns)]:
                        time.sleep(settle)
                        if k == "crank":
                            t = crank.round(name)
                            keep("crank", t["step_s"])
                            keep("bound", t["bound_s"])
                            shares.append(t["bound_s"] / t["step_s"])
                        elif k == "jax-jit":
                            try:
                                s = jax.round(name)["s"]
                                if s is None:  # no such workload in JAX
                                    turns.remove("jax-jit")
                                    continue
                                keep(k, s)
                            except Exception as e:  # JAX failed: go on without it
                                print(f"  jax {name}: {e}", file=sys.stderr)
                                jax = None
                                turns.remove("jax-jit")
                                break
                        else:
                            keep(k, timers[k].round())
            get = lambda k: batch / best[k] if k in best else float("nan")
            rate, bound = get("crank"), get("bound")
            # The share of the bound: the median over rounds of the step against the bound timed
            # in the same round (the bench alternates the two in slices). The fastest step and the
            # fastest bound may come from rounds at different machine speeds; a round's own pair
            # does not.
            share = sorted(shares)[len(shares) // 2] if shares else float("nan")
            # crank against the best of all others, and against the best of numpy and PyTorch
            # alone (what the speed targets name).
            best_all = max([get(k) for k in names if k in best], default=float("nan"))
            best_np_torch = max([get(k) for k in ("numpy-seed", "pytorch") if k in best], default=float("nan"))
            print(
                f"{name:<19} {threads:>3} {rate:>10.0f} "
                + " ".join(f"{get(k):>11.0f}" for k in names)
                + f" {bound:>11.0f} {rate / best_all:>9.2f}x {rate / best_np_torch:>8.2f}x {share:>7.0%}",
                flush=True,
            )
        crank.close()
        if jax:
            jax.close()


if __name__ == "__main__":
    main()
