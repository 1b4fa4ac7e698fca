"""Writes the ONNX files that crank's import is tested on, as PyTorch and scikit-learn export
them, with onnxruntime's outputs for fixed inputs.

Usage: python3 tests/python/make_onnx_fixtures.py tests/fixtures/onnx

Made once with PyTorch 2.15 (`torch.onnx.export`, both exporters), scikit-learn 1.9.1 with
skl2onnx 1.20.0, onnx 1.23.2 and onnxruntime 1.32.0; the files are committed, so the tests need
none of these. Writes, in the folder:

  torch_script.onnx     nn.Sequential(Flatten, Linear, ReLU, BatchNorm1d, Dropout, Linear,
                        Softmax), TorchScript exporter (Gemm with transB=1, Flatten, BN)
  torch_dynamo.onnx     nn.Sequential(Linear, GELU, LayerNorm, Linear, Tanh, Linear),
                        torch.export-based exporter (opset 20+: Gemm, Gelu, LayerNormalization)
  torch_bn_relu.onnx    nn.Sequential(Linear, BatchNorm1d, ReLU, Linear, LayerNorm, LeakyReLU,
                        Linear): activations after normalisation (TorchScript exporter)
  torch_log_softmax.onnx  nn.Sequential(Flatten, Linear, BatchNorm1d, ReLU, Dropout, Linear,
                        LogSoftmax) at opset 11 (a classifier for NLLLoss; older defaults)
  matmul_add.onnx       the MatMul + Add form some exporters write, with Identity and Dropout
                        (built with onnx.helper)
  sklearn_multiclass.onnx  MLPClassifier, 3 integer classes (ZipMap, ArgMax, ...)
  sklearn_binary.onnx      MLPClassifier, 2 string classes (Sigmoid, then Sub/Concat)
  sklearn_regressor.onnx   MLPRegressor (logistic hidden layer, Reshape at the end)
  sklearn_pipeline.onnx    make_pipeline(StandardScaler, MLPClassifier): ONNX-ML's Scaler
                           first, on features far from unit scale
  expected.json         per file: the input rows "x", onnxruntime's outputs "y" (the
                        probabilities for classifiers) and "labels" for classifiers
"""
import json
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

warnings.filterwarnings("ignore")


def run(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})


