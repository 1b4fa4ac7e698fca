//! Every matrix product in crank goes through this module.
//!
//! The default build uses ndarray's pure-Rust GEMM (the `matrixmultiply` crate, threaded); the
//! Cargo feature `openblas` sends the same calls to the system OpenBLAS through ndarray's `blas`
//! feature. Transposed operands are passed as views (`a.t()`), which both backends take by stride
//! or transpose flag, so no product copies or allocates.

use crate::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2, linalg::general_mat_mul};

/// Products of at most this many multiply-adds skip the GEMM library and run as plain loops:
/// for the shapes of small networks (a few thousand multiply-adds) the library's packing and
/// call overhead, about a microsecond, is larger than the arithmetic. Measured with
/// `cargo bench --bench dense -- gemm`.
pub const SMALL_GEMM: usize = 32 * 1024;

/// `c = alpha · a · b + beta · c`, written into `c`.
///
/// Every product in crank goes through here. Shapes are the caller's invariant (`a: (m, k)`,
/// `b: (k, n)`, `c: (m, n)`; ndarray panics on a mismatch): crank's layers check user-facing
/// shapes before they call it. As in BLAS, `c` is not read when `beta` is 0.
/// Products up to [`SMALL_GEMM`] multiply-adds in the layouts crank uses run as direct loops;
/// the rest go to the backend.
#[inline]
pub fn gemm<F: Scalar>(
    alpha: F,
    a: ArrayView2<'_, F>,
    b: ArrayView2<'_, F>,
    beta: F,
    mut c: ArrayViewMut2<'_, F>,
) {
    debug_assert_eq!(a.ncols(), b.nrows());
    debug_assert_eq!(c.dim(), (a.nrows(), b.ncols()));
    let work = a.nrows() * a.ncols() * b.ncols();
    if work <= SMALL_GEMM && small_gemm(alpha, &a, &b, beta, &mut c) {
        return;
    }
    general_mat_mul(alpha, &a, &b, beta, &mut c);
}

/// The direct loops for small products; `false` (nothing written) when the layouts are not
/// ones it handles: `c` contiguous, `a` row- or column-major, and `b` row-major or the
/// transpose of a row-major matrix with at most 1,024 rows.
fn small_gemm<F: Scalar>(
    alpha: F,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    beta: F,
    c: &mut ArrayViewMut2<'_, F>,
) -> bool {
    let (k, n) = b.dim();
    let Some(c) = c.as_slice_mut() else {
        return false;
    };
    // `a` row-major or column-major (a transposed view): element (i, p) is at `i·rs + p·cs`.
    let (Some(a_mem), &[rs, cs]) = (a.as_slice_memory_order(), a.strides()) else {
        return false;
    };
    let (Ok(rs), Ok(cs)) = (usize::try_from(rs), usize::try_from(cs)) else {
        return false;
    };
    let a = Strided {
        data: a_mem,
        rs,
        cs,
        m: a.nrows(),
        k: a.ncols(),
    };
    if n == 0 {
        return true;
    }
    if let Some(b) = b.as_slice() {
        small_nn(alpha, &a, b, n, beta, c, n, 0);
        return true;
    }
    // b is the transpose of a row-major (n, k) matrix: copy it, a block of columns at a time,
    // into a row-major (k, block) buffer on the stack.
    const STACK: usize = 1024;
    match b.t().as_slice() {
        Some(bt) if k > 0 && k <= STACK => {
            let block = (STACK / k).min(n);
            let mut rows = [F::zero(); STACK];
            for j0 in (0..n).step_by(block) {
                let width = block.min(n - j0);
                for (j, col) in bt[j0 * k..(j0 + width) * k].chunks_exact(k).enumerate() {
                    for (p, &v) in col.iter().enumerate() {
                        rows[p * width + j] = v;
                    }
                }
                small_nn(alpha, &a, &rows[..k * width], width, beta, c, n, j0);
            }
            true
        }
        _ => false,
    }
}

/// A matrix `(m, k)` stored in `data`, element `(i, p)` at `i · rs + p · cs`.
struct Strided<'a, F> {
    data: &'a [F],
    rs: usize,
    cs: usize,
    m: usize,
    k: usize,
}

/// `c = alpha · a · b + beta · c` for row-major `b` `(k, n)` and `c` `(m, n)`, with AVX2 and
/// FMA where the processor has them (checked at run time), plain arithmetic otherwise.
#[allow(clippy::too_many_arguments)]
fn small_nn<F: Scalar>(
    alpha: F,
    a: &Strided<'_, F>,
    b: &[F],
    n: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
    c0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the processor supports AVX2 and FMA, as just checked.
        unsafe { small_nn_fma(alpha, a, b, n, beta, c, ldc, c0) };
        return;
    }
    tiles::<F, false>(alpha, a, b, n, beta, c, ldc, c0);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
