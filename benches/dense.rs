//! Dense forward and backward, f32, through crank's own GEMM path.
//!
//! `cargo bench --bench dense` (add `--features openblas` for OpenBLAS).

use crank::{Activation, Dense, Layer, Mode};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ndarray::{Array2, ArrayView2};
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

/// crank's GEMM path against the other pure-Rust GEMMs on the products of the tiny, S and M
/// (batch 256) networks, in the three layouts a Dense layer uses: forward `x·W` (`nn`), weight
/// gradient `xᵀ·δ` (`tn`), input gradient `δ·Wᵀ` (`nt`). Each shape `m×k×n` runs in all three;
/// the ones a layer has are the forward `batch×in×out`, the weight gradient `in×batch×out` and
/// the input gradient `batch×out×in`. A large square product, last, is a reference rate, where
/// packing and calls weigh least.
///
/// - `crank`: crank's own path (its small-product loops, then faer; OpenBLAS with `openblas`).
/// - `ndarray`: ndarray's `general_mat_mul`: the `matrixmultiply` crate with its AVX-512
///   kernels, or OpenBLAS when built with `openblas`.
/// - `gemm-crate`: the `gemm` crate with its AVX-512 kernels, single-threaded.
///
/// On one core: `taskset -c 0 env RAYON_NUM_THREADS=1 cargo bench --bench dense -- gemm`.
fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    group
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1));
    for &(m, k, n) in &[
        (1, 6, 64),
        (1, 64, 8),
        (32, 6, 64),
        (32, 64, 8),
        (32, 8, 4),
        (6, 32, 64),
        (64, 32, 8),
        (8, 32, 4),
        (32, 8, 64),
        (32, 4, 8),
        (64, 128, 10),
        // S (batch 64), M (batch 256 and 128), L (batch 256), M's inference (batch 1024) and
        // a 1024³ reference: the shapes `bench/compare/gemm_shapes.py` times in numpy.
        (64, 784, 128),
        (784, 64, 128),
        (64, 128, 784),
        (256, 784, 512),
        (784, 256, 512),
        (256, 512, 512),
        (512, 256, 512),
        (128, 784, 512),
        (784, 128, 512),
        (128, 512, 512),
        (512, 128, 512),
        (256, 1024, 1024),
        (1024, 256, 1024),
        (1024, 784, 512),
        (1024, 512, 512),
        (1024, 1024, 1024),
    ] {
        let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 3 + j) % 7) as f32 * 0.1);
        let b = Array2::from_shape_fn((k, n), |(i, j)| ((i + 5 * j) % 11) as f32 * 0.1);
        // Row-major (k, m) and (n, k) copies (`to_owned` would keep the views' column-major
        // order): the product xᵀ·δ reads `at.t()`, δ·Wᵀ reads `bt.t()`.
        let at = a.t().as_standard_layout().into_owned();
        let bt = b.t().as_standard_layout().into_owned();
        let mut out = Array2::<f32>::zeros((m, n));
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for (layout, a, b) in [
            ("nn", a.view(), b.view()),
            ("tn", at.t(), b.view()),
            ("nt", a.view(), bt.t()),
        ] {
            let name = format!("{m}x{k}x{n}/{layout}");
            group.bench_function(format!("crank/{name}"), |bench| {
                bench.iter(|| crank::gemm::gemm(1.0, black_box(a), b, 0.0, out.view_mut()))
            });
            group.bench_function(format!("ndarray/{name}"), |bench| {
                bench.iter(|| {
                    ndarray::linalg::general_mat_mul(1.0, &black_box(a), &b, 0.0, &mut out)
                })
            });
            group.bench_function(format!("gemm-crate/{name}"), |bench| {
                bench.iter(|| gemm_crate(black_box(a), b, &mut out))
            });
        }
    }
    group.finish();
}

/// `out = a · b` through the `gemm` crate on the calling thread. Its convention is
/// `dst = alpha · dst + beta · lhs · rhs`, with column strides before row strides.
fn gemm_crate(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, out: &mut Array2<f32>) {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!((b.nrows(), out.dim()), (k, (m, n)));
    let (a_s, b_s, c_s) = (a.strides(), b.strides(), out.strides().to_vec());
    // SAFETY: the shapes match (checked above), and each pointer and its strides are an
    // ndarray view's own, so every element the crate addresses lies inside that array.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            c_s[1],
            c_s[0],
            false,
            a.as_ptr(),
            a_s[1],
            a_s[0],
            b.as_ptr(),
            b_s[1],
            b_s[0],
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

criterion_group!(benches, dense, gemm);
criterion_main!(benches);
