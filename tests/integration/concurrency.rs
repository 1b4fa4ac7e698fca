//! A trained model serves predictions from many threads at once.

use crank::{Activation, Sequential, Workspace};
use ndarray::Array2;
use std::sync::Arc;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn eight_threads_share_one_model() {
    assert_send_sync::<Sequential<f32>>();
    let model = Arc::new(
        Sequential::<f32>::builder(32)
            .dense(64, Activation::Gelu)
            .dense(64, Activation::Relu)
            .dense(5, Activation::Softmax)
            .seed(9)
            .build()
            .unwrap(),
    );
    let inputs: Vec<Array2<f32>> = (0..8)
        .map(|t| {
            Array2::from_shape_fn((17 + t, 32), |(i, j)| {
                ((i * 13 + j * 7 + t) % 19) as f32 / 9.0 - 1.0
            })
        })
        .collect();
    // Single-threaded answers for the whole batch and for its first 3 rows (a GEMM of another
    // shape may round differently, so each shape has its own reference).
    let expected: Vec<(Array2<f32>, Array2<f32>)> = inputs
        .iter()
        .map(|x| {
            let full = model.predict(x.view()).unwrap();
            let head = model.predict(x.slice(ndarray::s![..3, ..])).unwrap();
            (full, head)
        })
        .collect();

    let handles: Vec<_> = inputs
        .into_iter()
        .zip(expected)
        .map(|(x, (full, head))| {
            let model = Arc::clone(&model);
            std::thread::spawn(move || {
                let mut ws = Workspace::new();
                for round in 0..200 {
                    // Alternate batch sizes to exercise the workspace's reuse.
                    let (rows, want) = if round % 2 == 0 {
                        (x.nrows(), &full)
                    } else {
                        (3, &head)
                    };
                    let got = model
                        .predict_with(x.slice(ndarray::s![..rows, ..]), &mut ws)
                        .unwrap();
                    assert_eq!(got, want, "round {round}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
