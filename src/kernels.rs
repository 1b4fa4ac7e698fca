//! Elementwise and reduction kernels over contiguous slices.
//!
//! Each kernel runs serially below [`PAR_THRESHOLD`] elements and on rayon's current thread pool
//! above it (so `pool.install(|| ...)` chooses the threads). Work is split into chunks of a fixed
//! size, independent of the number of threads, and reductions add their per-chunk partial results
//! in chunk order: every kernel gives bitwise the same answer at any thread count.

pub use crate::gemm::{PAR_GEMM, SMALL_GEMM, gemm};

use crate::Scalar;
use multiversion::multiversion;
use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread: under it, rayon's fork-join
/// overhead (a few microseconds) costs more than the work it spreads.
pub const PAR_THRESHOLD: usize = 1 << 15;

/// Elements per rayon task; fixed so that reductions do not depend on the thread count.
const CHUNK: usize = 1 << 13;

/// Whether `n` elements are worth spreading over rayon's threads: above the threshold and with
/// more than one thread to spread them over.
#[inline]
pub(crate) fn parallel(n: usize) -> bool {
    n >= PAR_THRESHOLD && rayon::current_num_threads() > 1
}

/// `out[i] = f(a[i])`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn map<F: Scalar>(out: &mut [F], a: &[F], f: impl Fn(F) -> F + Sync) {
    debug_assert_eq!(out.len(), a.len());
    if !parallel(out.len()) {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)));
    }
}

/// `a[i] = f(a[i])`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn map_inplace<F: Scalar>(a: &mut [F], f: impl Fn(F) -> F + Sync) {
    if !parallel(a.len()) {
        a.iter_mut().for_each(|x| *x = f(*x));
    } else {
        a.par_chunks_mut(CHUNK)
            .for_each(|a| a.iter_mut().for_each(|x| *x = f(*x)));
    }
}

/// `out[i] = f(a[i], b[i])`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn zip_map<F: Scalar>(out: &mut [F], a: &[F], b: &[F], f: impl Fn(F, F) -> F + Sync) {
    debug_assert!(out.len() == a.len() && a.len() == b.len());
    if !parallel(out.len()) {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((o, a), b)| {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    *o = f(x, y);
                }
            });
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn zip3_map<F: Scalar>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    c: &[F],
    f: impl Fn(F, F, F) -> F + Sync,
) {
    debug_assert!(out.len() == a.len() && a.len() == b.len() && b.len() == c.len());
    let run = |o: &mut [F], a: &[F], b: &[F], c: &[F]| {
        // Indexing over slices cut to one length: the compiler drops the bounds checks and
        // vectorises, which it does not for a chain of three zips.
        let n = o.len();
        let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
        for i in 0..n {
            o[i] = f(a[i], b[i], c[i]);
        }
    };
    if !parallel(out.len()) {
        run(out, a, b, c);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
            .for_each(|((o, a), (b, c))| run(o, a, b, c));
    }
}

/// [`zip3_map`] over a row-major matrix with `cols` columns, and [`column_sums`] of the result
/// times `scale` into `sums` (bitwise the same sums as the two calls).
///
/// Below [`PAR_THRESHOLD`] elements both happen in one pass, in blocks of columns whose sums
/// stay in registers while the block walks down the rows; larger matrices take the two passes
/// over contiguous memory.
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn zip3_map_column_sums<F: Scalar>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    c: &[F],
    cols: usize,
    f: impl Fn(F, F, F) -> F + Sync,
    scale: F,
    sums: &mut [F],
) {
    debug_assert!(out.len() == a.len() && a.len() == b.len() && b.len() == c.len());
    debug_assert_eq!(sums.len(), cols);
    if out.len() >= PAR_THRESHOLD || cols == 0 {
        zip3_map(out, a, b, c, f);
        column_sums(out, cols, scale, sums);
        return;
    }
    let mut j = 0;
    while cols - j >= 32 {
        zip3_block::<F, 32>(out, a, b, c, cols, j, &f, sums);
        j += 32;
    }
    while cols - j >= 8 {
        zip3_block::<F, 8>(out, a, b, c, cols, j, &f, sums);
        j += 8;
    }
    while j < cols {
        zip3_block::<F, 1>(out, a, b, c, cols, j, &f, sums);
        j += 1;
    }
    sums.iter_mut().for_each(|s| *s *= scale);
}

