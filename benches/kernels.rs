//! Elementwise and reduction kernels, serial against rayon, at sizes on both sides of
//! `crank::kernels::PAR_THRESHOLD` (f32).
//!
//! `cargo bench --bench kernels`. Each kernel runs on a thread of a one-thread pool ("serial")
//! and of a two-thread pool ("rayon"), where crank spreads it over the threads only from the
//! threshold on. "always-rayon" is the same map spread over two threads at every size, for scale: below
//! the threshold it shows what fork-join costs.

use crank::Activation;
use crank::kernels::{PAR_THRESHOLD, add_rows, all_finite, column_sums, max_abs, sum_map};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use std::hint::black_box;

const COLS: usize = 512;

fn pools() -> [(&'static str, rayon::ThreadPool); 2] {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    [("serial", pool(1)), ("rayon", pool(2))]
}

fn data(n: usize, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + salt) % 1000) as f32 / 250.0 - 2.0)
        .collect()
}

fn kernels(c: &mut Criterion) {
    let pools = pools();
    let mut group = c.benchmark_group("kernels");
    group
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for n in [
        PAR_THRESHOLD / 16,
        PAR_THRESHOLD,
        8 * PAR_THRESHOLD,
        32 * PAR_THRESHOLD,
    ] {
        let n = n / COLS * COLS; // whole rows
        let (z, g) = (data(n, 1), data(n, 2));
        let mut y = vec![0.0f32; n];
        let mut delta = vec![0.0f32; n];
        let mut sums = vec![0.0f32; COLS];
        group.throughput(Throughput::Elements(n as u64));
        for (threads, pool) in &pools {
            for act in [
                Activation::Relu,
                Activation::Sigmoid,
                Activation::Tanh,
                Activation::Gelu,
                Activation::Softplus,
                Activation::Softmax,
            ] {
                group.bench_function(format!("{act}/forward/{n}/{threads}"), |b| {
                    pool.install(|| b.iter(|| act.forward_batch(black_box(&z), &mut y, COLS)))
                });
                act.forward_batch(&z, &mut y, COLS).unwrap();
                group.bench_function(format!("{act}/backward/{n}/{threads}"), |b| {
                    pool.install(|| {
                        b.iter(|| act.backward_batch(black_box(&z), &y, &g, &mut delta, COLS))
                    })
                });
            }
            group.bench_function(format!("sum_squares/{n}/{threads}"), |b| {
                pool.install(|| b.iter(|| sum_map(black_box(&z), |x| x * x)))
            });
            group.bench_function(format!("all_finite/{n}/{threads}"), |b| {
                pool.install(|| b.iter(|| all_finite(black_box(&z))))
            });
            group.bench_function(format!("max_abs/{n}/{threads}"), |b| {
                pool.install(|| b.iter(|| max_abs(black_box(&z))))
            });
            group.bench_function(format!("add_rows/{n}/{threads}"), |b| {
                pool.install(|| b.iter(|| add_rows(black_box(&mut y), &sums)))
            });
            group.bench_function(format!("column_sums/{n}/{threads}"), |b| {
                pool.install(|| b.iter(|| column_sums(black_box(&z), COLS, 0.5, &mut sums)))
            });
        }
        // ReLU's map spread over two threads whatever the size.
        let pool = &pools[1].1;
        group.bench_function(format!("ReLU/forward/{n}/always-rayon"), |b| {
            pool.install(|| {
                b.iter(|| {
                    y.par_chunks_mut(1 << 13)
                        .zip(black_box(&z).par_chunks(1 << 13))
                        .for_each(|(y, z)| y.iter_mut().zip(z).for_each(|(y, &z)| *y = z.max(0.0)))
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
