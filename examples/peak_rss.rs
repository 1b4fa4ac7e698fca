//! Peak resident memory of a process training the M workload (784-512-512-10, ReLU, softmax
//! cross-entropy, SGD) at batch 256: `cargo run --release --example peak_rss [-- STEPS]`.
//!
//! Prints the peak resident set size (`VmHWM` in `/proc/self/status`, Linux) after the steps,
//! in MiB.
//! `bench/compare/compare.py --rss` runs it next to the same loop in numpy and PyTorch.

use crank::{Activation, Loss, Sequential, Sgd};
use ndarray::Array2;

fn main() -> crank::Result<()> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let batch = 256;
    let mut model = Sequential::<f32>::builder(784)
        .dense(512, Activation::Relu)
        .dense(512, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(1)
        .build()?;
    let x = Array2::from_shape_fn((batch, 784), |(i, j)| {
        ((i * 31 + j * 17) % 23) as f32 / 11.0 - 1.0
    });
    let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut sgd = Sgd::new(1e-3)?;
    let mut loss = 0.0;
    for _ in 0..steps {
        loss = model.train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)?;
    }
    // VmHWM: the peak resident set of this process's address space. (getrusage's ru_maxrss
    // would also count the parent that started this process, kept across exec.)
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN);
    println!(
        "{{\"framework\": \"crank\", \"steps\": {steps}, \"loss\": {loss}, \"peak_rss_mib\": {:.1}}}",
        kib / 1024.0
    );
    Ok(())
}
