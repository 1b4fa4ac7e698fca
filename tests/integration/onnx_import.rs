//! ONNX files as PyTorch and scikit-learn export them import into crank and predict what
//! ONNX Runtime predicts. The files and ONNX Runtime's outputs are fixtures made once by
//! `tests/python/make_onnx_fixtures.py` (PyTorch 2.15, scikit-learn 1.9.1, skl2onnx 1.20.0,
//! onnxruntime 1.32.0).

use crank::{Activation, Scalar, Sequential};
use ndarray::Array2;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn expected() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn matrix<F: Scalar>(value: &serde_json::Value) -> Array2<F> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(value.clone()).unwrap();
    Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| F::of(rows[i][j]))
}

/// A classifier's probabilities from its outputs, as `crank predict` writes them.
fn probabilities<F: Scalar>(model: &Sequential<F>, outputs: &Array2<F>) -> Array2<F> {
    let classes = model.preprocessing().unwrap().classes.as_ref().unwrap();
    let mut p = Array2::zeros((outputs.nrows(), classes.len()));
    if classes.len() == 2 && outputs.ncols() == 1 {
        for (mut row, z) in p.rows_mut().into_iter().zip(outputs.column(0)) {
            let mut q = [F::zero()];
            Activation::Sigmoid.forward_batch(&[*z], &mut q, 1).unwrap();
            (row[0], row[1]) = (F::one() - q[0], q[0]);
        }
    } else {
        let cols = outputs.ncols();
        Activation::Softmax
            .forward_batch(outputs.as_slice().unwrap(), p.as_slice_mut().unwrap(), cols)
            .unwrap();
    }
    p
}

fn check<F: Scalar>(name: &str, entry: &serde_json::Value, tolerance: f64) {
    let bytes = std::fs::read(fixtures().join(name)).unwrap();
    let import = crank::onnx::import::<F>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let model = import.model;
    let mut x = matrix::<F>(&entry["x"]);
    // The graph takes raw features: the model keeps its standardisation (a pipeline's scaler).
    if let Some(p) = model.preprocessing() {
        p.standardize(&mut x).unwrap();
    }
    let want = matrix::<f64>(&entry["y"]);
    let mut got = model.predict(x.view()).unwrap();
    if let Some(labels) = entry.get("labels") {
        got = probabilities(&model, &got);
        let classes = model.preprocessing().unwrap().classes.clone().unwrap();
        let labels: Vec<String> = serde_json::from_value(labels.clone()).unwrap();
        for (row, label) in got.rows().into_iter().zip(&labels) {
            let best = crank::metrics::argmax(row.iter().copied()).unwrap();
            assert_eq!(&classes[best], label, "{name}: {got}");
        }
        assert!(
            import
                .notes
                .iter()
                .any(|n| n.contains("label post-processing") || n.contains("log-probabilities")),
            "{name}: {:?}",
            import.notes
        );
    }
    assert_eq!(got.dim(), want.dim(), "{name}");
    for (g, w) in got.iter().zip(&want) {
        let g = g.as_f64();
        assert!(
            (g - w).abs() <= tolerance * (1.0 + w.abs()),
            "{name} ({}): {got} vs {want}",
            F::NAME
        );
    }
}

#[test]
fn pytorch_and_sklearn_exports_predict_what_onnxruntime_does() {
    let expected = expected();
    assert_eq!(expected.len(), 9);
    for (name, entry) in &expected {
        check::<f32>(name, entry, 1e-5);
        // Read into f64, the same weights predict the same within f32's rounding of ONNX
        // Runtime's result.
        check::<f64>(name, entry, 1e-5);
    }
}

#[test]
fn imported_models_have_the_exporters_architecture() {
    let load = |name: &str| Sequential::<f32>::load_onnx(fixtures().join(name)).unwrap();
    let spec = load("torch_script.onnx").to_spec();
    let kinds: Vec<&str> = spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(kinds, ["Dense", "BatchNorm", "Dense"]);
    let spec = load("torch_dynamo.onnx").to_spec();
    let kinds: Vec<&str> = spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(kinds, ["Dense", "LayerNorm", "Dense", "Dense"]);
    // What the file says of itself.
    let bytes = std::fs::read(fixtures().join("matmul_add.onnx")).unwrap();
    let import = crank::onnx::import::<f32>(&bytes).unwrap();
    assert_eq!((import.opset, import.ir_version), (13, 7));
    let bytes = std::fs::read(fixtures().join("torch_bn_relu.onnx")).unwrap();
    let import = crank::onnx::import::<f32>(&bytes).unwrap();
    assert_eq!((import.opset, import.ir_version), (17, 8));
    assert!(
        import.producer.starts_with("pytorch 2."),
        "{}",
        import.producer
    );
    // Activations after normalisation are layers of their own.
    let spec = load("torch_bn_relu.onnx").to_spec();
    let kinds: Vec<&str> = spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(
        kinds,
        [
            "Dense",
            "BatchNorm",
            "Activation",
            "Dense",
            "LayerNorm",
            "Activation",
            "Dense"
        ]
    );
    let binary = load("sklearn_binary.onnx");
    let p = binary.preprocessing().unwrap();
    assert_eq!(
        p.classes.as_deref(),
        Some(&["differ".to_string(), "same".to_string()][..])
    );
    assert_eq!(p.loss, Some(crank::Loss::BinaryCrossEntropy));
    assert_eq!(binary.output_size(), 1);
    let multi = load("sklearn_multiclass.onnx");
    let p = multi.preprocessing().unwrap();
    assert_eq!(p.classes.as_ref().unwrap(), &["0", "1", "2"]);
    assert_eq!(p.loss, Some(crank::Loss::SoftmaxCrossEntropy));
    assert!(load("sklearn_regressor.onnx").preprocessing().is_none());
    // A StandardScaler in the pipeline becomes the model's standardisation.
    let pipeline = load("sklearn_pipeline.onnx");
    let p = pipeline.preprocessing().unwrap();
    assert!(
        p.mean.iter().all(|&m| (m - 7.0).abs() < 5.0),
        "{:?}",
        p.mean
    );
    assert!(p.std[3] > 10.0 && p.std[1] < 1.0, "{:?}", p.std);
}
