//! Training-step and inference throughput on the reference workloads, next to the time of the
//! same GEMMs alone (the bound a training step cannot beat), in samples per second.
//!
//! `cargo bench --bench workloads` prints a table; `-- --json` prints one JSON object per
//! workload (what `bench/compare/compare.py` reads). Threads come from `RAYON_NUM_THREADS`
//! (crank's one pool, which also splits large GEMMs). The GEMM-only time runs the same products
//! through `crank::kernels::gemm`, the path the layers use.
//! `-- --quick` runs fewer repeats; `-- NAME` runs only workloads whose name contains NAME.

use crank::kernels::gemm;
use crank::{Activation, Loss, Scalar, Sequential, Sgd, Workspace};
use ndarray::Array2;
use std::hint::black_box;
use std::time::Instant;

struct Workload {
    name: &'static str,
    sizes: &'static [usize],
    batch: usize,
    inference: bool,
    f64: bool,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "S b64",
        sizes: &[784, 128, 10],
        batch: 64,
        inference: false,
        f64: false,
    },
    Workload {
        name: "M b128",
        sizes: &[784, 512, 512, 10],
        batch: 128,
        inference: false,
        f64: false,
    },
    Workload {
        name: "M b256",
        sizes: &[784, 512, 512, 10],
        batch: 256,
        inference: false,
        f64: false,
    },
    Workload {
        name: "M b256 f64",
        sizes: &[784, 512, 512, 10],
        batch: 256,
        inference: false,
        f64: true,
    },
    Workload {
        name: "L b256",
        sizes: &[1024, 1024, 1024, 1024, 10],
        batch: 256,
        inference: false,
        f64: false,
    },
    Workload {
        name: "M infer b1024",
        sizes: &[784, 512, 512, 10],
        batch: 1024,
        inference: true,
        f64: false,
    },
    Workload {
        name: "tiny b32",
        sizes: &[6, 64, 8, 4],
        batch: 32,
        inference: false,
        f64: false,
    },
    Workload {
        name: "tiny infer b1",
        sizes: &[6, 64, 8, 4],
        batch: 1,
        inference: true,
        f64: false,
    },
];

/// Seconds per call of `f`: the fastest of `repeats` timings of enough calls to take ~`target`
/// s. The fastest, not the median: on a shared machine interference only ever adds time, and
/// the minimum is the figure that repeats from run to run.
fn time(mut f: impl FnMut(), repeats: usize, target: f64) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-9);
    let calls = ((target / once) as usize).clamp(1, 1_000_000);
    let mut samples: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                f();
            }
            start.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[0]
}

fn data<F: Scalar>(rows: usize, cols: usize, salt: usize) -> Array2<F> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        F::of(((i * 31 + j * 17 + salt) % 23) as f64 / 11.0 - 1.0)
    })
}

/// Seconds for a step's (or an inference's) GEMMs alone, same shapes and backend.
fn gemm_only<F: Scalar>(w: &Workload, repeats: usize, target: f64) -> f64 {
    let b = w.batch;
    // Per layer: input, weights, output (and δ), weight gradient, input gradient.
    let mut layers: Vec<[Array2<F>; 5]> = w
        .sizes
        .windows(2)
        .enumerate()
        .map(|(i, s)| {
            [
                data(b, s[0], i),
                data(s[0], s[1], i),
                data(b, s[1], i),
                data(s[0], s[1], i),
                data(b, s[0], i),
            ]
        })
        .collect();
    // On rayon's pool, as crank runs a step whose products it splits (`Sequential::train_step`
    // moves there once): a product split from outside the pool would pay for waking a worker
    // and then the caller, every time.
    rayon::scope(|_| {
        time(
            || {
                for (i, [x, wt, z, dw, dx]) in layers.iter_mut().enumerate() {
                    gemm(F::one(), x.view(), wt.view(), F::one(), z.view_mut());
                    if !w.inference {
                        gemm(F::one(), x.t(), z.view(), F::zero(), dw.view_mut());
                        if i > 0 {
                            gemm(F::one(), z.view(), wt.t(), F::zero(), dx.view_mut());
                        }
                    }
                }
                black_box(&layers);
            },
            repeats,
            target,
        )
    })
}

fn crank_time<F: Scalar>(w: &Workload, repeats: usize, target: f64) -> f64 {
    let mut builder = Sequential::<F>::builder(w.sizes[0]);
    for (i, &units) in w.sizes[1..].iter().enumerate() {
        let last = i == w.sizes.len() - 2;
        builder = builder.dense(
            units,
            if last {
                Activation::Identity
            } else {
                Activation::Relu
            },
        );
    }
    let mut model = builder.seed(1).build().unwrap();
    let x = data::<F>(w.batch, w.sizes[0], 7);
    let classes = *w.sizes.last().unwrap();
    let y: Vec<usize> = (0..w.batch).map(|i| i % classes).collect();
    if w.inference {
        let mut ws = Workspace::new();
        time(
            || {
                black_box(model.predict_with(x.view(), &mut ws).unwrap());
            },
            repeats,
            target,
        )
    } else {
        let mut sgd = Sgd::new(1e-3).unwrap();
        time(
            || {
                black_box(
                    model
                        .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
                        .unwrap(),
                );
            },
            repeats,
            target,
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (repeats, target) = if quick { (5, 0.05) } else { (15, 0.1) };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    if !json {
        println!(
            "crank {} | GEMM: {} | threads: {threads}",
            env!("CARGO_PKG_VERSION"),
            crank::backend()
        );
        println!(
            "{:<15} {:>14} {:>14} {:>12} {:>9}",
            "workload", "samples/s", "GEMM-only /s", "µs/call", "overhead"
        );
    }
    for w in WORKLOADS {
        if !filter.is_empty() && !filter.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        // `--crank-only` skips the GEMM-only timing (for profiling crank's own step).
        let crank_only = args.iter().any(|a| a == "--crank-only");
        let (t, g) = match (w.f64, crank_only) {
            (false, false) => (
                crank_time::<f32>(w, repeats, target),
                gemm_only::<f32>(w, repeats, target),
            ),
            (true, false) => (
                crank_time::<f64>(w, repeats, target),
                gemm_only::<f64>(w, repeats, target),
            ),
            (false, true) => (crank_time::<f32>(w, repeats, target), f64::NAN),
            (true, true) => (crank_time::<f64>(w, repeats, target), f64::NAN),
        };
        let (rate, bound) = (w.batch as f64 / t, w.batch as f64 / g);
        if json {
            println!(
                "{{\"workload\": \"{}\", \"threads\": \"{threads}\", \"samples_per_s\": {rate:.1}, \"gemm_only_samples_per_s\": {bound:.1}, \"us_per_call\": {:.3}, \"overhead\": {:.3}}}",
                w.name,
                t * 1e6,
                t / g
            );
        } else {
            println!(
                "{:<15} {:>14.0} {:>14.0} {:>12.2} {:>8.2}x",
                w.name,
                rate,
                bound,
                t * 1e6,
                t / g
            );
        }
    }
}
