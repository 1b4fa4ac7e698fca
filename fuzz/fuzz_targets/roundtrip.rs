//! An arbitrary model, with arbitrary finite weights, saved and loaded through every format
//! comes back equal: the same architecture and bitwise the same weights.
#![no_main]

use arbitrary::Arbitrary;
use crank::io::Format;
use crank::spec::{
    ActivationSpec, BatchNormSpec, DenseSpec, DropoutSpec, LayerNormSpec, LayerSpec, ModelSpec,
};
use crank::{Activation, Scalar, Sequential};
use libfuzzer_sys::fuzz_target;

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

fn check<F: Scalar>(spec: &ModelSpec, overwrite: &[f64]) {
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
        check::<f64>(&spec, &m.weights);
    } else {
        check::<f32>(&spec, &m.weights);
    }
});
