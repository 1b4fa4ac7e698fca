//! Dense forward and backward, f32, through crank's own GEMM path.
//!
//! `cargo bench --bench dense` (add `--features openblas` for OpenBLAS).

use crank::{Activation, Dense, Layer, Mode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::Array2;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::hint::black_box;

fn dense(c: &mut Criterion) {
    let mut group = c.benchmark_group("dense");
    for &(batch, n_in, n_out) in &[(64, 784, 128), (256, 512, 512), (256, 1024, 1024)] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut layer = Dense::<f32>::new(n_in, n_out, Activation::Relu, &mut rng).unwrap();
        let x = Array2::from_shape_fn((batch, n_in), |(i, j)| {
            ((i * 31 + j * 17) % 13) as f32 * 0.1 - 0.6
        });
        let g = Array2::from_shape_fn((batch, n_out), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 * 0.01 - 0.05
        });
        let flops = 2 * batch * n_in * n_out;
        let name = format!("{batch}x{n_in}x{n_out}");

        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(format!("forward/{name}"), |b| {
            b.iter(|| layer.forward(black_box(x.view()), Mode::Train).unwrap())
        });
        // Backward: two GEMMs (weights and input gradients) plus the activation derivative.
        group.throughput(Throughput::Elements(2 * flops as u64));
        layer.forward(x.view(), Mode::Train).unwrap();
        group.bench_function(format!("backward/{name}"), |b| {
            b.iter(|| layer.backward(x.view(), black_box(g.view()), true).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, dense);
criterion_main!(benches);
