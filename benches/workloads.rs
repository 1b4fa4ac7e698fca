//! Training-step and inference throughput on the reference workloads, next to the time of the
//! same GEMMs alone in the same order and data flow (what the step would cost with no overhead;
//! plain SGD, whose update crank folds into a product, can come in under it), in samples per
//! second.
//!
//! `cargo bench --bench workloads` prints a table; `-- --json` prints one JSON object per
//! workload (what `bench/compare/compare.py` reads). Threads come from `RAYON_NUM_THREADS`
//! (crank's one pool, which also splits large GEMMs). The GEMM-only time runs the same products
//! through `crank::kernels::gemm`, the path the layers use.
//! `-- --quick` runs fewer repeats; `-- NAME` runs only workloads whose name contains NAME.
//! `-- --serve=SECONDS` reads workload names from standard input, one per line, and answers each
//! with one timed round (of about `SECONDS`) of the step and of its GEMM bound, as a JSON line:
//! `compare.py` drives it, taking turns with the other frameworks round by round.

use crank::kernels::{gemm, splits};
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

/// Runs of a benchmark: `run(n)` makes `n` calls.
type Runner<'a> = Box<dyn FnMut(usize) + 'a>;

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

fn data<F: Scalar>(rows: usize, cols: usize, salt: usize) -> Array2<F> {
    Array2::from_shape_fn((rows, cols), |(i, j)| {
        F::of(((i * 31 + j * 17 + salt) % 23) as f64 / 11.0 - 1.0)
    })
}

/// One layer's arrays in [`gemm_only`].
struct Products<F> {
    weights: Array2<F>,
    /// The forward's output; at the last layer also the backward's `δ`.
    out: Array2<F>,
    weight_grad: Array2<F>,
    input_grad: Array2<F>,
}

/// A step's (or an inference's) GEMMs alone, same shapes and backend, in the step's order and
/// data flow: forward, each layer's product reading the output the layer before just wrote;
/// then, unless it is inference, backward from the last layer, each layer's weight gradient and
/// input gradient (not the first layer's) from the input gradient the layer above just wrote.
/// A bound whose products each read arrays of their own finds its inputs colder in cache than
/// the step does: M inference with `matrixmultiply` on a Zen 5 ran its step in 0.89–0.96× such a
/// bound's time, and in 0.96–1.02× this one's (2026-12-02).
fn gemm_only<'a, F: Scalar>(w: &'a Workload) -> Runner<'a> {
    let b = w.batch;
    let input = data::<F>(b, w.sizes[0], 0);
    let mut layers: Vec<Products<F>> = w
        .sizes
        .windows(2)
        .enumerate()
        .map(|(i, s)| Products {
            weights: data(s[0], s[1], i),
            out: data(b, s[1], i),
            weight_grad: data(s[0], s[1], i),
            input_grad: data(b, s[0], i),
        })
        .collect();
    // On rayon's pool when some product splits (`kernels::splits`, the rule crank's GEMM cuts
    // products by) and there are threads to split it over, as crank runs such a step
    // (`Sequential::train_step` moves there once): a product split from outside the pool would
    // pay for waking a worker and then the caller, every time. One move per slice of calls.
    // Otherwise, as crank's step, on the calling thread.
    let any_split = w.sizes.windows(2).any(|s| splits(b * s[0] * s[1]));
    Box::new(move |calls| {
        let pool = any_split && rayon::current_num_threads() > 1;
        let mut run = || {
            for _ in 0..calls {
                // `beta = 1`, as the step accumulates onto its bias. Nothing resets the outputs,
                // and chained through the layers the values grow as a power of the call count:
                // in a long enough run they reach infinity and then NaN. x86 vector arithmetic
                // takes those at full speed (only subnormal values are slow, and growing values
                // are never subnormal), so the timing does not depend on the count.
                for i in 0..layers.len() {
                    let (below, rest) = layers.split_at_mut(i);
                    let Products { weights, out, .. } = &mut rest[0];
                    let x = below.last().map_or_else(|| input.view(), |l| l.out.view());
                    gemm(F::one(), x, weights.view(), F::one(), out.view_mut());
                }
                if !w.inference {
                    for i in (0..layers.len()).rev() {
                        let (below, rest) = layers.split_at_mut(i);
                        let (layer, above) = rest.split_first_mut().expect("layer i exists");
                        let Products {
                            weights,
                            out,
                            weight_grad,
                            input_grad,
                        } = layer;
                        let x = below.last().map_or_else(|| input.view(), |l| l.out.view());
                        let delta = above
                            .first()
                            .map_or_else(|| out.view(), |l| l.input_grad.view());
                        gemm(F::one(), x.t(), delta, F::zero(), weight_grad.view_mut());
                        if i > 0 {
                            gemm(
                                F::one(),
                                delta,
                                weights.t(),
                                F::zero(),
                                input_grad.view_mut(),
                            );
                        }
                    }
                }
                black_box(&layers);
            }
        };
        if pool { rayon::scope(|_| run()) } else { run() }
    })
}

/// crank's training step (ReLU hidden layers, softmax cross-entropy, plain SGD) or inference,
/// called as a user calls it.
fn crank_step<'a, F: Scalar>(w: &'a Workload) -> Runner<'a> {
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
        Box::new(move |calls| {
            for _ in 0..calls {
                black_box(model.predict_with(x.view(), &mut ws).unwrap());
            }
        })
    } else {
        let mut sgd = Sgd::new(1e-3).unwrap();
        Box::new(move |calls| {
            for _ in 0..calls {
                black_box(
                    model
                        .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
                        .unwrap(),
                );
            }
        })
    }
}

/// crank's step and, unless `crank_only`, its GEMMs alone, in the workload's precision.
fn runners(w: &'static Workload, crank_only: bool) -> Vec<Runner<'static>> {
    let (step, bound) = if w.f64 {
        (crank_step::<f64>(w), gemm_only::<f64>(w))
    } else {
        (crank_step::<f32>(w), gemm_only::<f32>(w))
    };
    if crank_only {
        vec![step]
    } else {
        vec![step, bound]
    }
}

/// The `--serve` loop: a workload's name in, one round of its step and bound out (seconds per
/// call, as JSON). Each workload's model, data and call counts (for rounds of `target` seconds)
/// are set up at its first request and kept.
fn serve(target: f64) {
    let mut ready: Vec<(&str, Vec<Runner<'static>>, Vec<usize>)> = Vec::new();
    for line in std::io::stdin().lines() {
        let Ok(line) = line else { break };
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