def torch_models(folder, rng):
    import torch

    torch.manual_seed(0)
    files = {}
    seq = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.BatchNorm1d(8),
        torch.nn.Dropout(0.2), torch.nn.Linear(8, 3), torch.nn.Softmax(dim=1))
    # Running statistics that are not the initial zeros and ones.
    seq.train()
    with torch.no_grad():
        for _ in range(20):
            seq(torch.randn(32, 5) * 2 + 1)
    seq.eval()
    path = os.path.join(folder, "torch_script.onnx")
    torch.onnx.export(seq, (torch.randn(2, 5),), path, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    files["torch_script.onnx"] = 5

    seq = torch.nn.Sequential(
        torch.nn.Linear(6, 10), torch.nn.GELU(), torch.nn.LayerNorm(10), torch.nn.Linear(10, 7),
        torch.nn.Tanh(), torch.nn.Linear(7, 2))
    with torch.no_grad():
        seq[2].weight.uniform_(0.5, 1.5)
        seq[2].bias.uniform_(-0.5, 0.5)
    seq.eval()
    path = os.path.join(folder, "torch_dynamo.onnx")
    torch.onnx.export(seq, (torch.randn(2, 6),), path, dynamo=True, input_names=["x"],
                      output_names=["y"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                      verbose=False)
    # Weights inside the file, not beside it.
    model = onnx.load(path)
    onnx.save_model(model, path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    files["torch_dynamo.onnx"] = 6

    seq = torch.nn.Sequential(
        torch.nn.Linear(4, 9), torch.nn.BatchNorm1d(9), torch.nn.ReLU(), torch.nn.Linear(9, 6),
        torch.nn.LayerNorm(6), torch.nn.LeakyReLU(0.05), torch.nn.Linear(6, 3))
    seq.train()
    with torch.no_grad():
        for _ in range(20):
            seq(torch.randn(32, 4) * 3 - 1)
    seq.eval()
    path = os.path.join(folder, "torch_bn_relu.onnx")
    torch.onnx.export(seq, (torch.randn(2, 4),), path, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    files["torch_bn_relu.onnx"] = 4

    seq = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.ReLU(),
        torch.nn.Dropout(0.1), torch.nn.Linear(7, 4), torch.nn.LogSoftmax(dim=1))
    seq.train()
    with torch.no_grad():
        for _ in range(20):
            seq(torch.randn(32, 5) * 2)
    seq.eval()
    path = os.path.join(folder, "torch_log_softmax.onnx")
    torch.onnx.export(seq, (torch.randn(2, 5),), path, dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=11)
    files["torch_log_softmax.onnx"] = 5
    return files


def matmul_add(folder, rng):
    w1 = rng.normal(size=(4, 6)).astype(np.float32)
    b1 = rng.normal(size=(6,)).astype(np.float32)
    w2 = rng.normal(size=(6, 3)).astype(np.float32)
    b2 = rng.normal(size=(1, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"], name="id"),
        helper.make_node("MatMul", ["x1", "w1"], ["h"], name="fc1/MatMul"),
        helper.make_node("Add", ["h", "b1"], ["h1"], name="fc1/Add"),
        helper.make_node("LeakyRelu", ["h1"], ["a1"], name="act", alpha=0.2),
        helper.make_node("Dropout", ["a1"], ["d1"], name="drop"),
        helper.make_node("MatMul", ["d1", "w2"], ["o"], name="fc2/MatMul"),
        helper.make_node("Add", ["b2", "o"], ["y"], name="fc2/Add"),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(a, n) for a, n in [(w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2")]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(folder, "matmul_add.onnx"))
    return {"matmul_add.onnx": 4}


def sklearn_models(folder, rng):
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from skl2onnx import to_onnx

    files = {}
    x = rng.normal(size=(200, 4)).astype(np.float32)
    cases = [
        ("sklearn_multiclass.onnx",
         MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0),
         (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 0.5).astype(int)),
        ("sklearn_binary.onnx",
         MLPClassifier(hidden_layer_sizes=(8, 5), activation="tanh", max_iter=300, random_state=0),
         np.where(x[:, 0] * x[:, 1] > 0, "same", "differ")),
        ("sklearn_regressor.onnx",
         MLPRegressor(hidden_layer_sizes=(8,), activation="logistic", max_iter=300, random_state=0),
         x[:, 0] * 2 - x[:, 3]),
    ]
    for name, estimator, y in cases:
        estimator.fit(x, y)
        model = to_onnx(estimator, x[:1])
        onnx.save(model, os.path.join(folder, name))
        files[name] = 4

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    wide = x * np.array([10.0, 0.1, 3.0, 50.0], dtype=np.float32) + np.float32(7.0)
    pipeline = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), max_iter=300,
                                                             random_state=0))
    pipeline.fit(wide, (x[:, 0] + x[:, 3] > 0).astype(int))
    onnx.save(to_onnx(pipeline, wide[:1]), os.path.join(folder, "sklearn_pipeline.onnx"))
    files["sklearn_pipeline.onnx"] = 4
    return files


def main(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(7)
    files = {}
    files.update(torch_models(folder, rng))
    files.update(matmul_add(folder, rng))
    files.update(sklearn_models(folder, rng))
    expected = {}
    for name, width in sorted(files.items()):
        path = os.path.join(folder, name)
        onnx.checker.check_model(onnx.load(path), full_check=True)
        x = rng.normal(size=(6, width)).astype(np.float32)
        if name == "sklearn_pipeline.onnx":
            x = x * np.array([10.0, 0.1, 3.0, 50.0], dtype=np.float32) + np.float32(7.0)
        outputs = run(path, x)
        entry = {"x": x.tolist()}
        if name.startswith("sklearn") and "regressor" not in name:
            labels, probabilities = outputs
            classes = sorted(probabilities[0].keys())
            entry["labels"] = [str(label) for label in labels]
            entry["y"] = [[float(p[c]) for c in classes] for p in probabilities]
        elif name == "torch_log_softmax.onnx":
            # crank reads it as a classifier: its probabilities, and the classes 0, 1, ...
            log_p = np.asarray(outputs[0], dtype=np.float64)
            entry["labels"] = [str(c) for c in log_p.argmax(axis=1)]
            entry["y"] = np.exp(log_p).tolist()
        else:
            entry["y"] = np.asarray(outputs[0], dtype=np.float64).reshape(6, -1).tolist()
        expected[name] = entry
        print(name, "ok")
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
