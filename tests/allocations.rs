//! A training step and an inference allocate nothing once they have seen a batch of that size,
//! counted by a global allocator: faer's x86 kernels (AVX2 or AVX-512) keep one packing buffer
//! per thread from its first product on, and OpenBLAS keeps a pool and allocates nothing
//! through Rust. Where faer falls back to the `gemm` crate's portable kernels (no AVX2, other
//! architectures), that crate allocates its packing space in every call: there the test counts
//! the same products run alone and requires the step to allocate exactly as much.

use crank::gemm::gemm;
use crank::quant::Precision;
use crank::{Activation, Adam, Dense, Layer, Loss, Mode, Sequential, Sgd, Workspace};
use ndarray::Array2;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(mut f: impl FnMut()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// Runs one product large enough for the GEMM backend on every thread of rayon's pool and on
/// the calling thread: faer keeps one packing buffer per thread, allocated by that thread's
/// first product, so after this no product allocates wherever rayon runs it.
fn warm_every_thread() {
    let product = || {
        let a = Array2::<f32>::ones((64, 64));
        let mut c = Array2::<f32>::zeros((64, 64));
        const { assert!(64 * 64 * 64 > crank::gemm::SMALL_GEMM) };
        gemm(1.0, a.view(), a.view(), 0.0, c.view_mut());
    };
    rayon::broadcast(|_| product());
    product();
}

/// Allocations of the GEMMs of one training step of `sizes` at `batch`, run alone through
/// crank's own product path (which runs small products itself and splits large ones over
/// rayon's threads, one backend call per block, exactly as in a step); none where the backend
/// keeps its buffers.
fn gemm_allocations(sizes: &[usize], batch: usize, inference: bool) -> usize {
    if !crank::backend().contains("portable") {
        return 0;
    }
    let mut mats: Vec<_> = sizes
        .windows(2)
        .map(|s| {
            (
                Array2::<f32>::ones((batch, s[0])),
                Array2::<f32>::ones((s[0], s[1])),
                Array2::<f32>::zeros((batch, s[1])),
                Array2::<f32>::zeros((s[0], s[1])),
                Array2::<f32>::zeros((batch, s[0])),
            )
        })
        .collect();
    count(|| {
        for (i, (x, w, z, dw, dx)) in mats.iter_mut().enumerate() {
            gemm(1.0, x.view(), w.view(), 1.0, z.view_mut());
            if !inference {
                gemm(1.0, x.t(), z.view(), 0.0, dw.view_mut());
                if i > 0 {
                    gemm(1.0, z.view(), w.t(), 0.0, dx.view_mut());
                }
            }
        }
    })
}

/// [`gemm_allocations`] of an inference that runs one block of rows per thread through every
/// layer (a float model's large batch on several threads), whose products are not split again
/// inside a block: each block's products, run alone on the thread of the one-thread pool `one`.
/// That pool is built and warmed before anything is counted, and lives until the counting is
/// over: the global counter sees every thread, and a pool's thread starting or ending during a
/// count would add its own allocations to it.
fn block_inference_allocations(
    one: &rayon::ThreadPool,
    sizes: &[usize],
    batch: usize,
    threads: usize,
) -> usize {
    let block = batch.div_ceil(threads);
    (0..batch)
        .step_by(block)
        .map(|r| one.install(|| gemm_allocations(sizes, block.min(batch - r), true)))
        .sum()
}

#[test]
fn steady_state_training_and_inference_allocate_nothing_of_their_own() {
    // One test in this binary, so no other test allocates while counting. Its thread is one of
    // rayon's (`set_threads_here`): a step that forks starts here, as the command line's do.
    crank::set_threads_here(None).unwrap();
    assert_eq!(rayon::current_thread_index(), Some(0));
    let sizes = [64, 96, 48, 10];
    let batch = 40;
    let mut model = Sequential::<f32>::builder(64)
        .dense(96, Activation::Relu)
        .dense(48, Activation::Gelu)
        .dense(10, Activation::Identity)
        .seed(2)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((batch, 64), |(i, j)| ((i + j) % 7) as f32 / 7.0);
    let y: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut adam = Adam::new(1e-3).unwrap();
    let short = x.slice(ndarray::s![..7, ..]);
    // rayon's global pool starts its threads on first use, and they allocate as they start:
    // start them all now, outside any count.
    rayon::broadcast(|_| ());
    warm_every_thread();
    // A one-thread pool for counting products unsplit (`block_inference_allocations`).
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one.install(warm_every_thread);
    // Warm-up: the first batch of each size sizes the buffers and the optimizer's state.
    for _ in 0..2 {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
        model
            .train_step(short, &y[..7], &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
    }
    let step = count(|| {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
    });
    let short_step = count(|| {
        model
            .train_step(short, &y[..7], &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
    });
    // Plain SGD folds its update into the weight-gradient products: the same products.
    let mut sgd = Sgd::new(1e-2).unwrap();
    model
        .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
        .unwrap();
    let folded_step = count(|| {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
            .unwrap();
    });
    let (gemm_full, gemm_short) = (
        gemm_allocations(&sizes, batch, false),
        gemm_allocations(&sizes, 7, false),
    );
    assert_eq!(
        folded_step, gemm_full,
        "a plain-SGD step allocates beyond its GEMMs' {gemm_full}"
    );
    assert_eq!(
        step, gemm_full,
        "a training step allocates beyond its GEMMs' {gemm_full}"
    );
    assert_eq!(
        short_step, gemm_short,
        "a short batch allocates beyond its GEMMs' {gemm_short}"
    );

    let mut ws = Workspace::new();
    model.predict_with(x.view(), &mut ws).unwrap();
    let infer = count(|| {
        model.predict_with(x.view(), &mut ws).unwrap();
    });
    let gemm_infer = gemm_allocations(&sizes, batch, true);
    assert_eq!(
        infer, gemm_infer,
        "inference allocates beyond its GEMMs' {gemm_infer}"
    );

    // A layer on its own, forward and backward.
    let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(1);
    let mut dense = Dense::<f32>::new(64, 96, Activation::Tanh, &mut rng).unwrap();
    let g = Array2::<f32>::ones((batch, 96));
    dense.forward(x.view(), Mode::Train).unwrap();
    dense.backward(x.view(), g.view(), true).unwrap();
    let layer = count(|| {
        dense.forward(x.view(), Mode::Train).unwrap();
        dense.backward(x.view(), g.view(), true).unwrap();
    });
    // Its three products are those of the second layer of a 1-64-96 step: forward, dW and dx.
    let layer_gemms =
        gemm_allocations(&[1, 64, 96], batch, false) - gemm_allocations(&[1, 64], batch, false);
    assert_eq!(
        layer, layer_gemms,
        "a layer's forward and backward allocate beyond its GEMMs'"
    );

    // A model large enough that its step forks: products split over the threads, parallel
    // kernels and update. Run from one of rayon's threads, it allocates nothing either: this
    // thread is one (a step started outside the pool moves there through rayon's injector
    // queue, which allocates a block every 63 entries; `set_threads_here` spares the calling
    // thread that, and 70 steps would find it).
    let (sizes, batch) = ([128, 256, 10], 128);
    assert!(batch * sizes[0] * sizes[1] >= 2 * crank::gemm::PAR_GEMM);
    assert!(sizes[0] * sizes[1] >= crank::kernels::PAR_THRESHOLD);
    let mut model = Sequential::<f32>::builder(sizes[0])
        .dense(sizes[1], Activation::Relu)
        .dense(sizes[2], Activation::Identity)
        .seed(3)
        .build()
        .unwrap();
    let x = Array2::from_shape_fn((batch, sizes[0]), |(i, j)| ((i + j) % 5) as f32 / 5.0);
    let y: Vec<usize> = (0..batch).map(|i| i % sizes[2]).collect();
    let (mut ws, mut adam) = (Workspace::new(), Adam::new(1e-3).unwrap());
    let mut sgd = Sgd::new(1e-2).unwrap();
    for _ in 0..2 {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
            .unwrap();
        model.predict_with(x.view(), &mut ws).unwrap();
    }
    const CALLS: usize = 70;
    let steps = count(|| {
        for _ in 0..CALLS {
            model
                .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut adam)
                .unwrap();
        }
    });
    let infers = count(|| {
        for _ in 0..CALLS {
            model.predict_with(x.view(), &mut ws).unwrap();
        }
    });
    let folded_steps = count(|| {
        for _ in 0..CALLS {
            model
                .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut sgd)
                .unwrap();
        }
    });
    // On several threads this batch's inference goes in blocks of rows (its layers' outputs
    // reach `PAR_THRESHOLD` values, and a block's products are still large ones).
    let threads = rayon::current_num_threads();
    assert!(batch * sizes[1] >= crank::kernels::PAR_THRESHOLD);
    let gemm_infer = if threads > 1 {
        block_inference_allocations(&one, &sizes, batch, threads)
    } else {
        gemm_allocations(&sizes, batch, true)
    };
    let (gemm_step, gemm_infer) = (
        CALLS * gemm_allocations(&sizes, batch, false),
        CALLS * gemm_infer,
    );
    assert_eq!(
        steps, gemm_step,
        "{CALLS} forking steps allocate beyond their GEMMs'"
    );
    assert_eq!(
        folded_steps, gemm_step,
        "{CALLS} forking plain-SGD steps allocate beyond their GEMMs'"
    );
    assert_eq!(
        infers, gemm_infer,
        "{CALLS} forking inferences allocate beyond their GEMMs'"
    );

    // Quantized models: their products' scratch space is each thread's own, lent out per call
    // and kept. A batch of 40 goes in blocks over the threads, one of 300 layer by layer.
    let sizes = [64, 96, 48, 10];
    let model = Sequential::<f32>::builder(sizes[0])
        .dense(sizes[1], Activation::Relu)
        .dense(sizes[2], Activation::Tanh)
        .dense(sizes[3], Activation::Identity)
        .seed(4)
        .build()
        .unwrap();
    for precision in [Precision::Int8, Precision::Bf16] {
        let q = model.quantize(precision).unwrap();
        for batch in [40, 300] {
            let x = Array2::from_shape_fn((batch, sizes[0]), |(i, j)| ((i * j) % 9) as f32 / 4.0);
            let mut ws = Workspace::new();
            rayon::scope(|_| {
                for _ in 0..4 {
                    rayon::broadcast(|_| q.predict(x.view()).unwrap());
                    q.predict_with(x.view(), &mut ws).unwrap();
                }
                let infer = count(|| {
                    q.predict_with(x.view(), &mut ws).unwrap();
                });
                // The bf16 fallback runs the f32 GEMM on widened weights: on the whole batch,
                // or on each thread's block of rows (a batch of at most 64 rows per thread).
                let threads = rayon::current_num_threads();
                let gemms = match crank::quant::kernels().1 {
                    "widened-f32" if precision == Precision::Bf16 => {
                        if threads > 1 && batch <= 64 * threads {
                            let block = batch.div_ceil(threads).max(8);
                            (0..batch)
                                .step_by(block)
                                .map(|r| gemm_allocations(&sizes, block.min(batch - r), true))
                                .sum()
                        } else {
                            gemm_allocations(&sizes, batch, true)
                        }
                    }
                    _ => 0,
                };
                assert_eq!(
                    infer, gemms,
                    "{precision} inference at batch {batch} allocates"
                );
            });
        }
    }
}
