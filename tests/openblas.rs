//! Under `--features openblas`, crank's matrix products really reach OpenBLAS.
//!
//! The test binary defines `cblas_sgemm` and `cblas_dgemm` itself: the executable's symbols take
//! precedence over the shared library's, so ndarray's calls land here, are counted, and are
//! forwarded to the next definition, OpenBLAS's, found with `dlsym(RTLD_NEXT, ...)`.
#![cfg(feature = "openblas")]

use crank::{Activation, Dense, Layer, Mode};
use ndarray::Array2;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::ffi::{CStr, c_int};
use std::sync::Mutex;

const CBLAS_TRANS: c_int = 112;

/// `(element type, transpose a, transpose b, m, n, k)` of a GEMM call.
type Call = (&'static str, bool, bool, c_int, c_int, c_int);

/// Every GEMM call seen.
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

macro_rules! interpose {
    ($name:ident, $t:ty, $label:expr) => {
        /// Counts the call and forwards it to OpenBLAS.
        ///
        /// # Safety
        /// The same contract as OpenBLAS's own function: valid pointers and strides.
        #[unsafe(no_mangle)]
        #[allow(clippy::too_many_arguments)]
        pub unsafe extern "C" fn $name(
            layout: c_int,
            ta: c_int,
            tb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: $t,
            a: *const $t,
            lda: c_int,
            b: *const $t,
            ldb: c_int,
            beta: $t,
            c: *mut $t,
            ldc: c_int,
        ) {
            type Gemm = unsafe extern "C" fn(
                c_int,
                c_int,
                c_int,
                c_int,
                c_int,
                c_int,
                $t,
                *const $t,
                c_int,
                *const $t,
                c_int,
                $t,
                *mut $t,
                c_int,
            );
            CALLS
                .lock()
                .unwrap()
                .push(($label, ta == CBLAS_TRANS, tb == CBLAS_TRANS, m, n, k));
            let symbol: &CStr = match $label {
                "f32" => c"cblas_sgemm",
                _ => c"cblas_dgemm",
            };
            // SAFETY: the next definition of this symbol is OpenBLAS's, with this signature.
            unsafe {
                let next = libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr());
                assert!(!next.is_null(), "OpenBLAS's {symbol:?} not found");
                let next: Gemm = std::mem::transmute(next);
                next(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
            }
        }
    };
}

interpose!(cblas_sgemm, f32, "f32");
interpose!(cblas_dgemm, f64, "f64");

/// Forward and backward of a Dense layer `(n_in -> n_out)` on a batch; the GEMM calls seen.
fn dense_round_trip<F: crank::Scalar>(batch: usize, n_in: usize, n_out: usize) -> Vec<Call> {
    // One round trip at a time: the tests share the record of calls.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    CALLS.lock().unwrap().clear();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let mut layer = Dense::<F>::new(n_in, n_out, Activation::Relu, &mut rng).unwrap();
    let x = Array2::from_shape_fn((batch, n_in), |(i, j)| F::of(((i + j) % 5) as f64 - 2.0));
    let g = Array2::from_elem((batch, n_out), F::of(0.5));
    layer.forward(x.view(), Mode::Train).unwrap();
    layer.backward(x.view(), g.view(), true).unwrap();
    let calls = CALLS.lock().unwrap().clone();
    // The naive product gives the same forward output.
    let want = (x.dot(&layer.weights()) + layer.biases()).mapv(|v| v.max(F::zero()));
    let got = layer.output();
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| (*a - *b).abs() <= F::of(1e-4))
    );
    calls
}

#[test]
fn every_dense_product_goes_to_openblas_with_transpose_flags() {
    assert!(
        crank::backend().starts_with("OpenBLAS ("),
        "{}",
        crank::backend()
    );
    // 64 · 96 · 80 multiply-adds per product: above crank::gemm::SMALL_GEMM.
    const { assert!(64 * 96 * 80 > crank::gemm::SMALL_GEMM) };
    for (label, calls) in [
        ("f32", dense_round_trip::<f32>(64, 96, 80)),
        ("f64", dense_round_trip::<f64>(64, 96, 80)),
    ] {
        // forward z = x·W; backward dW = xᵀ·δ and dx = δ·Wᵀ.
        assert_eq!(
            calls,
            vec![
                (label, false, false, 64, 80, 96),
                (label, true, false, 96, 80, 64),
                (label, false, true, 64, 96, 80),
            ],
            "{label}"
        );
    }
}

#[test]
fn small_products_skip_the_library_call() {
    // 16 · 40 · 24 multiply-adds: crank's direct loops, same results, no OpenBLAS call.
    const { assert!(16 * 40 * 24 <= crank::gemm::SMALL_GEMM) };
    assert_eq!(dense_round_trip::<f32>(16, 40, 24), vec![]);
    assert_eq!(dense_round_trip::<f64>(16, 40, 24), vec![]);
}
