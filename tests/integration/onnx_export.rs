//! crank's ONNX exports pass `onnx.checker` and ONNX Runtime predicts what crank predicts, for
//! every layer kind and activation, in f32 and f64; and each export imports back into crank as
//! the same model.
//!
//! The check against ONNX Runtime needs `python3` with the `onnx` and `onnxruntime` packages
//! (`.ci/run` installs them). Without them that part says so and passes, except under CI (`CI`
//! set), where it fails.

use crate::helpers::{python_has, run_python};
use crank::optim::Sgd;
use crank::spec::Preprocessing;
use crank::{Activation, Loss, Scalar, Sequential};
use ndarray::Array2;
use serde_json::json;
use std::path::Path;

fn inputs<F: Scalar>(rows: usize, cols: usize) -> Array2<F> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        F::of(((i * 7 + j * 5) % 11) as f64 / 2.0 - 2.0 + j as f64)
    })
}

/// Every layer kind and every activation, with standardisation and class names, after a few
/// training steps (so that batch normalisation's running statistics are not their defaults).
fn every_kind<F: Scalar>() -> Sequential<F> {
    let mut model = Sequential::<F>::builder(6)
        .dense(16, Activation::Relu)
        .dense(12, Activation::LeakyRelu { alpha: 0.1 })
        .dense(10, Activation::Sigmoid)
        .batch_norm()
        .activation(Activation::Relu)
        .dense(8, Activation::Tanh)
        .dropout(0.3)
        .dense(8, Activation::Softplus)
        .layer_norm()
        .dense(6, Activation::Gelu)
        .dense(4, Activation::Softmax)
        .seed(3)
        .build()
        .unwrap();
    train(&mut model);
    let classes = ["a", "b", "c", "d"].map(String::from).to_vec();
    model
        .set_preprocessing(Some(Preprocessing {
            mean: (0..6).map(|j| j as f64 * 0.3).collect(),
            std: (0..6).map(|j| 1.0 + j as f64 * 0.25).collect(),
            classes: Some(classes),
            label: Some("letter".into()),
            loss: Some(Loss::SoftmaxCrossEntropy),
        }))
        .unwrap();
    model
}

fn train<F: Scalar>(model: &mut Sequential<F>) {
    let x = inputs::<F>(32, model.input_size());
    let y = Array2::from_shape_fn((32, model.output_size()), |(i, j)| {
        F::of(((i + j) % 3) as f64 / 3.0)
    });
    for _ in 0..5 {
        model
            .train_step(x.view(), &y, &Loss::Mse, &mut Sgd::new(0.05).unwrap())
            .unwrap();
    }
}

/// Dense and batch normalisation only: the oldest operator set crank writes, and operators
/// ONNX Runtime runs in double precision too.
fn plain<F: Scalar>() -> Sequential<F> {
    let mut model = Sequential::<F>::builder(5)
        .dense(7, Activation::Identity)
        .batch_norm()
        .activation(Activation::Relu)
        .dense(6, Activation::Sigmoid)
        .dense(4, Activation::Tanh)
        .dense(3, Activation::Softmax)
        .seed(4)
        .build()
        .unwrap();
    train(&mut model);
    model
}

/// Layer normalisation without GELU: operator set 17.
fn layer_norm() -> Sequential<f32> {
    let mut model = Sequential::<f32>::builder(5)
        .layer_norm()
        .dense(3, Activation::Relu)
        .seed(5)
        .build()
        .unwrap();
    train(&mut model);
    model
}

