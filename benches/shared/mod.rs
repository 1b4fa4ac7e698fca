//! The reference workloads of the `workloads` and `steps` benches: each workload's network,
//! crank's training step (or inference) on it, and the same step's GEMMs alone.

use crank::gemm::{gemm, splits};
use crank::quant::Precision;
use crank::{Activation, Loss, Scalar, Sequential, Sgd, Workspace};
use ndarray::Array2;
use std::hint::black_box;

/// A network and what is timed on it.
pub struct Workload {
    /// The name the benches print and filter by.
    pub name: &'static str,
    /// The input width, then each Dense layer's units (ReLU, the last one's identity).
    pub sizes: &'static [usize],
    /// Samples per step (or per inference call).
    pub batch: usize,
    /// Inference (`predict_with`) rather than a training step.
    pub inference: bool,
    /// In `f64` rather than `f32`.
    pub f64: bool,
    /// Inference on the model quantized to this precision ([`Sequential::quantize`]).
    pub precision: Option<Precision>,
    /// int8 with its input ranges calibrated on the workload's batch
    /// ([`Sequential::quantize_static`]) rather than each row's own.
    pub calibrated: bool,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "S b64",
        sizes: &[784, 128, 10],
        batch: 64,
        inference: false,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "M b128",
        sizes: &[784, 512, 512, 10],
        batch: 128,
        inference: false,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "M b256",
        sizes: &[784, 512, 512, 10],
        batch: 256,
        inference: false,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "M b256 f64",
        sizes: &[784, 512, 512, 10],
        batch: 256,
        inference: false,
        f64: true,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "L b256",
        sizes: &[1024, 1024, 1024, 1024, 10],
        batch: 256,
        inference: false,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "M infer b1024",
        sizes: &[784, 512, 512, 10],
        batch: 1024,
        inference: true,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "tiny b32",
        sizes: &[6, 64, 8, 4],
        batch: 32,
        inference: false,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "tiny infer b1",
        sizes: &[6, 64, 8, 4],
        batch: 1,
        inference: true,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "M infer int8 b1024",
        sizes: &[784, 512, 512, 10],
        batch: 1024,
        inference: true,
        f64: false,
        precision: Some(Precision::Int8),
        calibrated: false,
    },
    Workload {
        name: "M infer int8 static b1024",
        sizes: &[784, 512, 512, 10],
        batch: 1024,
        inference: true,
        f64: false,
        precision: Some(Precision::Int8),
        calibrated: true,
    },
    Workload {
        name: "M infer bf16 b1024",
        sizes: &[784, 512, 512, 10],
        batch: 1024,
        inference: true,
        f64: false,
        precision: Some(Precision::Bf16),
        calibrated: false,
    },
    Workload {
        name: "S infer b64",
        sizes: &[784, 128, 10],
        batch: 64,
        inference: true,
        f64: false,
        precision: None,
        calibrated: false,
    },
    Workload {
        name: "S infer int8 b64",
        sizes: &[784, 128, 10],
        batch: 64,
        inference: true,
        f64: false,
        precision: Some(Precision::Int8),
        calibrated: false,
    },
    Workload {
        name: "S infer bf16 b64",
        sizes: &[784, 128, 10],
        batch: 64,
        inference: true,
        f64: false,
        precision: Some(Precision::Bf16),
        calibrated: false,
    },
    Workload {
        name: "tiny infer int8 b1",
        sizes: &[6, 64, 8, 4],
        batch: 1,
        inference: true,
        f64: false,
        precision: Some(Precision::Int8),
        calibrated: false,
    },
    Workload {
        name: "tiny infer bf16 b1",
        sizes: &[6, 64, 8, 4],
        batch: 1,
        inference: true,
        f64: false,
        precision: Some(Precision::Bf16),
        calibrated: false,
    },
];

/// Runs of a benchmark: `run(n)` makes `n` calls.
pub type Runner<'a> = Box<dyn FnMut(usize) + 'a>;

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
/// A bound whose products each read arrays of their own would find its inputs colder in cache
/// than the step does (BENCHMARKS.md has the comparison).
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
    // On rayon's pool when some product splits (`gemm::splits`, the rule crank's GEMM cuts
    // products by) and there are threads to split it over, as crank runs such a step
    // (`Sequential::train_step` moves there once): a product split from outside the pool would
    // pay for waking a worker and then the caller, every time. One move per slice of calls.
    // Otherwise, as crank's step, on the calling thread.
    let any_split = w.sizes.windows(2).any(|s| splits(b * s[0] * s[1]));
    Box::new(move |calls| {
        let pool = any_split && rayon::current_num_threads() > 1;
        let mut run = || {
            for _ in 0..calls {
                // `beta = 0`, as the step's forward writes its product and adds the bias after
                // (`gemm::affine` of a large product; a small one adds it in its registers).
                for i in 0..layers.len() {
                    let (below, rest) = layers.split_at_mut(i);
                    let Products { weights, out, .. } = &mut rest[0];
                    let x = below.last().map_or_else(|| input.view(), |l| l.out.view());
                    gemm(F::one(), x, weights.view(), F::zero(), out.view_mut());
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
    model = match w.precision {
        Some(_) if w.calibrated => model.quantize_static(x.view()).unwrap(),
        Some(p) => model.quantize(p).unwrap(),
        None => model,
    };
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
pub fn runners(w: &'static Workload, crank_only: bool) -> Vec<Runner<'static>> {
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
