"""Accuracy of int8 and bf16 models against the f32 model they come from, through the command
line: trains each network on Fashion-MNIST's training set (and digits on 80% of data/digits.csv),
quantizes it with `crank quantize --data <test set>` (int8 dynamic, int8 static calibrated on the
training set with `--calibrate`, bf16), and prints each one's test accuracy and the outputs'
largest difference from f32.

    python3 bench/quant/accuracy.py [--epochs 10]

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package (/usr/share/datasets).
Networks: the example 784-256-128-10 (examples/fashion-mnist.yaml), M (784-512-512-10) and the
digits example (examples/digits.yaml).
"""
import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FASHION = "/usr/share/datasets/fashion-mnist"
M_YAML = """seed: 1
layers:
  - {type: Dense, input_size: 784, output_size: 512, activation_function: ReLU}
  - {type: Dense, output_size: 512, activation_function: ReLU}
  - {type: Dense, output_size: 10, activation_function: Identity}
training:
  loss: SoftmaxCrossEntropy
  standardize: true
  optimizer: {type: Adam, lr: 0.001}
  epochs: 10
  batch_size: 128
  seed: 1
  metrics: [accuracy]
"""


def run(*args):
    out = subprocess.run([os.path.join(ROOT, "target", "release", "crank"), *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"crank {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "crank"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="crank-quant-accuracy-")
    with open(os.path.join(work, "m.yaml"), "w") as f:
        f.write(M_YAML)
    digits_train, digits_test = os.path.join(work, "digits-train.csv"), os.path.join(work, "digits-test.csv")
    with open(os.path.join(ROOT, "data", "digits.csv")) as f:
        lines = f.read().splitlines()
    header, rows = lines[0], lines[1:]
    random.Random(7).shuffle(rows)
    cut = len(rows) * 4 // 5
    for path, part in [(digits_train, rows[:cut]), (digits_test, rows[cut:])]:
        with open(path, "w") as f:
            f.write("\n".join([header] + part) + "\n")
    fashion_train = os.path.join(FASHION, "train-images-idx3-ubyte.gz")
    fashion_test = os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")
    cases = [
        ("digits 64-64-10", os.path.join(ROOT, "examples", "digits.yaml"), digits_train, digits_test),
        ("Fashion-MNIST 784-256-128-10", os.path.join(ROOT, "examples", "fashion-mnist.yaml"), fashion_train, fashion_test),
        ("Fashion-MNIST M 784-512-512-10", os.path.join(work, "m.yaml"), fashion_train, fashion_test),
    ]
    print(f"# crank quantize, {time.strftime('%Y-%m-%d')}, {args.epochs} epochs of Adam (digits: its example's own)")
    variants = [("int8", "int8", []), ("static", "int8", ["--calibrate"]), ("bf16", "bf16", [])]
    print(f"{'network':<32} {'f32 acc':>8} " + " ".join(f"{v + ' acc':>11}" for v, _, _ in variants)
          + " " + " ".join(f"{v + ' max |Δ|':>15}" for v, _, _ in variants) + f" {'max |f32|':>10}")
    for name, config, train, test in cases:
        if not os.path.exists(train):
            print(f"{name:<32} (no data: apt-get install dataset-fashion-mnist)")
            continue
        model = os.path.join(work, re.sub(r"\W+", "-", name) + ".crank")
        extra = [] if "digits" in name else ["--epochs", str(args.epochs)]
        run("train", config, "--data", train, "--out", model, *extra)
        acc, diff = {}, {}
        for v, p, calibrate in variants:
            calibrate = calibrate + [train] if calibrate else []
            report = run("quantize", model, "--precision", p, "--out", model + f".{v}.crank", "--data", test, *calibrate)
            line = next(l for l in report.splitlines() if l.startswith("accuracy"))
            acc["f32"], acc[v] = (float(x) for x in line.split()[1:3])
            m = re.search(r"largest output difference: ([\d.]+) \(the f32 outputs' largest magnitude: ([\d.]+)\)", report)
            diff[v], scale = float(m.group(1)), float(m.group(2))
        print(f"{name:<32} {acc['f32']:>8.4f} " + " ".join(f"{acc[v]:>11.4f}" for v, _, _ in variants) + " "
              + " ".join(f"{diff[v]:>15.4f}" for v, _, _ in variants) + f" {scale:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
