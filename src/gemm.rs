//! Every matrix product in crank goes through this module.
//!
//! The default build uses ndarray's pure-Rust GEMM (the `matrixmultiply` crate, threaded); the
//! Cargo feature `openblas` sends the same calls to the system OpenBLAS through ndarray's `blas`
//! feature. Transposed operands are passed as views (`a.t()`), which both backends take by stride
//! or transpose flag, so no product copies or allocates.

use crate::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

/// `c = alpha · a · b + beta · c`, written into `c`.
///
/// Shapes are the caller's invariant (`a: (m, k)`, `b: (k, n)`, `c: (m, n)`); callers in crank
/// check user-facing shapes before they get here.
#[inline]
pub(crate) fn gemm<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    debug_assert_eq!(a.ncols(), b.nrows());
    debug_assert_eq!(c.dim(), (a.nrows(), b.ncols()));
    general_mat_mul(alpha, &a, &b, beta, &mut c);
}

#[cfg(feature = "openblas")]
unsafe extern "C" {
    fn openblas_get_config() -> *const std::ffi::c_char;
}

/// Which GEMM this build of crank uses.
///
/// Without the `openblas` feature: `"matrixmultiply (pure Rust)"`. With it: `"OpenBLAS"`
/// followed by OpenBLAS's own configuration string (version, kernel, thread limit), read from
/// the library that is actually linked.
///
/// ```
/// let b = crank::backend();
/// assert!(b.starts_with("matrixmultiply") || b.starts_with("OpenBLAS"));
/// ```
pub fn backend() -> String {
    #[cfg(feature = "openblas")]
    {
        // SAFETY: openblas_get_config takes no arguments and returns a pointer to a static,
        // NUL-terminated string owned by the library.
        let config = unsafe { std::ffi::CStr::from_ptr(openblas_get_config()) };
        format!("OpenBLAS ({})", config.to_string_lossy().trim())
    }
    #[cfg(not(feature = "openblas"))]
    {
        "matrixmultiply (pure Rust)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn transposed_views_match_naive_product() {
        let a = Array2::from_shape_fn((9, 13), |(i, j)| (i * 13 + j) as f64 * 0.01 - 0.3);
        let b = Array2::from_shape_fn((9, 11), |(i, j)| ((i + 2 * j) % 7) as f64 - 3.0);
        // c = 0.5 · aᵀ b + 2 · c
        let mut c = Array2::from_elem((13, 11), 1.0);
        gemm(0.5, a.t(), b.view(), 2.0, c.view_mut());
        for i in 0..13 {
            for j in 0..11 {
                let want: f64 = 0.5 * (0..9).map(|k| a[[k, i]] * b[[k, j]]).sum::<f64>() + 2.0;
                assert!((c[[i, j]] - want).abs() < 1e-12);
            }
        }
    }
}
