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

/// On several threads, a float model's prediction of a large batch (401 and 1,000 rows here)
/// runs one block of rows per thread through every layer: bitwise one thread's answer with the
/// default GEMM (with OpenBLAS, the same answer at the same thread count, and one thread's up to
/// rounding). Smaller batches (layer by layer), a last block shorter than the others, a Softmax
/// and a LayerNorm (row by row), and a bad value named by its row in the whole batch.
#[test]
fn predictions_in_blocks_of_rows_equal_one_threads() {
    let model = Sequential::<f32>::builder(40)
        .dense(96, Activation::Relu)
        .layer_norm()
        .dense(64, Activation::Tanh)
        .dense(12, Activation::Softmax)
        .seed(3)
        .build()
        .unwrap();
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let (one, two, three) = (pool(1), pool(2), pool(3));
    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for batch in [16, 90, 401, 1000] {
        let x = Array2::from_shape_fn((batch, 40), |(i, j)| {
            ((i * 7 + j * 5) % 17) as f32 / 8.0 - 1.0
        });
        let want = one.install(|| model.predict(x.view()).unwrap());
        for threads in [&two, &three] {
            let n = threads.current_num_threads();
            let got = threads.install(|| model.predict(x.view()).unwrap());
            let again = threads.install(|| model.predict(x.view()).unwrap());
            assert!(bits(&got) == bits(&again), "batch {batch}, {n} threads");
            if cfg!(feature = "openblas") {
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5, "batch {batch}, {n} threads: {g} {w}");
                }
            } else {
                assert!(bits(&got) == bits(&want), "batch {batch}, {n} threads");
            }
            let mut bad = x.clone();
            bad[[batch - 2, 3]] = f32::NAN;
            let err = threads.install(|| model.predict(bad.view()).unwrap_err());
            let row = batch - 2;
            assert_eq!(
                err.to_string(),
                format!("non-finite value in input at row {row}, column 3"),
                "batch {batch}, {n} threads"
            );
        }
    }
}
