//! Every workload's training step (or inference) and the same step's GEMMs alone, as criterion
//! benchmarks: `cargo bench --bench steps` (`-- "M b256"` for one workload; criterion's
//! `--save-baseline NAME` and `--baseline NAME` to compare builds). Throughput is in samples.
//!
//! The same runners as the `workloads` bench (`benches/shared`), which times each step and its
//! GEMM bound in alternating rounds and prints their ratio, crank's overhead: on a machine whose
//! speed drifts, that ratio holds where two criterion runs, a few seconds apart, can each catch
//! another speed. This bench gives the statistics of each alone, and criterion's comparisons
//! between runs. Threads come from `RAYON_NUM_THREADS`.

mod shared;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::{WORKLOADS, runners};
use std::time::{Duration, Instant};

fn steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("workload");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for w in WORKLOADS {
        group.throughput(Throughput::Elements(w.batch as u64));
        let step = if w.inference { "inference" } else { "step" };
        for (label, mut run) in [step, "gemm_only"].into_iter().zip(runners(w, false)) {
            group.bench_function(format!("{}/{label}", w.name), |b| {
                b.iter_custom(|calls| {
                    let start = Instant::now();
                    run(calls as usize);
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
