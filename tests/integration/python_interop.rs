//! safetensors files agree with Python: a numpy forward pass over crank's file gives crank's
//! predictions, and crank loads a PyTorch-layout `state_dict` and predicts what numpy does.
//!
//! Needs `python3` with the `safetensors` and `numpy` packages (`.ci/run` installs them). Without
//! them the test says so and passes, except under CI (`CI` set), where it fails.

use crate::helpers::{python_has, run_python};
use crank::io::Format;
use crank::spec::ModelSpec;
use crank::{Activation, Sequential};
use ndarray::Array2;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::Path;

fn write_arrays(path: &Path, arrays: &[(&str, &Array2<f32>)]) {
    let bytes: Vec<Vec<u8>> = arrays
        .iter()
        .map(|(_, a)| a.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = arrays.iter().zip(&bytes).map(|((name, a), b)| {
        (
            name.to_string(),
            TensorView::new(Dtype::F32, a.shape().to_vec(), b).unwrap(),
        )
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn read_array(bytes: &[u8], name: &str) -> Array2<f32> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let t = file.tensor(name).unwrap();
    let values = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Array2::from_shape_vec((t.shape()[0], t.shape()[1]), values).unwrap()
}

#[test]
fn safetensors_agree_with_numpy_both_ways() {
    if !python_has("safetensors, numpy") {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python_interop");
    std::fs::create_dir_all(&dir).unwrap();

    let model = Sequential::<f32>::builder(6)
        .dense(16, Activation::Relu)
        .dense(12, Activation::LeakyRelu { alpha: 0.1 })
        .dense(8, Activation::Tanh)
        .dense(5, Activation::Identity)
        .seed(21)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((9, 6), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 3.0 - 1.0);
    model
        .save(dir.join("crank_model.safetensors"), Format::Safetensors)
        .unwrap();
    write_arrays(
        &dir.join("crank_io.safetensors"),
        &[("x", &x), ("y", &model.predict(x.view()).unwrap())],
    );

    let text = run_python("safetensors_interop.py", &dir);
    assert!(text.contains("crank -> numpy"), "{text}");

    let spec = ModelSpec::from_yaml(
        "layers: [{type: Dense, input_size: 4, output_size: 8, activation_function: Tanh}, {type: Dense, output_size: 3}]",
    )
    .unwrap();
    let bytes = std::fs::read(dir.join("torch_model.safetensors")).unwrap();
    let loaded = Sequential::<f32>::from_safetensors(&bytes, Some(&spec)).unwrap();
    let io = std::fs::read(dir.join("torch_io.safetensors")).unwrap();
    let got = loaded.predict(read_array(&io, "x").view()).unwrap();
    let want = read_array(&io, "y");
    assert!(
        got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
        "{got} vs {want}"
    );
}
