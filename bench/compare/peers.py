"""Peers at their best kernels, shared by the comparison scripts.

Some hosts set OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for older OpenBLAS builds; they hold a
current OpenBLAS (numpy's, PyTorch's) to older kernels. `peers_at_their_best()`, called before
numpy is imported, restarts the script without them (they are read when OpenBLAS loads) and
keeps their values in CRANK_ENV, so that crank's own processes get them back: its `openblas`
build keeps the host's settings, as its tests and CI do.
"""
import json
import os
import sys

PEER_HANDICAPS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CRANK_ENV = "COMPARE_PY_CRANK_ENV"  # the removed values, as JSON, for crank's processes


def peers_at_their_best():
    """Restarts this script without PEER_HANDICAPS in its environment, if any is set."""
    if any(v in os.environ for v in PEER_HANDICAPS):
        removed = {v: os.environ[v] for v in PEER_HANDICAPS if v in os.environ}
        env = {k: v for k, v in os.environ.items() if k not in PEER_HANDICAPS}
        env[CRANK_ENV] = json.dumps(removed)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def blas_kernels():
    """One line per BLAS library loaded in this process (threadpoolctl): which framework it
    belongs to, its implementation, version and kernels."""
    from threadpoolctl import threadpool_info

    lines = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        path = lib.get("filepath", "")
        where = "numpy" if "numpy" in path else "torch" if "torch" in path else os.path.basename(path)
        kernels = lib.get("architecture") or lib.get("threading_layer") or "?"
        lines.append(f"{where}: {lib.get('internal_api')} {lib.get('version')}, {kernels} kernels")
    leftover = [v for v in PEER_HANDICAPS if v in os.environ]
    lines.append("peers' environment: " + (f"still sets {leftover}" if leftover else f"no {' or '.join(PEER_HANDICAPS)}"))
    return lines


def cpu_model():
    """The CPU's model name, family and model, and its vector extensions (Linux)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    field = lambda name: next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith(name)), "")
    flags = set(field("flags").split())
    simd = [f for f in ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"] if f in flags]
    return f"{field('model name')} (family {field('cpu family')}, model {field('model')}; {' '.join(simd) or 'no AVX2'})"
