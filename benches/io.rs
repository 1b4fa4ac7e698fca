//! Saving and loading a model with about 100 MB of f32 weights in each format, as bytes/s.
//!
//! `cargo bench --bench io` (JSON takes a while: it is allowed to be slower).

use crank::io::Format;
use crank::{Activation, Sequential};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn io(c: &mut Criterion) {
    // 5000·5000 + 5000 + 5000·10 + 10 ≈ 25.1 M parameters ≈ 100 MB of f32.
    let model = Sequential::<f32>::builder(5000)
        .dense(5000, Activation::Relu)
        .dense(10, Activation::Identity)
        .seed(1)
        .build()
        .unwrap();
    let weight_bytes = (model.num_params() * 4) as u64;
    let mut group = c.benchmark_group("io_100MB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(weight_bytes));
    // For scale: the same bytes copied into freshly allocated memory (what a save must at least
    // do) and into memory already touched.
    let raw: Vec<u8> = vec![1; weight_bytes as usize];
    group.bench_function("copy/fresh", |b| {
        b.iter(|| black_box(raw.as_slice().to_vec()))
    });
    let mut touched = vec![0u8; raw.len()];
    group.bench_function("copy/touched", |b| {
        b.iter(|| black_box(&mut touched).copy_from_slice(&raw))
    });
    for (name, format) in [
        ("bincode", Format::Bincode),
        ("safetensors", Format::Safetensors),
        ("json", Format::Json),
    ] {
        let bytes = model.to_bytes(format).unwrap();
        group.bench_function(format!("save/{name}"), |b| {
            b.iter(|| black_box(model.to_bytes(format).unwrap()))
        });
        group.bench_function(format!("load/{name}"), |b| {
            b.iter(|| black_box(Sequential::<f32>::from_bytes(&bytes, format).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, io);
criterion_main!(benches);
