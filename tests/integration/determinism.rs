//! The same seed gives bitwise identical weights, at 1 and at 2 threads: the same weights at both
//! with crank's default GEMM, and at each thread count its own with OpenBLAS (whose kernels may
//! sum an element at the edge of a split product's block differently; see `crank::gemm::gemm`).
//!
//! rayon's global pool is sized once per process, so the test runs its own binary again as a child
//! with each setting and compares what it prints. The model's products are large enough to be
//! split over the threads (by rows and by columns).

use crank::{Activation, Loss, Sequential, Sgd};
use ndarray::Array2;
use std::process::Command;

/// Trains a model large enough for threaded GEMM and rayon kernels, and prints a digest of every
/// weight's bits.
#[test]
#[ignore = "run by `same_seed_gives_identical_weights` in a child process"]
fn child_train() {
    let (batch, width) = (256, 256);
    let x = Array2::from_shape_fn((batch, 96), |(i, j)| {
        ((i * 37 + j * 11) % 23) as f32 / 11.0 - 1.0
    });
    let y: Vec<usize> = (0..batch).map(|i| (i * 7) % 10).collect();
    let mut model = Sequential::<f32>::builder(96)
        .dense(width, Activation::Gelu)
        .dense(width, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(1234)
        .build()
        .unwrap();
    let mut sgd = Sgd::new(0.05).unwrap();
    for _ in 0..5 {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
            .unwrap();
    }
    let mut digest: u64 = 0xcbf29ce484222325;
    model.visit_params(|_, p| {
        for v in p.value.iter() {
            digest = (digest ^ v.to_bits() as u64).wrapping_mul(0x100000001b3);
        }
    });
    println!("DIGEST {digest:016x}");
}

fn run_child(threads: usize) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "determinism::child_train",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("DIGEST ").map(|(_, d)| d.trim()))
        .unwrap_or_else(|| panic!("no digest in: {stdout}"))
        .to_string()
}

#[test]
fn same_seed_gives_identical_weights() {
    let one = [run_child(1), run_child(1)];
    let two = [run_child(2), run_child(2)];
    assert_eq!(one[0], one[1], "1 thread: two runs differ");
    assert_eq!(two[0], two[1], "2 threads: two runs differ");
    // Kernels reduce in a fixed order and the GEMMs split only independent outputs over
    // threads, so the thread count does not change the result either, as long as the backend
    // sums each output the same way in a block as in the whole product: crank's own loops and
    // faer do; OpenBLAS's Haswell and Zen kernels do not.
    if !cfg!(feature = "openblas") {
        assert_eq!(one[0], two[0], "1 thread vs 2 threads");
    }
}
