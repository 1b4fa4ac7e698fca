//! Training-step and inference throughput on the reference workloads, next to the time of the
//! same GEMMs alone in the same order and data flow (what the step would cost with no overhead;
//! plain SGD, whose update crank folds into a product, can come in under it), in samples per
//! second.
//!
//! `cargo bench --bench workloads` prints a table; `-- --json` prints one JSON object per
//! workload instead. Threads come from `RAYON_NUM_THREADS` (crank's one pool, which also splits
//! large GEMMs); the thread that makes the calls is one of them (`crank::set_threads_here`), or
//! with `-- --outside` a thread outside the pool, which hands each call to it
//! (`crank::set_threads`, and rayon's default). The GEMM-only time runs the same products through `crank::gemm::gemm`, the
//! path the layers use. The workloads, the step and the bound are in `benches/shared`, which the
//! criterion bench `steps` times too.
//! `-- --quick` runs fewer repeats; `-- NAME` runs only workloads whose name contains NAME.
//! `-- --serve=SECONDS` reads workload names from standard input, one per line, and answers each
//! with one timed round (of about `SECONDS`) of the step and of its GEMM bound, as a JSON line:
//! `compare.py` drives it, taking turns with the other frameworks round by round. The line
//! `backend` is answered with `crank::backend()`, the GEMM and kernels this build runs.

mod shared;

use shared::{Runner, WORKLOADS, runners};
use std::time::Instant;

/// Seconds per call of each runner: the fastest of `repeats` rounds, each of enough calls to
/// take ~`target` s. The fastest, not the median: on a shared machine interference only ever
/// adds time, and the minimum is the figure that repeats from run to run. The runners take
/// turns round by round, so a step and its GEMM bound are timed under the same load even when
/// the machine's speed drifts from second to second (as a shared VM's does), and their ratio
/// holds.
fn time(runners: &mut [Runner<'_>], repeats: usize, target: f64) -> Vec<f64> {
    let calls = calibrate(runners, target);
    let mut best = vec![f64::INFINITY; runners.len()];
    for _ in 0..repeats {
        for (best, t) in best.iter_mut().zip(round(runners, &calls)) {
            *best = best.min(t);
        }
    }
    best
}

/// How many calls of each runner take about `target` seconds (after three warm-up calls).
fn calibrate(runners: &mut [Runner<'_>], target: f64) -> Vec<usize> {
    runners
        .iter_mut()
        .map(|run| {
            run(3);
            let start = Instant::now();
            run(1);
            let once = start.elapsed().as_secs_f64().max(1e-9);
            ((target / once) as usize).clamp(1, 1_000_000)
        })
        .collect()
}

/// One round: each runner's `calls`, in turn, in five slices that alternate between the runners
/// (step, bound, step, bound, ...); seconds per call of each. Alternating, the step and its
/// bound see the same machine: on a shared one, or after another framework's turn, whose
/// threads may still spin for a while, a slowdown lands on both instead of on whichever ran
/// first.
fn round(runners: &mut [Runner<'_>], calls: &[usize]) -> Vec<f64> {
    const SLICES: usize = 5;
    let mut seconds = vec![0.0; runners.len()];
    for slice in 0..SLICES {
        for ((run, &n), s) in runners.iter_mut().zip(calls).zip(&mut seconds) {
            // `n` calls in all: `n / SLICES` per slice, and one more in the first `n % SLICES`.
            let part = n / SLICES + usize::from(slice < n % SLICES);
            if part > 0 {
                let start = Instant::now();
                run(part);
                *s += start.elapsed().as_secs_f64();
            }
        }
    }
    seconds
        .iter()
        .zip(calls)
        .map(|(s, &n)| s / n as f64)
        .collect()
}

/// The `--serve` loop: a workload's name in, one round of its step and bound out (seconds per
/// call, as JSON). Each workload's model, data and call counts (for rounds of `target` seconds)
/// are set up at its first request and kept.
fn serve(target: f64) {
    let mut ready: Vec<(&str, Vec<Runner<'static>>, Vec<usize>)> = Vec::new();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "backend" {
            let (int8, bf16) = crank::quant::kernels();
            let backend = format!("{}; int8: {int8}, bf16: {bf16}", crank::backend());
            println!("{{\"backend\": {backend:?}}}");
            continue;
        }
        let Some(w) = WORKLOADS.iter().find(|w| w.name == line.trim()) else {
            println!("{{\"error\": \"no workload {}\"}}", line.trim());
            continue;
        };
        let at = match ready.iter().position(|(name, ..)| *name == w.name) {
            Some(at) => at,
            None => {
                let mut runs = runners(w, false);
                let calls = calibrate(&mut runs, target);
                ready.push((w.name, runs, calls));
                ready.len() - 1
            }
        };
        let (_, runs, calls) = &mut ready[at];
        let t = round(runs, calls);
        println!("{{\"step_s\": {:e}, \"bound_s\": {:e}}}", t[0], t[1]);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--outside") {
        crank::set_threads_here(None).expect("the pool is not built yet");
    }
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let filter: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let (repeats, target) = if quick { (10, 0.02) } else { (40, 0.025) };
    if let Some(seconds) = args.iter().find_map(|a| a.strip_prefix("--serve=")) {
        match seconds.parse::<f64>() {
            Ok(target) if target > 0.0 && target.is_finite() => return serve(target),
            _ => {
                eprintln!("--serve=SECONDS wants a positive number of seconds, got {seconds:?}");
                std::process::exit(2);
            }
        }
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    if !json {
        let (int8, bf16) = crank::quant::kernels();
        println!(
            "crank {} | GEMM: {} | int8: {int8}, bf16: {bf16} | threads: {threads}",
            env!("CARGO_PKG_VERSION"),
            crank::backend()
        );
        println!(
            "{:<19} {:>14} {:>14} {:>12} {:>9}",
            "workload", "samples/s", "GEMM-only /s", "µs/call", "overhead"
        );
    }
    for w in WORKLOADS {
        if !filter.is_empty() && !filter.iter().any(|f| w.name.contains(f.as_str())) {
            continue;
        }
        // `--crank-only` skips the GEMM-only timing (for profiling crank's own step).
        let crank_only = args.iter().any(|a| a == "--crank-only");
        let t = time(&mut runners(w, crank_only), repeats, target);
        let (t, g) = (t[0], t.get(1).copied().unwrap_or(f64::NAN));
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
                "{:<19} {:>14.0} {:>14.0} {:>12.2} {:>8.2}x",
                w.name,
                rate,
                bound,
                t * 1e6,
                t / g
            );
        }
    }
}
