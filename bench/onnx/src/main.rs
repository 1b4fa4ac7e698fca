//! Inference throughput of the same ONNX files in crank (imported with `Sequential::load_onnx`)
//! and in tract, in one process, taking turns.
//!
//!     cargo run --release -- write DIR            # writes DIR/{M,S,tiny}.onnx (crank exports)
//!     cargo run --release -- run DIR ROUNDS       # one JSON line per (network, batch, runtime)
//!
//! Each round runs each runtime for about 50 ms, alternating; a cell is the fastest round, in
//! samples per second. crank runs on `RAYON_NUM_THREADS` threads (its one pool); tract runs on
//! the calling thread (its default).

use crank::{Activation, Sequential};
use ndarray::Array2;
use std::path::Path;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

/// name, layer sizes, batch
const NETWORKS: &[(&str, &[usize], usize)] = &[
    ("M", &[784, 512, 512, 10], 1024),
    ("S", &[784, 128, 10], 64),
    ("tiny", &[6, 64, 8, 4], 1),
];

fn write(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, sizes, _) in NETWORKS {
        let mut b = Sequential::<f32>::builder(sizes[0]).seed(7);
        for (i, &n) in sizes[1..].iter().enumerate() {
            let last = i + 2 == sizes.len();
            b = b.dense(
                n,
                if last {
                    Activation::Identity
                } else {
                    Activation::Relu
                },
            );
        }
        b.build()
            .unwrap()
            .save_onnx(dir.join(format!("{name}.onnx")))
            .unwrap();
    }
}

/// Runs `f` for about `budget`, returning calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        f();
        calls += 1;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn run(dir: &Path, rounds: usize) {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    for (name, sizes, batch) in NETWORKS {
        let path = dir.join(format!("{name}.onnx"));
        let inputs = sizes[0];
        let x = Array2::from_shape_fn((*batch, inputs), |(i, j)| {
            ((i * 7 + j * 3) % 13) as f32 / 6.5 - 1.0
        });

        let model = Sequential::<f32>::load_onnx(&path).unwrap();
        let mut workspace = model.workspace();
        let plan = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .with_input_fact(0, f32::fact([*batch, inputs]).into())
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        // A shared tensor: handing it to `run` clones a reference, not the data.
        let input: TValue = Tensor::from(
            tract_ndarray::Array2::from_shape_vec(
                (*batch, inputs),
                x.iter().copied().collect::<Vec<_>>(),
            )
            .unwrap(),
        )
        .into_tvalue();

        // The two agree before they are timed.
        let ours = model
            .predict_with(x.view(), &mut workspace)
            .unwrap()
            .to_owned();
        let theirs = plan.run(tvec!(input.clone())).unwrap();
        let theirs = theirs[0].to_plain_array_view::<f32>().unwrap();
        let worst = ours
            .iter()
            .zip(theirs.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{name}: crank and tract differ by {worst}");

        let budget = Duration::from_millis(50);
        let (mut best_crank, mut best_tract) = (0f64, 0f64);
        for round in 0..rounds {
            let mut crank_round = || {
                rate(budget, || {
                    std::hint::black_box(model.predict_with(x.view(), &mut workspace).unwrap());
                })
            };
            let tract_round = || {
                rate(budget, || {
                    std::hint::black_box(plan.run(tvec!(input.clone())).unwrap());
                })
            };
            let (c, t) = if round % 2 == 0 {
                let c = crank_round();
                (c, tract_round())
            } else {
                let t = tract_round();
                (crank_round(), t)
            };
            best_crank = best_crank.max(c * *batch as f64);
            best_tract = best_tract.max(t * *batch as f64);
        }
        for (runtime, best) in [("crank", best_crank), ("tract", best_tract)] {
            println!(
                "{{\"network\": \"{name}\", \"batch\": {batch}, \"runtime\": \"{runtime}\", \"threads\": \"{threads}\", \"samples_per_s\": {best:.1}}}"
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("write") => write(Path::new(&args[2])),
        Some("run") => run(
            Path::new(&args[2]),
            args.get(3).map_or(10, |r| r.parse().unwrap()),
        ),
        _ => eprintln!("usage: crank-onnx-bench write DIR | run DIR [ROUNDS]"),
    }
}
