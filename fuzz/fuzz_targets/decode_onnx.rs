//! Arbitrary bytes imported as an ONNX model give `Ok` or `Err`, never a panic, an abort or a
//! huge allocation; a model that imports predicts (`Ok` or `Err`), and exports and imports back.
#![no_main]

use crank::{Scalar, Sequential};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;

fuzz_target!(|data: &[u8]| {
    run::<f32>(data);
    run::<f64>(data);
});

fn run<F: Scalar>(data: &[u8]) {
    let Ok(model) = Sequential::<F>::from_onnx(data) else {
        return;
    };
    // Keep runs fast: the limits allow models far larger than a fuzzing step should build.
    if model.num_params() > 1 << 16 {
        return;
    }
    let x = Array2::from_shape_fn((3, model.input_size()), |(i, j)| {
        F::of((i + j) as f64 - 2.0)
    });
    let _ = model.predict(x.view());
    let again = model.to_onnx().expect("an imported model exports");
    Sequential::<F>::from_onnx(&again).expect("an export imports");
}