fn small_nn_fma<F: Scalar>(
    alpha: F,
    a: &Strided<'_, F>,
    b: &[F],
    n: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
    c0: usize,
) {
    tiles::<F, true>(alpha, a, b, n, beta, c, ldc, c0);
}

/// Walks `c` in tiles of 4 rows (then single rows) by 16, 8, 4 and 1 columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiles<F: Scalar, const FMA: bool>(
    alpha: F,
    a: &Strided<'_, F>,
    b: &[F],
    n: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
    c0: usize,
) {
    let m = a.m;
    let mut i = 0;
    while i < m {
        if m - i >= 4 {
            row_tiles::<F, FMA, 4>(alpha, a, i, b, n, beta, c, ldc, c0);
            i += 4;
        } else {
            row_tiles::<F, FMA, 1>(alpha, a, i, b, n, beta, c, ldc, c0);
            i += 1;
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn row_tiles<F: Scalar, const FMA: bool, const R: usize>(
    alpha: F,
    a: &Strided<'_, F>,
    i: usize,
    b: &[F],
    n: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
    c0: usize,
) {
    let mut j = 0;
    while n - j >= 16 {
        tile::<F, FMA, R, 16>(alpha, a, i, b, n, j, beta, c, ldc, c0);
        j += 16;
    }
    if n - j >= 8 {
        tile::<F, FMA, R, 8>(alpha, a, i, b, n, j, beta, c, ldc, c0);
        j += 8;
    }
    if n - j >= 4 {
        tile::<F, FMA, R, 4>(alpha, a, i, b, n, j, beta, c, ldc, c0);
        j += 4;
    }
    while j < n {
        tile::<F, FMA, R, 1>(alpha, a, i, b, n, j, beta, c, ldc, c0);
        j += 1;
    }
}

/// Rows `i..i + R`, columns `j..j + W` of `c`: `R · W` running sums over `k`, kept in
/// registers, then one write. As in BLAS, `c` is not read when `beta` is 0.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<F: Scalar, const FMA: bool, const R: usize, const W: usize>(
    alpha: F,
    a: &Strided<'_, F>,
    i: usize,
    b: &[F],
    n: usize,
    j: usize,
    beta: F,
    c: &mut [F],
    ldc: usize,
    c0: usize,
) {
    let k = a.k;
    let mut acc = [[F::zero(); W]; R];
    for p in 0..k {
        let b_blk: &[F; W] = b[p * n + j..p * n + j + W].try_into().expect("W values");
        for (r, acc) in acc.iter_mut().enumerate() {
            let a_ip = a.data[(i + r) * a.rs + p * a.cs];
            for l in 0..W {
                acc[l] = if FMA {
                    a_ip.mul_add(b_blk[l], acc[l])
                } else {
                    acc[l] + a_ip * b_blk[l]
                };
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let at = (i + r) * ldc + c0 + j;
        let c_blk: &mut [F; W] = (&mut c[at..at + W]).try_into().expect("W values");
        for l in 0..W {
            c_blk[l] = if beta == F::zero() {
                alpha * acc[l]
            } else {
                alpha * acc[l] + beta * c_blk[l]
            };
        }
    }
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

    /// Every layout crank uses, odd sizes around the tile edges, and each kind of beta, against
    /// the definition; sizes up to and past [`SMALL_GEMM`] so both paths run.
    #[test]
    fn small_and_large_products_match_the_definition() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 6, 64),
            (3, 7, 21),
            (5, 0, 3),
            (9, 13, 37),
            (32, 64, 8),
            (4, 40, 50),
            (2, 1100, 3),
            (40, 30, 50),
        ] {
            let a = Array2::from_shape_fn((m, k), |(i, p)| ((i * 7 + p * 3) % 11) as f64 - 5.0);
            let b = Array2::from_shape_fn((k, n), |(p, j)| ((p * 5 + j) % 13) as f64 * 0.25);
            let (at, bt) = (a.t().to_owned(), b.t().to_owned());
            for (layout, a_view, b_view) in [
                ("nn", a.view(), b.view()),
                ("tn", at.t(), b.view()),
                ("nt", a.view(), bt.t()),
            ] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 3.0)] {
                    // With beta 0 the old contents are not read, NaN included.
                    let start = if beta == 0.0 { f64::NAN } else { 1.5 };
                    let mut c = Array2::from_elem((m, n), start);
                    gemm(alpha, a_view, b_view, beta, c.view_mut());
                    for i in 0..m {
                        for j in 0..n {
                            let sum: f64 = (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum();
                            let want = alpha * sum + if beta == 0.0 { 0.0 } else { beta * 1.5 };
                            assert!(
                                (c[[i, j]] - want).abs() <= 1e-9 * (1.0 + want.abs()),
                                "{m}x{k}x{n} {layout} alpha {alpha} beta {beta} at ({i}, {j}): {} != {want}",
                                c[[i, j]]
                            );
                        }
                    }
                }
            }
        }
    }

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