/// Columns `j..j + W` of [`zip3_map_column_sums`]: `W` running sums, row by row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn zip3_block<F: Scalar, const W: usize>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    c: &[F],
    cols: usize,
    j: usize,
    f: &impl Fn(F, F, F) -> F,
    sums: &mut [F],
) {
    let mut acc = [F::zero(); W];
    for at in (j..out.len()).step_by(cols) {
        let o: &mut [F; W] = (&mut out[at..at + W]).try_into().expect("W values");
        let a: &[F; W] = a[at..at + W].try_into().expect("W values");
        let b: &[F; W] = b[at..at + W].try_into().expect("W values");
        let c: &[F; W] = c[at..at + W].try_into().expect("W values");
        for l in 0..W {
            o[l] = f(a[l], b[l], c[l]);
            acc[l] += o[l];
        }
    }
    sums[j..j + W].copy_from_slice(&acc);
}

/// `a[i] = f(a[i], b[i])`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn zip_inplace<F: Scalar>(a: &mut [F], b: &[F], f: impl Fn(F, F) -> F + Sync) {
    debug_assert_eq!(a.len(), b.len());
    if !parallel(a.len()) {
        a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b));
    } else {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b)));
    }
}

/// `y[i] += alpha * x[i]`.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn axpy<F: Scalar>(alpha: F, x: &[F], y: &mut [F]) {
    debug_assert_eq!(x.len(), y.len());
    if !parallel(y.len()) {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
    } else {
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x));
    }
}

/// An optimizer's fused update: for each element `i`, `f(&mut param[i], grad[i], state_i)` with
/// `state_i` the `K` values `state[K·i .. K·(i+1)]` (an optimizer's buffers, interleaved).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn update_with_state<F: Scalar, const K: usize>(
    param: &mut [F],
    grad: &[F],
    state: &mut [F],
    f: impl Fn(&mut F, F, &mut [F; K]) + Sync,
) {
    debug_assert_eq!(param.len(), grad.len());
    debug_assert_eq!(state.len(), K * param.len());
    let run = |p: &mut [F], g: &[F], s: &mut [F]| {
        for ((p, &g), s) in p.iter_mut().zip(g).zip(s.chunks_exact_mut(K)) {
            f(p, g, s.try_into().expect("K values"));
        }
    };
    if !parallel(param.len()) {
        run(param, grad, state);
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(state.par_chunks_mut(CHUNK * K))
            .for_each(|((p, g), s)| run(p, g, s));
    }
}

/// `Σ f(a[i])`, summed chunk by chunk in a fixed order.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn sum_map<F: Scalar>(a: &[F], f: impl Fn(F) -> F + Sync) -> F {
    // Eight running sums per chunk, so the compiler can keep them in vector lanes (one running
    // sum is a chain of dependent additions); they are added in a fixed order.
    let chunk_sum = |c: &[F]| {
        let (lanes, rest) = c.as_chunks::<8>();
        let mut acc = [F::zero(); 8];
        for x in lanes {
            for l in 0..8 {
                acc[l] += f(x[l]);
            }
        }
        let tail = rest.iter().fold(F::zero(), |s, &x| s + f(x));
        ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
    };
    if !parallel(a.len()) {
        a.chunks(CHUNK).map(chunk_sum).fold(F::zero(), |s, x| s + x)
    } else {
        let partial: Vec<F> = a.par_chunks(CHUNK).map(chunk_sum).collect();
        partial.into_iter().fold(F::zero(), |s, x| s + x)
    }
}

/// Whether every element is finite. `x − x` is 0 for a finite `x` and NaN otherwise; the
/// comparisons are combined with `&`, which (unlike a sum) the compiler may reorder and spread
/// over vector lanes, so the check runs at memory speed.
#[allow(clippy::eq_op)] // x − x is the point: it is NaN exactly when x is not finite
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn all_finite<F: Scalar>(a: &[F]) -> bool {
    let check = |c: &[F]| c.iter().fold(true, |ok, &x| ok & (x - x == F::zero()));
    if !parallel(a.len()) {
        a.chunks(CHUNK).all(check)
    } else {
        a.par_chunks(CHUNK).all(check)
    }
}

