"""Checks crank's ONNX exports with the reference tools: each file passes onnx.checker
(full_check, with shape inference) and ONNX Runtime predicts what crank predicts.

Usage: python3 onnx_runtime_check.py DIR

DIR/cases.json lists, per file in DIR: "x" (input rows), "y" (crank's predictions), "opset"
(the operator set crank is expected to pick), "metadata" (keys expected in the model's
metadata), "dtype" ("float32" or "float64") and "runtime": "onnxruntime", or "reference" for
onnx's reference evaluator (ONNX Runtime has no double kernels for LeakyRelu, Softplus and
Gelu, which ONNX defines for double). Prints one line per file; exits non-zero on the first
disagreement.
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx.reference import ReferenceEvaluator


def main(folder):
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f)
    for name, case in sorted(cases.items()):
        path = os.path.join(folder, name)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        opsets = {o.domain: o.version for o in model.opset_import}
        assert opsets == {"": case["opset"]}, (name, opsets)
        metadata = {p.key: p.value for p in model.metadata_props}
        assert sorted(metadata) == sorted(case["metadata"]), (name, metadata)
        (input,) = model.graph.input
        assert input.type.tensor_type.shape.dim[0].dim_param == "batch", (name, input)
        x = np.asarray(case["x"], dtype=case["dtype"])
        if case["runtime"] == "onnxruntime":
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            runtime = f"onnxruntime {ort.__version__}"
            (y,) = session.run(None, {input.name: x})
        else:
            runtime = f"onnx {onnx.__version__} reference evaluator"
            (y,) = ReferenceEvaluator(model).run(None, {input.name: x})
        want = np.asarray(case["y"])
        assert y.dtype == np.dtype(case["dtype"]), (name, y.dtype)
        scale = np.abs(want).max() + 1.0
        worst = float(np.abs(y - want).max() / scale)
        assert worst <= 1e-5, (name, worst, y, want)
        print(f"{name}: onnx.checker ok, opset {case['opset']}, {runtime} agrees to {worst:.1e}")


if __name__ == "__main__":
    main(sys.argv[1])
