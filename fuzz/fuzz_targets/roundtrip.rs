//! An arbitrary model, with arbitrary finite weights, saved and loaded through every format
//! comes back equal: the same architecture and bitwise the same weights. Quantized to int8 or
//! bf16 (when the weights allow it), through JSON and bincode, the same holds for its tensors.
#![no_main]

use arbitrary::Arbitrary;
use crank::io::Format;
use crank::quant::Precision;
use crank::spec::{
    ActivationSpec, BatchNormSpec, DenseSpec, DropoutSpec, LayerNormSpec, LayerSpec, ModelSpec,
};
use crank::{Activation, Scalar, Sequential};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

#[derive(Arbitrary, Debug)]
struct Layer {
    kind: u8,
    units: u8,
    activation: u8,
    alpha: f64,
    named: bool,
}

#[derive(Arbitrary, Debug)]
struct Model {
    input: u8,
    layers: Vec<Layer>,
    seed: u64,
    f64: bool,
    /// Values written over the weights, in order, to cover every bit pattern a float can have.
    weights: Vec<f64>,
    /// 1: quantize to int8, 2: to bf16, 3: to int8 calibrated (static), otherwise not.
    quantize: u8,
}

fn activation(code: u8, alpha: f64) -> Activation {
    match code % 8 {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu {
            alpha: if alpha.is_finite() { alpha } else { 0.01 },
        },
        3 => Activation::Sigmoid,
        4 => Activation::Tanh,
        5 => Activation::Gelu,
        6 => Activation::Softplus,
        _ => Activation::Softmax,
    }
}

/// Every tensor's values, bitwise.
fn tensor_bits<F: Scalar>(model: &Sequential<F>) -> Vec<u64> {
    let mut out = Vec::new();
    for layer in model.layers() {
        layer.visit_tensors(&mut |t| {
            out.extend(t.data.values().iter().map(|v| v.as_f64().to_bits()));
        });
    }
    out
}

/// `model` quantized to `precision` (calibrated on a few rows when `calibrated`), through JSON
/// and bincode: the same description and tensors, and the same predictions.
fn check_quantized<F: Scalar>(model: &Sequential<F>, precision: Precision, calibrated: bool) {
    let x = Array2::from_shape_fn((3, model.input_size()), |(i, j)| {
        F::of((i + j) as f64 - 2.0)
    });
    // Weights beyond what the precision holds (past f32's range, say), or activations beyond
    // f32's range in calibration, are refused: that is an error, not a panic.
    let q = if calibrated {
        model.quantize_static(x.view())
    } else {
        model.quantize(precision)
    };
    let Ok(q) = q else {
        return;
    };
    let want = q.predict(x.view()).ok();
    for format in [Format::Json, Format::Bincode] {
        let bytes = q.to_bytes(format).unwrap();
        let back = Sequential::<F>::from_bytes(&bytes, format).unwrap();
        assert_eq!(back.to_spec(), q.to_spec(), "{precision} {format:?}");
        assert_eq!(
            tensor_bits(&back),
            tensor_bits(&q),
            "{precision} {format:?}"
        );
        let got = back.predict(x.view()).ok();
        let same = match (&got, &want) {
            (Some(a), Some(b)) => a.iter().zip(b).all(|(u, v)| {
                let (u, v) = (u.as_f64(), v.as_f64());
                u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan())
            }),
            (None, None) => true,
            _ => false,
        };
        assert!(same, "{precision} {format:?}: predictions differ");
    }
}

fn check<F: Scalar>(spec: &ModelSpec, overwrite: &[f64], quantize: u8) {
    let mut model = Sequential::<F>::from_spec(spec).unwrap();
    let mut values = overwrite
        .iter()
        .map(|&v| F::of(v))
        .filter(|v| v.is_finite());
    model.visit_params(|_, p| {
        for (slot, v) in p.value.iter_mut().zip(&mut values) {
            *slot = v;
        }
    });
    let mut want = Vec::new();
    model.visit_params(|_, p| want.push(p.value.to_vec()));
    for format in [Format::Json, Format::Bincode, Format::Safetensors] {
        let bytes = model.to_bytes(format).unwrap();
        let mut back = Sequential::<F>::from_bytes(&bytes, format).unwrap();
        assert_eq!(back.to_spec(), model.to_spec(), "{format:?}");
        let mut got = Vec::new();
        back.visit_params(|_, p| got.push(p.value.to_vec()));
        assert!(
            got.iter()
                .flatten()
                .zip(want.iter().flatten())
                .all(|(a, b)| a.as_f64().to_bits() == b.as_f64().to_bits()),
            "{format:?}: weights differ"
        );
    }
    match quantize {
        1 => check_quantized(&model, Precision::Int8, false),
        2 => check_quantized(&model, Precision::Bf16, false),
        3 => check_quantized(&model, Precision::Int8, true),
        _ => {}
    }
}

fuzz_target!(|m: Model| {
    let layers: Vec<LayerSpec> = m
        .layers
        .iter()
        .take(4)
        .enumerate()
        .map(|(i, l)| {
            let name = l.named.then(|| format!("layer {i} \u{e9}\""));
            let input_size = (i == 0).then_some(1 + m.input as usize % 24);
            match l.kind % 5 {
                1 => LayerSpec::Dropout(DropoutSpec {
                    name,
                    input_size,
                    rate: (l.units % 10) as f64 / 10.0,
                    seed: Some(m.seed),
                }),
                2 => LayerSpec::BatchNorm(BatchNormSpec {
                    name,
                    input_size,
                    momentum: 0.1,
                    eps: 1e-5,
                }),
                3 => LayerSpec::LayerNorm(LayerNormSpec {
                    name,
                    input_size,
                    eps: 1e-5,
                }),
                4 => LayerSpec::Activation(ActivationSpec {
                    name,
                    input_size,
                    activation_function: activation(l.activation, l.alpha),
                }),
                _ => LayerSpec::Dense(DenseSpec {
                    name,
                    input_size,
                    output_size: 1 + l.units as usize % 24,
                    activation_function: activation(l.activation, l.alpha),
                }),
            }
        })
        .collect();
    if layers.is_empty() {
        return;
    }
    let spec = ModelSpec {
        seed: Some(m.seed),
        layers,
        preprocessing: None,
    };
    if m.f64 {
        check::<f64>(&spec, &m.weights, m.quantize);
    } else {
        check::<f32>(&spec, &m.weights, m.quantize);
    }
});
