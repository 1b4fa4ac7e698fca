//! Every matrix product in crank goes through this module.
//!
//! Products up to [`SMALL_GEMM`] multiply-adds run in crank's own loops (`small`); larger ones
//! go to the backend (`backend`): faer, pure Rust, in the default build, or the system OpenBLAS
//! with the Cargo feature `openblas`. Transposed operands are passed as views (`a.t()`), which
//! both backends take by stride or transpose flag, so no product copies, and after a thread's
//! first product none allocates.
//!
//! # Threads
//! crank has one pool of threads, rayon's (see [`set_threads`](crate::set_threads)). The
//! backends run single-threaded. A product of at least twice [`PAR_GEMM`] multiply-adds is cut
//! into blocks of rows (or columns) of `c`, at most one per thread and each of at least
//! [`PAR_GEMM`], and each block is one backend call on a rayon thread. So the GEMM's threads and
//! the kernels' threads are the same threads, and no second pool spins while the other works.
//!
//! How `c` is cut depends only on the shape and the thread count, so the same product at the
//! same thread count gives bitwise the same result. With crank's own loops and faer each element
//! is also the same sum over `k` however `c` is cut (faer cuts `k` into panels by `k` alone), so
//! the thread count does not change the result either (`tests/integration/determinism.rs` and
//! this module's tests check both bitwise). OpenBLAS does not promise that: with its Haswell and Zen kernels an element
//! near a block's edge can be summed by another code path than in the whole product, and
//! differ in the last bits (seen with Debian's OpenBLAS 0.3.21 on an AMD EPYC; its SkylakeX
//! kernels, on an Intel Xeon, gave bitwise the same result).

mod backend;
mod dispatch;
mod small;

pub use backend::backend;
#[cfg(test)]
pub(crate) use backend::faer_kernels;
pub(crate) use dispatch::transpose;

use crate::{Scalar, kernels};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;
use small::{Addend, Store, small_gemm};

/// Products of at most this many multiply-adds skip the GEMM library and run as plain loops:
/// for the shapes of small networks (a few thousand multiply-adds) the library's packing and
/// call overhead, about a microsecond, is larger than the arithmetic. Measured with
/// `cargo bench --bench dense -- gemm`.
pub const SMALL_GEMM: usize = 32 * 1024;

/// A product is split over rayon's threads into blocks of at least this many multiply-adds (as
/// many blocks as there are threads, or fewer); a smaller product takes tens of microseconds,
/// and one thread does it alone. Blocks this large also stay above the size up to which
/// OpenBLAS's SkylakeX build switches to its separate small-matrix kernels (10⁶ multiply-adds in
/// single precision), so splitting does not change which kernel computes an element.
pub const PAR_GEMM: usize = 1 << 20;

/// `c = alpha · a · b + beta · c`, written into `c`.
///
/// Every product in crank goes through here. Shapes are the caller's invariant (`a: (m, k)`,
/// `b: (k, n)`, `c: (m, n)`; ndarray panics on a mismatch): crank's layers check user-facing
/// shapes before they call it. As in BLAS, `c` is not read when `beta` is 0.
/// Products up to [`SMALL_GEMM`] multiply-adds in the layouts crank uses run as direct loops;
/// the rest go to the backend, split over rayon's threads from [`PAR_GEMM`] multiply-adds on.
/// The same product at the same thread count gives bitwise the same result, and with the
/// default GEMM at any thread count; with `openblas`, a product split over more threads can
/// differ in the last bits, where OpenBLAS's kernels sum an element at a block's edge by
/// another code path than in the whole product (its Haswell and Zen kernels do).
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
    let (m, n) = c.dim();
    let work = m * a.ncols() * n;
    if is_small(m, a.ncols(), n)
        && small_gemm(alpha, &a, &b, Addend::Scaled(beta), Store::Plain, &mut c).is_some()
    {
        return;
    }
    // Blocks of rows when m >= n (each reads all of `b` and its rows of `a`), else of columns.
    // rayon is asked for its thread count only when a split is possible at all.
    let split = if m >= n { m } else { n };
    let block = if splits(work) {
        block_size(split, work / split, crate::threads::available())
    } else {
        split
    };
    if block >= split {
        backend_gemm(alpha, &a, &b, beta, &mut c);
    } else if m >= n {
        c.axis_chunks_iter_mut(Axis(0), block)
            .into_par_iter()
            .zip(a.axis_chunks_iter(Axis(0), block))
            .for_each(|(mut c, a)| backend_gemm(alpha, &a, &b, beta, &mut c));
    } else {
        c.axis_chunks_iter_mut(Axis(1), block)
            .into_par_iter()
            .zip(b.axis_chunks_iter(Axis(1), block))
            .for_each(|(mut c, b)| backend_gemm(alpha, &a, &b, beta, &mut c));
    }
}

