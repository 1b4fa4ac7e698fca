//! A training step and an inference allocate nothing once they have seen a batch of that size,
//! counted by a global allocator. The only allocations left are the GEMM backend's own: the
//! pure-Rust `matrixmultiply` allocates a packing buffer per product (OpenBLAS keeps a pool and
//! allocates none through Rust), so the test counts the same products run alone and requires
//! crank's step to allocate exactly as much.

use crank::{Activation, Adam, Dense, Layer, Loss, Mode, Sequential, Workspace};
use ndarray::{Array2, linalg::general_mat_mul};
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

/// Allocations of the GEMMs of one training step of `sizes` at `batch`, run alone.
fn gemm_allocations(sizes: &[usize], batch: usize, inference: bool) -> usize {
    let mats: Vec<_> = sizes
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
    let mut mats = mats;
    // crank runs products of at most SMALL_GEMM multiply-adds as its own loops, which allocate
    // nothing; only the larger ones reach the backend.
    let large = |a: usize, b: usize, c: usize| a * b * c > crank::kernels::SMALL_GEMM;
    count(|| {
        for (i, (x, w, z, dw, dx)) in mats.iter_mut().enumerate() {
            let (n_in, n_out) = w.dim();
            if large(batch, n_in, n_out) {
                general_mat_mul(1.0, &*x, &*w, 1.0, z);
                if !inference {
                    general_mat_mul(1.0, &x.t(), &*z, 0.0, dw);
                    if i > 0 {
                        general_mat_mul(1.0, &*z, &w.t(), 0.0, dx);
                    }
                }
            }
        }
    })
}

#[test]
fn steady_state_training_and_inference_allocate_nothing_of_their_own() {
    // One test in this binary, so no other test allocates while counting.
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
    // Warm-up: the first batch of each size sizes the buffers and the optimizer's state.
    for _ in 0..2 {
        model
            .train_step(x.view(), &y, &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
        model
            .train_step(short, &y[..7], &Loss::SoftmaxCrossEntropy, &mut adam)
            .unwrap();
    }
    let gemm_full = gemm_allocations(&sizes, batch, false);
    let gemm_short = gemm_allocations(&sizes, 7, false);
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
    assert_eq!(
        step, gemm_full,
        "a training step allocates beyond its GEMMs ({gemm_full})"
    );
    assert_eq!(
        short_step, gemm_short,
        "a short batch allocates beyond its GEMMs ({gemm_short})"
    );
    if cfg!(feature = "openblas") {
        assert_eq!(step, 0, "OpenBLAS allocates nothing through Rust");
    }

    let mut ws = Workspace::new();
    model.predict_with(x.view(), &mut ws).unwrap();
    let gemm_infer = gemm_allocations(&sizes, batch, true);
    let infer = count(|| {
        model.predict_with(x.view(), &mut ws).unwrap();
    });
    assert_eq!(
        infer, gemm_infer,
        "inference allocates beyond its GEMMs ({gemm_infer})"
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
    assert_eq!(layer, layer_gemms);
}