fn case<F: Scalar>(
    dir: &Path,
    name: &str,
    model: &Sequential<F>,
    opset: i64,
    runtime: &str,
) -> serde_json::Value {
    model.save_onnx(dir.join(name)).unwrap();
    let x = inputs::<F>(9, model.input_size());
    // The graph takes raw features, as `crank predict` does: standardised here for the library.
    let mut standardized = x.clone();
    if let Some(p) = model.preprocessing() {
        p.standardize(&mut standardized).unwrap();
    }
    let y = model.predict(standardized.view()).unwrap();
    let metadata: Vec<&str> = match model.preprocessing() {
        Some(_) => vec![
            "crank.classes",
            "crank.label",
            "crank.loss",
            "crank.standardization",
        ],
        None => vec![],
    };
    let rows = |a: &Array2<F>| -> Vec<Vec<f64>> {
        a.rows()
            .into_iter()
            .map(|r| r.iter().map(|v| v.as_f64()).collect())
            .collect()
    };
    json!({
        "x": rows(&x), "y": rows(&y), "opset": opset, "metadata": metadata, "runtime": runtime,
        "dtype": if F::NAME == "f32" { "float32" } else { "float64" },
    })
}

/// The export reads back as the same model: the same layers, names and sizes, the same
/// preprocessing, and the same predictions (bitwise in f32; in f64 within the rounding of the
/// epsilons and slopes, which ONNX attributes hold in single precision).
fn round_trip<F: Scalar>(model: &Sequential<F>) {
    let back = Sequential::<F>::from_onnx(&model.to_onnx().unwrap()).unwrap();
    let x = inputs::<F>(9, model.input_size());
    let (a, b) = (
        model.predict(x.view()).unwrap(),
        back.predict(x.view()).unwrap(),
    );
    for (p, q) in a.iter().zip(&b) {
        let (p, q) = (p.as_f64(), q.as_f64());
        match F::NAME {
            "f32" => assert_eq!(p.to_bits(), q.to_bits(), "{a} vs {b}"),
            _ => assert!((p - q).abs() <= 1e-6 * (1.0 + p.abs()), "{a} vs {b}"),
        }
    }
    let (mut spec, got) = (model.to_spec(), back.to_spec());
    // Dropout is the identity at inference: not in the graph.
    spec.layers.retain(|l| l.kind() != "Dropout");
    let outline = |s: &crank::spec::ModelSpec| -> Vec<(&'static str, Option<String>)> {
        s.layers
            .iter()
            .map(|l| (l.kind(), l.name().map(str::to_string)))
            .collect()
    };
    assert_eq!(outline(&spec), outline(&got));
    assert_eq!(spec.preprocessing, got.preprocessing);
}

#[test]
fn exports_read_back_as_the_same_model() {
    round_trip(&every_kind::<f32>());
    round_trip(&every_kind::<f64>());
    round_trip(&plain::<f32>());
    round_trip(&layer_norm());
}

#[test]
fn exports_pass_onnx_checker_and_onnxruntime_agrees() {
    if !python_has("onnx, onnxruntime, numpy") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("onnx_export");
    std::fs::create_dir_all(&dir).unwrap();
    const ORT: &str = "onnxruntime";
    let cases = json!({
        "every_kind_f32.onnx": case(&dir, "every_kind_f32.onnx", &every_kind::<f32>(), 20, ORT),
        // ONNX Runtime has no double kernels for LeakyRelu, Softplus and Gelu.
        "every_kind_f64.onnx":
            case(&dir, "every_kind_f64.onnx", &every_kind::<f64>(), 20, "reference"),
        "plain_f32.onnx": case(&dir, "plain_f32.onnx", &plain::<f32>(), 13, ORT),
        "plain_f64.onnx": case(&dir, "plain_f64.onnx", &plain::<f64>(), 13, ORT),
        "layer_norm_f32.onnx": case(&dir, "layer_norm_f32.onnx", &layer_norm(), 17, ORT),
    });
    std::fs::write(dir.join("cases.json"), cases.to_string()).unwrap();
    let text = run_python("onnx_runtime_check.py", &dir);
    assert_eq!(text.matches(" agrees ").count(), 5, "{text}");
    assert_eq!(text.matches("onnxruntime 1.").count(), 4, "{text}");
}