/// `c = a · b + bias`, with `bias` (`n` values) added to every row of `c` (`(m, n)`, in
/// standard layout; not read): a layer's `x·W + b`. A small product adds the bias in its
/// registers as it writes `c`; a larger one writes the product (`beta = 0`) and a pass adds the
/// bias to its rows. Either way each element is `(a · b)ᵢⱼ + biasⱼ`, rounded once more, as
/// [`gemm`] with `beta = 0` and then the bias added would give it. (Filling `c` with the bias
/// and multiplying onto it, `beta = 1`, makes the large product read `c` as it goes, which in a
/// chain of layers cost more than the pass.)
///
/// The operands go by reference: a one-sample prediction is a few of these small calls, where
/// copying the views costs more than it seems (the copy reads back what was just written field by
/// field, and the processor cannot forward such stores to a wider load).
#[inline]
pub(crate) fn affine<F: Scalar>(
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    bias: &[F],
    c: &mut ArrayViewMut2<'_, F>,
) {
    if let Some(bias) = affine_deferred(a, b, bias, c) {
        let out = c.as_slice_mut().expect("the output is in standard layout");
        kernels::add_rows(out, bias);
    }
}

/// [`affine`] with the bias pass left to the caller: a small product adds the bias in its
/// registers and returns `None`; a larger one writes `a · b` alone and returns `Some(bias)`,
/// which the caller adds in a pass it makes over `c` anyway (a layer's activation, with
/// [`kernels::add_rows_map`] and its kin), one pass where [`affine`] and the activation make two.
/// Either way each element is rounded as [`affine`] rounds it.
#[inline]
pub(crate) fn affine_deferred<'b, F: Scalar>(
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    bias: &'b [F],
    c: &mut ArrayViewMut2<'_, F>,
) -> Option<&'b [F]> {
    debug_assert!(c.is_standard_layout());
    if small_affine(a, b, bias, Store::Plain, c).is_some() {
        return None;
    }
    gemm(F::one(), a.view(), b.view(), F::zero(), c.view_mut());
    Some(bias)
}

/// `c = ReLU(a · b + bias)` for a small product, the ReLU applied in its registers as it writes
/// `c`, with `a · b + bias` also written into `pre` (laid out as `c`) when given: a layer's
/// bias and ReLU with no pass after the product. Returns `Some(finite)`, whether every
/// `a · b + bias` was finite (the ReLU maps NaN to 0, so `c` cannot tell), or `None` with
/// nothing written when the product is not one the small kernel takes; the caller then goes
/// through [`affine_deferred`] and the activation's pass, which give bitwise the same values.
#[inline]
pub(crate) fn affine_relu<F: Scalar>(
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    bias: &[F],
    c: &mut ArrayViewMut2<'_, F>,
    pre: Option<&mut [F]>,
) -> Option<bool> {
    let store = match pre {
        Some(pre) => Store::ReluKeeping(pre),
        None => Store::Relu,
    };
    small_affine(a, b, bias, store, c)
}

/// `a · b + bias` written as `store` says by crank's own loops, when the product is small and
/// in a layout they take ([`small_gemm`]'s answer); `None`, nothing written, otherwise.
#[inline]
fn small_affine<F: Scalar>(
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    bias: &[F],
    store: Store<'_, F>,
    c: &mut ArrayViewMut2<'_, F>,
) -> Option<bool> {
    debug_assert_eq!(bias.len(), b.ncols());
    let (m, n) = c.dim();
    if !is_small(m, a.ncols(), n) {
        return None;
    }
    small_gemm(F::one(), a, b, Addend::Row(bias), store, c)
}

