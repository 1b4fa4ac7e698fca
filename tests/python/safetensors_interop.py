"""Checks crank's safetensors files against a plain numpy forward pass, and writes a file the
way PyTorch's `save_file(model.state_dict())` would, for crank to load.

Usage: python3 safetensors_interop.py DIR

DIR/crank_model.safetensors  a model saved by crank (PyTorch names: N.weight [out, in], N.bias)
DIR/crank_io.safetensors     "x" (inputs) and "y" (crank's predictions)

Writes DIR/torch_model.safetensors (a torch.nn.Sequential(Linear(4, 8), Tanh(), Linear(8, 3))
state_dict) and DIR/torch_io.safetensors ("x" and the numpy forward pass "y").
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file
from safetensors import safe_open

ACTIVATIONS = {
    "Identity": lambda z: z,
    "ReLU": lambda z: np.maximum(z, 0),
    "Tanh": np.tanh,
    "Sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "Softplus": lambda z: np.logaddexp(0, z),
}


def activation(spec):
    if isinstance(spec, dict) and "LeakyReLU" in spec:
        alpha = spec["LeakyReLU"]["alpha"]
        return lambda z: np.where(z > 0, z, alpha * z)
    if spec == "Softmax":
        def softmax(z):
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return softmax
    return ACTIVATIONS[spec]


def main(folder):
    path = f"{folder}/crank_model.safetensors"
    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata()
    assert metadata["format"] == "crank", metadata
    spec = json.loads(metadata["crank_spec"])
    tensors = load_file(path)
    io = load_file(f"{folder}/crank_io.safetensors")
    h = io["x"].astype(np.float64)
    index = 0
    expected = set()
    for layer in spec["layers"]:
        w, b = tensors[f"{index}.weight"], tensors[f"{index}.bias"]
        expected |= {f"{index}.weight", f"{index}.bias"}
        assert w.shape == (layer["output_size"], layer["input_size"]), (w.shape, layer)
        h = activation(layer.get("activation_function", "Identity"))(h @ w.T.astype(np.float64) + b)
        index += 1 if layer.get("activation_function", "Identity") == "Identity" else 2
    assert set(tensors) == expected, (sorted(tensors), sorted(expected))
    err = np.abs(h - io["y"]).max()
    print(f"crank -> numpy: {len(spec['layers'])} layers, max |difference| {err:.3g}")
    assert err < 1e-5, err

    # The other way: a state_dict laid out as torch.nn.Sequential(Linear(4, 8), Tanh(), Linear(8, 3)).
    rng = np.random.default_rng(7)
    state = {
        "0.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "0.bias": rng.standard_normal(8).astype(np.float32),
        "2.weight": rng.standard_normal((3, 8)).astype(np.float32),
        "2.bias": rng.standard_normal(3).astype(np.float32),
    }
    save_file(state, f"{folder}/torch_model.safetensors")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = np.tanh(x @ state["0.weight"].T + state["0.bias"]) @ state["2.weight"].T + state["2.bias"]
    save_file({"x": x, "y": y.astype(np.float32)}, f"{folder}/torch_io.safetensors")
    print("numpy -> crank: wrote a PyTorch-layout state_dict")


if __name__ == "__main__":
    main(sys.argv[1])