/// The largest `|a[i]|` (0 for an empty slice), or `None` when some element is NaN or infinite:
/// [`all_finite`] and a bound in one pass. Eight running maxima and flags per chunk keep it in
/// vector lanes; a maximum does not depend on the order it is taken in.
#[allow(clippy::eq_op)] // x − x is NaN exactly when x is not finite
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn max_abs<F: Scalar>(a: &[F]) -> Option<F> {
    let chunk = |c: &[F]| {
        let (lanes, rest) = c.as_chunks::<8>();
        let (mut ok, mut max) = ([true; 8], [F::zero(); 8]);
        for x in lanes {
            for l in 0..8 {
                let v = x[l].abs();
                ok[l] &= x[l] - x[l] == F::zero();
                max[l] = if v > max[l] { v } else { max[l] };
            }
        }
        let mut all = ok.iter().all(|&o| o);
        let mut m = max.iter().fold(F::zero(), |m, &v| m.max(v));
        for &x in rest {
            all &= x - x == F::zero();
            m = m.max(x.abs());
        }
        all.then_some(m)
    };
    let most = |m: Option<F>, c: Option<F>| Some(m?.max(c?));
    if !parallel(a.len()) {
        a.chunks(CHUNK).map(chunk).fold(Some(F::zero()), most)
    } else {
        a.par_chunks(CHUNK)
            .map(chunk)
            .reduce(|| Some(F::zero()), most)
    }
}

/// Applies `f` to each row (of length `cols`) of a row-major matrix stored in `a`.
pub fn for_each_row<F: Scalar>(a: &mut [F], cols: usize, f: impl Fn(&mut [F]) + Sync) {
    if cols == 0 {
        return;
    }
    if !parallel(a.len()) {
        a.chunks_mut(cols).for_each(f);
    } else {
        let rows_per_task = (CHUNK / cols).max(1);
        a.par_chunks_mut(rows_per_task * cols)
            .for_each(|block| block.chunks_mut(cols).for_each(&f));
    }
}

/// Like [`for_each_row`], with a second matrix of the same shape read row by row alongside.
pub fn for_each_row_zip<F: Scalar>(
    a: &mut [F],
    b: &[F],
    cols: usize,
    f: impl Fn(&mut [F], &[F]) + Sync,
) {
    debug_assert_eq!(a.len(), b.len());
    if cols == 0 {
        return;
    }
    if !parallel(a.len()) {
        a.chunks_mut(cols)
            .zip(b.chunks(cols))
            .for_each(|(a, b)| f(a, b));
    } else {
        let step = (CHUNK / cols).max(1) * cols;
        a.par_chunks_mut(step)
            .zip(b.par_chunks(step))
            .for_each(|(a, b)| {
                a.chunks_mut(cols)
                    .zip(b.chunks(cols))
                    .for_each(|(a, b)| f(a, b))
            });
    }
}

/// Column sums of a row-major `(rows, cols)` matrix, times `scale`, written to `out` (length
/// `cols`). Each column is summed in row order, so the result does not depend on threads.
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn column_sums<F: Scalar>(a: &[F], cols: usize, scale: F, out: &mut [F]) {
    debug_assert_eq!(out.len(), cols);
    out.fill(F::zero());
    if cols == 0 {
        return;
    }
    let rows = a.len() / cols;
    if !parallel(a.len()) || cols < 64 {
        for row in a.chunks(cols) {
            // Blocks of 8 columns as arrays, so that a short row is still vector code.
            let ((o8, o1), (r8, r1)) = (out.as_chunks_mut::<8>(), row.as_chunks::<8>());
            for (o, r) in o8.iter_mut().zip(r8) {
                for l in 0..8 {
                    o[l] += r[l];
                }
            }
            o1.iter_mut().zip(r1).for_each(|(o, &x)| *o += x);
        }
        out.iter_mut().for_each(|o| *o *= scale);
    } else {
        // Split the columns into blocks; each block walks every row.
        const BLOCK: usize = 64;
        out.par_chunks_mut(BLOCK).enumerate().for_each(|(bi, o)| {
            let c0 = bi * BLOCK;
            for r in 0..rows {
                let row = &a[r * cols + c0..r * cols + c0 + o.len()];
                o.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
            }
            o.iter_mut().for_each(|o| *o *= scale);
        });
    }
}