/// Whether an `(m, k) · (k, n)` product is small enough for crank's own loops (at most
/// [`SMALL_GEMM`] multiply-adds) rather than the backend.
#[inline]
pub(crate) fn is_small(m: usize, k: usize, n: usize) -> bool {
    m * k * n <= SMALL_GEMM
}

/// Whether `xᵀ·b`, with `x` a row-major `(k, m)` array and `b` `(k, n)`, runs faster as a
/// product of a row-major copy of `xᵀ` than of the transposed view, so that a caller that owns
/// a buffer for the copy should make it (with [`transpose`]). Only where the backend is faer on
/// its x86 kernels, for products it takes (past [`SMALL_GEMM`]), and where `x`'s rows are a
/// multiple of 4 KiB long: faer reads such a view far slower than a row-major operand (cache
/// sets alias), while OpenBLAS and other row lengths show no such loss (BENCHMARKS.md).
pub(crate) fn transposed_copy_pays<F: Scalar>(k: usize, m: usize, n: usize) -> bool {
    backend::faer_kernels()
        && m * k * n > SMALL_GEMM
        && n >= 16
        && (m * std::mem::size_of::<F>()).is_multiple_of(4096)
}

/// Whether a product of `work` multiply-adds is large enough to be cut into blocks (two of at
/// least [`PAR_GEMM`]); whether it is also depends on the thread count and its shape.
#[inline]
pub fn splits(work: usize) -> bool {
    work >= 2 * PAR_GEMM
}

/// How many of the `len` rows (or columns) of `c`, each worth `per` multiply-adds, one block
/// takes: `len` (no split) unless at least two blocks, at most one per thread, can each have
/// [`PAR_GEMM`] multiply-adds, the last block (the smallest) included.
fn block_size(len: usize, per: usize, threads: usize) -> usize {
    let mut parts = threads.min(len);
    while parts > 1 {
        let block = len.div_ceil(parts);
        let last = len - (len.div_ceil(block) - 1) * block;
        if last * per >= PAR_GEMM {
            return block;
        }
        parts -= 1;
    }
    len
}

/// One backend call on the calling thread.
#[inline]
fn backend_gemm<F: Scalar>(
    alpha: F,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    beta: F,
    c: &mut ArrayViewMut2<'_, F>,
) {
    dispatch::product(alpha, a, b, beta, c);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `mᵀ` in row-major order, so that `row_major_t(&m).t()` reads `m` column-major
    /// (`m.t().to_owned()` would keep the transposed view's column-major order, and its `.t()`
    /// would be `m` row-major again).
    fn row_major_t<F: Clone>(m: &Array2<F>) -> Array2<F> {
        m.t().as_standard_layout().into_owned()
    }

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
            let (at, bt) = (row_major_t(&a), row_major_t(&b));
            for (layout, a_view, b_view) in [
                ("nn", a.view(), b.view()),
                ("tn", at.t(), b.view()),
                ("nt", a.view(), bt.t()),
            ] {
                // "tn" reads `a` column-major, "nt" reads `b` column-major.
                let a_rows = a_view.strides()[1] == 1;
                let b_rows = b_view.strides()[1] == 1;
                assert!(
                    m < 2 || k < 2 || n < 2 || (a_rows, b_rows) == (layout != "tn", layout != "nt")
                );
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

    /// `affine` gives bitwise what `gemm` (`beta = 0`) and then the bias added give, for small
    /// products (the bias added in the kernel, also where a transposed `b` is copied a few
    /// columns at a time) and large ones (on one thread and split over two), in the three
    /// layouts.
    #[test]
    fn affine_equals_gemm_then_the_bias_bitwise() {
        for (m, k, n) in [
            (1, 6, 64),
            (32, 8, 4),
            (13, 19, 33),
            (4, 300, 8),
            (70, 90, 60),
            (300, 200, 90),
        ] {
            let a = Array2::from_shape_fn((m, k), |(i, p)| ((i * 7 + p * 3) % 11) as f32 * 0.3);
            let b = Array2::from_shape_fn((k, n), |(p, j)| ((p * 5 + j) % 13) as f32 * 0.1 - 0.6);
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.37 - 1.0).collect();
            let (at, bt) = (row_major_t(&a), row_major_t(&b));
            for (layout, a, b) in [
                ("nn", a.view(), b.view()),
                ("tn", at.t(), b.view()),
                ("nt", a.view(), bt.t()),
            ] {
                // Both at the same thread count: with OpenBLAS a split product may differ from
                // one thread's in the last bits (see `split_products_equal_one_thread_bitwise`).
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut want = Array2::from_elem((m, n), f32::NAN);
                    let mut got = Array2::from_elem((m, n), f32::NAN);
                    pool.install(|| {
                        gemm(1.0, a, b, 0.0, want.view_mut());
                        want += &ndarray::aview1(&bias);
                        affine(&a, &b, &bias, &mut got.view_mut());
                    });
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}x{k}x{n} {layout}, {threads} threads");
                }
            }
        }
    }

    /// A product split over rayon's threads (by rows when `m >= n`, by columns otherwise) gives
    /// bitwise what one thread gives, in the layouts a Dense layer uses; with OpenBLAS (whose
    /// kernels may sum an element at a block's edge differently, see the module's doc), the same
    /// result at the same thread count, and one thread's up to rounding.
    #[test]
    fn split_products_equal_one_thread_bitwise() {
        let run = |threads: usize, m: usize, k: usize, n: usize, layout: &str| {
            let a =
                Array2::from_shape_fn((m, k), |(i, p)| ((i * 7 + p * 3) % 11) as f32 * 0.3 - 1.0);
            let b = Array2::from_shape_fn((k, n), |(p, j)| ((p * 5 + j) % 13) as f32 * 0.1);
            let (at, bt) = (row_major_t(&a), row_major_t(&b));
            let (a_view, b_view) = match layout {
                "nn" => (a.view(), b.view()),
                "tn" => (at.t(), b.view()),
                _ => (a.view(), bt.t()),
            };
            let mut c = Array2::from_elem((m, n), 0.5f32);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| gemm(0.75, a_view, b_view, 1.0, c.view_mut()));
            c
        };
        // Rows split (m >= n) and columns split (m < n), into 2 and 3 blocks.
        for (m, k, n) in [(203, 128, 130), (61, 192, 300)] {
            assert!(m * k * n >= 3 * PAR_GEMM);
            for layout in ["nn", "tn", "nt"] {
                let one = run(1, m, k, n, layout);
                let same_bits = |x: &Array2<f32>, y: &Array2<f32>| {
                    x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits())
                };
                for threads in [2, 3] {
                    let split = run(threads, m, k, n, layout);
                    let what = format!("{m}x{k}x{n} {layout} at {threads} threads");
                    if cfg!(feature = "openblas") {
                        assert!(same_bits(&split, &run(threads, m, k, n, layout)), "{what}");
                        for (x, y) in one.iter().zip(&split) {
                            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{what}: {x} {y}");
                        }
                    } else {
                        assert!(same_bits(&one, &split), "{what} differs from 1 thread");
                    }
                }
            }
        }
    }

    /// What the split relies on: the backend computes each element of `c` by the same sums
    /// whatever block of `c` it is asked for, so a block of rows or columns of a product is
    /// bitwise that block of the whole product. Checked directly on the backend, for blocks of
    /// many shapes (fewer and more rows than a register tile, depths past one packed panel),
    /// in the three layouts and both element types. With OpenBLAS this is not promised (the
    /// module's doc) and not checked.
    #[test]
    fn backend_blocks_equal_the_whole_product_bitwise() {
        if cfg!(feature = "openblas") {
            return;
        }
        fn check<F: Scalar>(m: usize, k: usize, n: usize) {
            let a = Array2::from_shape_fn((m, k), |(i, p)| {
                F::of(((i * 7 + p * 3) % 11) as f64 * 0.37 - 1.3)
            });
            let b = Array2::from_shape_fn((k, n), |(p, j)| F::of(((p * 5 + j) % 13) as f64 * 0.11));
            let (at, bt) = (row_major_t(&a), row_major_t(&b));
            for (layout, a, b) in [
                ("nn", a.view(), b.view()),
                ("tn", at.t(), b.view()),
                ("nt", a.view(), bt.t()),
            ] {
                let mut whole = Array2::from_elem((m, n), F::of(0.25));
                backend_gemm(F::of(0.75), &a, &b, F::one(), &mut whole.view_mut());
                for (rows, cols) in [
                    (0..m / 2, 0..n),
                    (m / 2..m, 0..n),
                    (1..m, 0..n),
                    (0..m, 0..n / 3),
                    (0..m, n / 3..n),
                    (3..m.min(9), 5..n),
                ] {
                    let (r, c) = (rows.clone(), cols.clone());
                    let mut part = Array2::from_elem((r.len(), c.len()), F::of(0.25));
                    let a_part = a.slice(ndarray::s![r.clone(), ..]);
                    let b_part = b.slice(ndarray::s![.., c.clone()]);
                    backend_gemm(
                        F::of(0.75),
                        &a_part,
                        &b_part,
                        F::one(),
                        &mut part.view_mut(),
                    );
                    let want = whole.slice(ndarray::s![r, c]);
                    let same = part.iter().zip(want.iter()).all(|(x, y)| {
                        x.to_f64().unwrap().to_bits() == y.to_f64().unwrap().to_bits()
                    });
                    assert!(
                        same,
                        "{} {m}x{k}x{n} {layout}: rows {rows:?} cols {cols:?}",
                        F::NAME
                    );
                }
            }
        }
        for (m, k, n) in [
            (203, 128, 130),
            (61, 192, 300),
            (100, 513, 70),
            (130, 1100, 49),
            (40, 700, 200),
            (97, 64, 97),
            (40, 64, 1100),
            (1100, 48, 30),
        ] {
            check::<f32>(m, k, n);
            check::<f64>(m, k, n);
        }
    }

    /// Long, narrow outputs in either memory order (the backend cuts them along their
    /// contiguous axis) against the definition, with each kind of beta.
    #[test]
    fn long_outputs_in_either_order_match_the_definition() {
        for (m, k, n, column_major) in [(30, 40, 1100, false), (1100, 40, 30, true)] {
            let a = Array2::from_shape_fn((m, k), |(i, p)| ((i * 7 + p * 3) % 11) as f64 - 5.0);
            let b = Array2::from_shape_fn((k, n), |(p, j)| ((p * 5 + j) % 13) as f64 * 0.25);
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 3.0)] {
                let start = if beta == 0.0 { f64::NAN } else { 1.5 };
                let mut c = if column_major {
                    Array2::from_elem((n, m), start).reversed_axes()
                } else {
                    Array2::from_elem((m, n), start)
                };
                assert_eq!(c.strides()[0] == 1, column_major);
                gemm(alpha, a.view(), b.view(), beta, c.view_mut());
                for ((i, j), &got) in c.indexed_iter() {
                    let sum: f64 = (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum();
                    let want = alpha * sum + if beta == 0.0 { 0.0 } else { beta * 1.5 };
                    assert!(
                        (got - want).abs() <= 1e-9 * (1.0 + want.abs()),
                        "{m}x{k}x{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocks_are_large_enough_and_one_per_thread_at_most() {
        for len in [1, 2, 3, 7, 10, 64, 203, 1000] {
            for per in [1, 1000, PAR_GEMM / 3, PAR_GEMM, 10 * PAR_GEMM] {
                for threads in [1, 2, 3, 8] {
                    let block = block_size(len, per, threads);
                    let blocks = len.div_ceil(block);
                    assert!(blocks <= threads, "{len} {per} {threads}: {blocks} blocks");
                    if blocks > 1 {
                        let last = len - (blocks - 1) * block;
                        assert!(last * per >= PAR_GEMM, "{len} {per} {threads}: last {last}");
                    }
                    if threads >= 2 && len >= 2 && (len / 2) * per >= PAR_GEMM {
                        assert!(blocks >= 2, "{len} {per} {threads}: not split");
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