/// Fills each row (of length `row.len()`) of `a` with `row`.
pub fn broadcast_rows<F: Scalar>(a: &mut [F], row: &[F]) {
    if row.is_empty() {
        return;
    }
    a.chunks_mut(row.len()).for_each(|r| r.copy_from_slice(row));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f64 / 997.0 - 0.4)
            .collect()
    }

    #[test]
    fn parallel_and_serial_paths_agree() {
        for n in [
            0,
            1,
            100,
            PAR_THRESHOLD - 1,
            PAR_THRESHOLD,
            3 * PAR_THRESHOLD + 17,
        ] {
            let a = data(n);
            let mut out = vec![0.0; n];
            map(&mut out, &a, |x| x * 2.0);
            assert!(out.iter().zip(&a).all(|(o, x)| *o == x * 2.0));
            let s = sum_map(&a, |x| x);
            let serial: f64 = a.iter().sum();
            assert!((s - serial).abs() <= 1e-9 * (1.0 + serial.abs()), "n={n}");
        }
    }

    #[test]
    fn column_sums_match_naive() {
        for (rows, cols) in [(3, 5), (700, 100), (1, 1), (5000, 70)] {
            let a = data(rows * cols);
            let mut out = vec![0.0; cols];
            column_sums(&a, cols, 0.5, &mut out);
            for (c, got) in out.iter().enumerate() {
                let want: f64 = (0..rows).map(|r| a[r * cols + c]).sum::<f64>() * 0.5;
                assert!((got - want).abs() < 1e-9, "({rows},{cols}) col {c}");
            }
        }
    }

    #[test]
    fn reductions_do_not_depend_on_thread_count() {
        let a = data(5 * PAR_THRESHOLD + 3);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut cols = vec![0.0; 100];
                column_sums(&a[..a.len() / 100 * 100], 100, 1.0, &mut cols);
                (sum_map(&a, |x| x * x), cols)
            })
        };
        let (s1, c1) = run(1);
        let (s2, c2) = run(2);
        assert_eq!(s1.to_bits(), s2.to_bits());
        assert_eq!(c1, c2);
    }

    /// The fused map-and-column-sums gives bitwise what the two kernels give, for column counts
    /// around its blocks of 8 and 32 and on both sides of the size where it splits.
    #[test]
    fn fused_column_sums_match_the_two_passes() {
        let f = |z: f64, y: f64, g: f64| if z > 0.1 { g * y } else { -g };
        for cols in [1, 3, 7, 8, 9, 31, 32, 33, 40, 70] {
            for rows in [1, 5, 64, PAR_THRESHOLD / cols + 3] {
                let n = rows * cols;
                let (a, b, c) = (data(n), data(n + 1), data(n + 2));
                let (b, c) = (&b[1..], &c[2..]);
                let (mut out1, mut out2) = (vec![0.0; n], vec![0.0; n]);
                let (mut s1, mut s2) = (vec![f64::NAN; cols], vec![0.0; cols]);
                zip3_map_column_sums(&mut out1, &a, b, c, cols, f, 0.25, &mut s1);
                zip3_map(&mut out2, &a, b, c, f);
                column_sums(&out2, cols, 0.25, &mut s2);
                assert_eq!(out1, out2, "{rows}x{cols}");
                assert_eq!(s1, s2, "{rows}x{cols}");
            }
        }
    }

    #[test]
    fn rows_and_nonfinite() {
        let mut a = data(12);
        for_each_row(&mut a, 4, |r| r.fill(r[0]));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[5], a[4]);
        assert!(all_finite(&a));
        a[7] = f64::NAN;
        assert!(!all_finite(&a));
    }

    #[test]
    fn max_abs_finds_the_largest_magnitude_or_a_non_finite_value() {
        assert_eq!(max_abs::<f32>(&[]), Some(0.0));
        // Lengths around the eight lanes and around the parallel threshold; the largest value at
        // the start, in a lane, in the tail.
        for n in [1, 7, 8, 9, 17, 1000, PAR_THRESHOLD + 5] {
            for at in [0, n / 2, n - 1] {
                let mut a: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
                a[at] = -1e3;
                assert_eq!(max_abs(&a), Some(1e3), "n {n}, at {at}");
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut b = a.clone();
                    b[at] = bad;
                    assert_eq!(max_abs(&b), None, "n {n}, at {at}, {bad}");
                    b[n - 1 - at] = bad;
                    assert_eq!(max_abs(&b), None, "n {n}, at {at}, {bad}");
                }
            }
        }
        assert_eq!(max_abs(&[-0.0f64, 0.0]), Some(0.0));
        assert_eq!(max_abs(&[f64::MAX, -f64::MIN_POSITIVE]), Some(f64::MAX));
    }
}
