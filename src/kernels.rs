//! Elementwise and reduction kernels over contiguous slices.
//!
//! Each kernel runs serially below [`PAR_THRESHOLD`] elements and on rayon's current thread pool
//! above it (so `pool.install(|| ...)` chooses the threads). Work is split into chunks of a fixed
//! size, independent of the number of threads, and reductions add their per-chunk partial results
//! in chunk order: every kernel gives bitwise the same answer at any thread count.
//!
//! The loop over a chunk is a function of its own, compiled twice (`multiversion`): for AVX2 and
//! FMA, chosen when the CPU has them, and for the baseline. Each chunk, whether it runs on the
//! calling thread or as one of rayon's tasks, calls that function. A loop written in a closure
//! would not do: a closure does not take on the instruction set of the function it is written
//! in, and one that runs as a rayon task is compiled for the baseline, four lanes wide at most.
//! Rust does not contract `a·b + c` into a fused multiply-add by itself, so both versions give
//! bitwise the same results.

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
    n >= PAR_THRESHOLD && crate::threads::available() > 1
}

/// `out[i] = f(a[i])`.
pub fn map<F: Scalar>(out: &mut [F], a: &[F], f: impl Fn(F) -> F + Sync) {
    debug_assert_eq!(out.len(), a.len());
    if !parallel(out.len()) {
        map_chunk(out, a, &f);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(o, a)| map_chunk(o, a, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn map_chunk<F: Scalar>(out: &mut [F], a: &[F], f: &impl Fn(F) -> F) {
    out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
}

/// `a[i] = f(a[i])`.
pub fn map_inplace<F: Scalar>(a: &mut [F], f: impl Fn(F) -> F + Sync) {
    if !parallel(a.len()) {
        map_inplace_chunk(a, &f);
    } else {
        a.par_chunks_mut(CHUNK)
            .for_each(|a| map_inplace_chunk(a, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn map_inplace_chunk<F: Scalar>(a: &mut [F], f: &impl Fn(F) -> F) {
    a.iter_mut().for_each(|x| *x = f(*x));
}

/// `a[i] = f(a[i])`, returning whether every `a[i]` was finite before: [`all_finite`] and
/// [`map_inplace`] chunk by chunk, so that the map finds each chunk still in cache.
pub fn map_inplace_finite<F: Scalar>(a: &mut [F], f: impl Fn(F) -> F + Sync) -> bool {
    let chunk = |a: &mut [F]| map_inplace_finite_chunk(a, &f);
    if !parallel(a.len()) {
        a.chunks_mut(CHUNK).map(chunk).fold(true, |all, c| all & c)
    } else {
        a.par_chunks_mut(CHUNK)
            .map(chunk)
            .reduce(|| true, |all, c| all & c)
    }
}

/// One chunk of [`map_inplace_finite`]: the scan, then the map, in one call.
#[multiversion(targets("x86_64+avx2+fma"))]
fn map_inplace_finite_chunk<F: Scalar>(a: &mut [F], f: &impl Fn(F) -> F) -> bool {
    let finite = scan::<F, false>(a).is_some();
    a.iter_mut().for_each(|x| *x = f(*x));
    finite
}

/// `out[i] = f(a[i], b[i])`.
pub fn zip_map<F: Scalar>(out: &mut [F], a: &[F], b: &[F], f: impl Fn(F, F) -> F + Sync) {
    debug_assert!(out.len() == a.len() && a.len() == b.len());
    if !parallel(out.len()) {
        zip_map_chunk(out, a, b, &f);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((o, a), b)| zip_map_chunk(o, a, b, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn zip_map_chunk<F: Scalar>(out: &mut [F], a: &[F], b: &[F], f: &impl Fn(F, F) -> F) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = f(x, y);
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
pub fn zip3_map<F: Scalar>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    c: &[F],
    f: impl Fn(F, F, F) -> F + Sync,
) {
    debug_assert!(out.len() == a.len() && a.len() == b.len() && b.len() == c.len());
    if !parallel(out.len()) {
        zip3_chunk(out, a, b, c, &f);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
            .for_each(|((o, a), (b, c))| zip3_chunk(o, a, b, c, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn zip3_chunk<F: Scalar>(o: &mut [F], a: &[F], b: &[F], c: &[F], f: &impl Fn(F, F, F) -> F) {
    // Indexing over slices cut to one length: the compiler drops the bounds checks and
    // vectorises, which it does not for a chain of three zips.
    let n = o.len();
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    for i in 0..n {
        o[i] = f(a[i], b[i], c[i]);
    }
}

/// [`zip3_map`] over a row-major matrix with `cols` columns, and [`column_sums`] of the result
/// times `scale` into `sums` (bitwise the same sums as the two calls).
///
/// Below [`PAR_THRESHOLD`] elements both happen in one pass, in blocks of columns whose sums
/// stay in registers while the block walks down the rows; larger matrices take the two passes
/// over contiguous memory.
#[allow(clippy::too_many_arguments)]
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
    zip3_columns(out, a, b, c, cols, &f, scale, sums);
}

/// The one-pass form of [`zip3_map_column_sums`].
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx2+fma"))]
fn zip3_columns<F: Scalar>(
    out: &mut [F],
    a: &[F],
    b: &[F],
    c: &[F],
    cols: usize,
    f: &impl Fn(F, F, F) -> F,
    scale: F,
    sums: &mut [F],
) {
    let mut j = 0;
    while cols - j >= 32 {
        zip3_block::<F, 32>(out, a, b, c, cols, j, f, sums);
        j += 32;
    }
    while cols - j >= 8 {
        zip3_block::<F, 8>(out, a, b, c, cols, j, f, sums);
        j += 8;
    }
    while j < cols {
        zip3_block::<F, 1>(out, a, b, c, cols, j, f, sums);
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
pub fn zip_inplace<F: Scalar>(a: &mut [F], b: &[F], f: impl Fn(F, F) -> F + Sync) {
    debug_assert_eq!(a.len(), b.len());
    if !parallel(a.len()) {
        zip_inplace_chunk(a, b, &f);
    } else {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| zip_inplace_chunk(a, b, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn zip_inplace_chunk<F: Scalar>(a: &mut [F], b: &[F], f: &impl Fn(F, F) -> F) {
    a.iter_mut().zip(b).for_each(|(a, &b)| *a = f(*a, b));
}

/// `y[i] += alpha * x[i]`.
pub fn axpy<F: Scalar>(alpha: F, x: &[F], y: &mut [F]) {
    zip_inplace(y, x, |y, x| y + alpha * x);
}

/// An optimizer's fused update: for each element `i`, `f(&mut param[i], grad[i], state_i)` with
/// `state_i` the `K` values `state[K·i .. K·(i+1)]` (an optimizer's buffers, interleaved).
pub fn update_with_state<F: Scalar, const K: usize>(
    param: &mut [F],
    grad: &[F],
    state: &mut [F],
    f: impl Fn(&mut F, F, &mut [F; K]) + Sync,
) {
    debug_assert_eq!(param.len(), grad.len());
    debug_assert_eq!(state.len(), K * param.len());
    if !parallel(param.len()) {
        update_chunk(param, grad, state, &f);
    } else {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(state.par_chunks_mut(CHUNK * K))
            .for_each(|((p, g), s)| update_chunk(p, g, s, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn update_chunk<F: Scalar, const K: usize>(
    param: &mut [F],
    grad: &[F],
    state: &mut [F],
    f: &impl Fn(&mut F, F, &mut [F; K]),
) {
    for ((p, &g), s) in param.iter_mut().zip(grad).zip(state.chunks_exact_mut(K)) {
        f(p, g, s.try_into().expect("K values"));
    }
}

/// `Σ f(a[i])`, summed chunk by chunk in a fixed order.
pub fn sum_map<F: Scalar>(a: &[F], f: impl Fn(F) -> F + Sync) -> F {
    let chunk_sum = |c: &[F]| sum_chunk(c, &f);
    if !parallel(a.len()) {
        a.chunks(CHUNK).map(chunk_sum).fold(F::zero(), |s, x| s + x)
    } else {
        let partial: Vec<F> = a.par_chunks(CHUNK).map(chunk_sum).collect();
        partial.into_iter().fold(F::zero(), |s, x| s + x)
    }
}

/// Eight running sums, so the compiler can keep them in vector lanes (one running sum is a
/// chain of dependent additions); they are added in a fixed order.
#[multiversion(targets("x86_64+avx2+fma"))]
fn sum_chunk<F: Scalar>(c: &[F], f: &impl Fn(F) -> F) -> F {
    let (lanes, rest) = c.as_chunks::<8>();
    let mut acc = [F::zero(); 8];
    for x in lanes {
        for l in 0..8 {
            acc[l] += f(x[l]);
        }
    }
    let tail = rest.iter().fold(F::zero(), |s, &x| s + f(x));
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Whether every element is finite: [`max_abs`] without the maximum.
pub fn all_finite<F: Scalar>(a: &[F]) -> bool {
    if !parallel(a.len()) {
        a.chunks(CHUNK).all(finite_chunk)
    } else {
        a.par_chunks(CHUNK).all(finite_chunk)
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn finite_chunk<F: Scalar>(c: &[F]) -> bool {
    scan::<F, false>(c).is_some()
}

/// One pass over a chunk: `None` if some value is not finite, else the largest magnitude (when
/// `MAX`; 0 otherwise). Per lane, sixteen of them, a sum of `x − x`, which is 0 while every
/// value is finite and NaN from the first that is not (`x − x` is NaN for an infinite or NaN
/// `x`, and NaN plus anything is NaN), and a running maximum. The lanes are independent, so the
/// loop is vector code; a maximum does not depend on the order it is taken in.
#[inline(always)]
#[allow(clippy::eq_op)] // x − x is the point: it is NaN exactly when x is not finite
fn scan<F: Scalar, const MAX: bool>(c: &[F]) -> Option<F> {
    let (lanes, rest) = c.as_chunks::<16>();
    let (mut nan, mut max) = ([F::zero(); 16], [F::zero(); 16]);
    for x in lanes.iter().chain([&pad(rest)]) {
        for l in 0..16 {
            nan[l] += x[l] - x[l];
            if MAX {
                let v = x[l].abs();
                max[l] = if v > max[l] { v } else { max[l] };
            }
        }
    }
    let finite = nan.iter().all(|&n| n == F::zero());
    finite.then(|| max.iter().fold(F::zero(), |m, &v| m.max(v)))
}

/// The largest `|a[i]|` (0 for an empty slice), or `None` when some element is NaN or infinite:
/// [`all_finite`] and a bound in one pass. A maximum does not depend on the order it is taken
/// in, so the chunks' maxima combine in any order.
pub fn max_abs<F: Scalar>(a: &[F]) -> Option<F> {
    let most = |m: Option<F>, c: Option<F>| Some(m?.max(c?));
    if !parallel(a.len()) {
        a.chunks(CHUNK)
            .map(max_abs_chunk)
            .fold(Some(F::zero()), most)
    } else {
        a.par_chunks(CHUNK)
            .map(max_abs_chunk)
            .reduce(|| Some(F::zero()), most)
    }
}

/// The last, short, block of a chunk filled out with zeros.
#[inline(always)]
fn pad<F: Scalar>(rest: &[F]) -> [F; 16] {
    let mut block = [F::zero(); 16];
    block[..rest.len()].copy_from_slice(rest);
    block
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn max_abs_chunk<F: Scalar>(c: &[F]) -> Option<F> {
    scan::<F, true>(c)
}

/// Applies `f` to each row (of length `cols`) of a row-major matrix stored in `a`.
pub fn for_each_row<F: Scalar>(a: &mut [F], cols: usize, f: impl Fn(&mut [F]) + Sync) {
    if cols == 0 {
        return;
    }
    if !parallel(a.len()) {
        rows_chunk(a, cols, &f);
    } else {
        let rows_per_task = (CHUNK / cols).max(1);
        a.par_chunks_mut(rows_per_task * cols)
            .for_each(|block| rows_chunk(block, cols, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn rows_chunk<F: Scalar>(a: &mut [F], cols: usize, f: &impl Fn(&mut [F])) {
    a.chunks_mut(cols).for_each(f);
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
        rows_zip_chunk(a, b, cols, &f);
    } else {
        let step = (CHUNK / cols).max(1) * cols;
        a.par_chunks_mut(step)
            .zip(b.par_chunks(step))
            .for_each(|(a, b)| rows_zip_chunk(a, b, cols, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn rows_zip_chunk<F: Scalar>(a: &mut [F], b: &[F], cols: usize, f: &impl Fn(&mut [F], &[F])) {
    a.chunks_mut(cols)
        .zip(b.chunks(cols))
        .for_each(|(a, b)| f(a, b));
}

/// Column sums of a row-major `(rows, cols)` matrix, times `scale`, written to `out` (length
/// `cols`). Each column is summed in row order, so the result does not depend on threads.
pub fn column_sums<F: Scalar>(a: &[F], cols: usize, scale: F, out: &mut [F]) {
    debug_assert_eq!(out.len(), cols);
    out.fill(F::zero());
    if cols == 0 {
        return;
    }
    let rows = a.len() / cols;
    if !parallel(a.len()) || cols < 64 {
        column_sums_rows(a, cols, scale, out);
    } else {
        // Split the columns into blocks; each block walks every row.
        const BLOCK: usize = 64;
        out.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(bi, o)| column_sums_block(a, rows, cols, bi * BLOCK, scale, o));
    }
}

/// [`column_sums`] on one thread, row by row, in blocks of 8 columns.
///
/// The last `cols mod 8` columns are summed 8 lanes at a time as well, in a local block that
/// runs on into the next row (lanes past the row's end are added and dropped); only the last
/// row adds them one at a time. Summed in `out` one value at a time, they became masked loads
/// and stores (the compiler's vector form of a loop this short), and AMD's Zen runs a masked
/// store as microcode and a load from it waits, which the tiny network's four-column output
/// layer paid for on every step.
#[multiversion(targets("x86_64+avx2+fma"))]
fn column_sums_rows<F: Scalar>(a: &[F], cols: usize, scale: F, out: &mut [F]) {
    let (o8, o1) = out.as_chunks_mut::<8>();
    let edge = cols - o1.len();
    let mut tail = [F::zero(); 8];
    for (r, row) in a.chunks(cols).enumerate() {
        for (o, v) in o8.iter_mut().zip(row.as_chunks::<8>().0) {
            for l in 0..8 {
                o[l] += v[l];
            }
        }
        if o1.is_empty() {
            continue;
        }
        let at = r * cols + edge;
        match a.get(at..at + 8) {
            Some(v) => (0..8).for_each(|l| tail[l] += v[l]),
            None => (0..o1.len()).for_each(|l| tail[l] += row[edge + l]),
        }
    }
    o1.copy_from_slice(&tail[..o1.len()]);
    out.iter_mut().for_each(|o| *o *= scale);
}

/// The sums of columns `c0 .. c0 + out.len()` of [`column_sums`], walking every row.
#[multiversion(targets("x86_64+avx2+fma"))]
fn column_sums_block<F: Scalar>(
    a: &[F],
    rows: usize,
    cols: usize,
    c0: usize,
    scale: F,
    out: &mut [F],
) {
    for r in 0..rows {
        let row = &a[r * cols + c0..r * cols + c0 + out.len()];
        out.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
    }
    out.iter_mut().for_each(|o| *o *= scale);
}

/// Elements per task of the kernels over whole rows of `n`: at least one row, every chunk
/// starting a row.
#[inline]
fn row_chunk(n: usize) -> usize {
    (CHUNK / n).max(1) * n
}

/// Adds `row` to each row (of length `row.len()`) of `a`: a layer's bias onto its product
/// ([`add_rows_map`] with no function after the sum).
pub fn add_rows<F: Scalar>(a: &mut [F], row: &[F]) {
    add_rows_map(a, row, |x| x);
}

/// `a[r][j] = f(a[r][j] + row[j])` over the rows (of length `row.len()`) of `a`: a layer's bias
/// and its activation in one pass, each element rounded as the sum and then [`map_inplace`]
/// round it.
pub fn add_rows_map<F: Scalar>(a: &mut [F], row: &[F], f: impl Fn(F) -> F + Sync) {
    let n = row.len();
    if n == 0 || a.is_empty() {
        return;
    }
    let chunk = row_chunk(n);
    if !parallel(a.len()) {
        a.chunks_mut(chunk)
            .for_each(|c| add_rows_map_chunk(c, row, &f));
    } else {
        a.par_chunks_mut(chunk)
            .for_each(|c| add_rows_map_chunk(c, row, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn add_rows_map_chunk<F: Scalar>(a: &mut [F], row: &[F], f: &impl Fn(F) -> F) {
    for r in a.chunks_exact_mut(row.len()) {
        r.iter_mut().zip(row).for_each(|(v, &b)| *v = f(*v + b));
    }
}

/// [`add_rows_map`], returning whether every `a[r][j] + row[j]` was finite (before `f`), as
/// [`map_inplace_finite`] does for a sum already made.
pub fn add_rows_map_finite<F: Scalar>(a: &mut [F], row: &[F], f: impl Fn(F) -> F + Sync) -> bool {
    let n = row.len();
    if n == 0 || a.is_empty() {
        return true;
    }
    let chunk = |c: &mut [F]| add_rows_map_finite_chunk(c, row, &f);
    if !parallel(a.len()) {
        a.chunks_mut(row_chunk(n))
            .map(chunk)
            .fold(true, |all, c| all & c)
    } else {
        a.par_chunks_mut(row_chunk(n))
            .map(chunk)
            .reduce(|| true, |all, c| all & c)
    }
}

/// One chunk of [`add_rows_map_finite`]. Finiteness as [`scan`] tracks it, a sum of `v − v` per
/// lane (NaN from the first value that is not finite), sixteen lanes across each row and the
/// row's last `n mod 16` values in one more.
#[multiversion(targets("x86_64+avx2+fma"))]
#[allow(clippy::eq_op)] // v − v is the point: it is NaN exactly when v is not finite
fn add_rows_map_finite_chunk<F: Scalar>(a: &mut [F], row: &[F], f: &impl Fn(F) -> F) -> bool {
    let (bias16, bias_rest) = row.as_chunks::<16>();
    let mut nan = [F::zero(); 16];
    let mut nan_rest = F::zero();
    for r in a.chunks_exact_mut(row.len()) {
        let (r16, rest) = r.as_chunks_mut::<16>();
        for (x, b) in r16.iter_mut().zip(bias16) {
            for l in 0..16 {
                let v = x[l] + b[l];
                nan[l] += v - v;
                x[l] = f(v);
            }
        }
        for (x, &b) in rest.iter_mut().zip(bias_rest) {
            let v = *x + b;
            nan_rest += v - v;
            *x = f(v);
        }
    }
    nan_rest == F::zero() && nan.iter().all(|&n| n == F::zero())
}

/// `z[r][j] += row[j]` and `y[r][j] = f(z[r][j])` over the rows (of length `row.len()`) of `z`
/// and `y`: training's forward of a layer, which keeps both the pre-activation and the output,
/// in one pass over `z`; each element rounded as [`add_rows`] and then [`map`] round it.
pub fn add_rows_map_into<F: Scalar>(
    z: &mut [F],
    row: &[F],
    y: &mut [F],
    f: impl Fn(F) -> F + Sync,
) {
    debug_assert_eq!(z.len(), y.len());
    let n = row.len();
    if n == 0 || z.is_empty() {
        return;
    }
    let chunk = row_chunk(n);
    if !parallel(z.len()) {
        z.chunks_mut(chunk)
            .zip(y.chunks_mut(chunk))
            .for_each(|(z, y)| add_rows_map_into_chunk(z, row, y, &f));
    } else {
        z.par_chunks_mut(chunk)
            .zip(y.par_chunks_mut(chunk))
            .for_each(|(z, y)| add_rows_map_into_chunk(z, row, y, &f));
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn add_rows_map_into_chunk<F: Scalar>(z: &mut [F], row: &[F], y: &mut [F], f: &impl Fn(F) -> F) {
    let n = row.len();
    for (z, y) in z.chunks_exact_mut(n).zip(y.chunks_exact_mut(n)) {
        // Slices cut to one length, so that the loop drops its bounds checks and vectorises.
        let (z, y) = (&mut z[..n], &mut y[..n]);
        for j in 0..n {
            let v = z[j] + row[j];
            z[j] = v;
            y[j] = f(v);
        }
    }
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
        // Around the blocks of 8 columns, and one row or many.
        let shapes = [
            (3, 5),
            (32, 4),
            (1, 7),
            (2, 12),
            (9, 8),
            (4, 9),
            (1, 1),
            (700, 100),
            (5000, 70),
        ];
        for (rows, cols) in shapes {
            let a = data(rows * cols);
            let mut out = vec![0.0; cols];
            column_sums(&a, cols, 0.5, &mut out);
            for (c, got) in out.iter().enumerate() {
                // Every path adds a column's values in row order.
                let want: f64 = (0..rows).fold(0.0, |s, r| s + a[r * cols + c]) * 0.5;
                assert_eq!(got.to_bits(), want.to_bits(), "({rows},{cols}) col {c}");
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
    fn add_rows_adds_the_row_to_every_row() {
        for (rows, cols) in [
            (1, 1),
            (3, 1),
            (32, 4),
            (7, 64),
            (300, 5),
            (1000, 512),
            (2, 3000),
            (40, 9000),
        ] {
            let row: Vec<f64> = (0..cols).map(|j| j as f64 * 0.5 - 1.0).collect();
            let mut a: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
            let threads = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            threads.install(|| add_rows(&mut a, &row));
            for (i, r) in a.chunks(cols).enumerate() {
                for (j, &v) in r.iter().enumerate() {
                    assert_eq!(
                        v,
                        (i * cols + j) as f64 + row[j],
                        "{rows}x{cols}, ({i}, {j})"
                    );
                }
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
    fn map_inplace_finite_maps_and_finds_any_non_finite_value() {
        // Sizes around the 16-value blocks and the parallel threshold; each bad value at the
        // start, the middle and the end.
        for n in [0, 1, 15, 16, 17, 1000, PAR_THRESHOLD + 5] {
            let a: Vec<f32> = (0..n).map(|i| i as f32 - 500.0).collect();
            let mut b = a.clone();
            assert!(map_inplace_finite(&mut b, |x| x.max(0.0)), "n {n}");
            assert!(b.iter().zip(&a).all(|(b, a)| *b == a.max(0.0)), "n {n}");
            for at in [0, n / 2, n.saturating_sub(1)]
                .into_iter()
                .filter(|_| n > 0)
            {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut b = a.clone();
                    b[at] = bad;
                    // The map may hide the bad value (ReLU of -inf or NaN is 0 here); the
                    // answer still sees it.
                    assert!(!map_inplace_finite(&mut b, |x| x.max(0.0)), "n {n}, {bad}");
                }
            }
        }
    }

    #[test]
    fn max_abs_finds_the_largest_magnitude_or_a_non_finite_value() {
        assert_eq!(max_abs::<f32>(&[]), Some(0.0));
        // Lengths around the sixteen lanes, a chunk and the parallel threshold; the largest value
        // at the start, in a lane, in the tail. `all_finite` is the same scan without the maximum.
        for n in [1, 7, 15, 16, 17, 33, 1000, CHUNK + 3, PAR_THRESHOLD + 5] {
            for at in [0, n / 2, n - 1] {
                let mut a: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
                a[at] = -1e3;
                assert_eq!(max_abs(&a), Some(1e3), "n {n}, at {at}");
                assert!(all_finite(&a), "n {n}, at {at}");
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut b = a.clone();
                    b[at] = bad;
                    assert_eq!(max_abs(&b), None, "n {n}, at {at}, {bad}");
                    assert!(!all_finite(&b), "n {n}, at {at}, {bad}");
                    b[at] = a[at];
                    b[n - 1 - at] = bad;
                    assert_eq!(max_abs(&b), None, "n {n}, at {at}, {bad}");
                    assert!(!all_finite(&b), "n {n}, at {at}, {bad}");
                }
            }
        }
        assert_eq!(max_abs(&[-0.0f64, 0.0]), Some(0.0));
        assert_eq!(max_abs(&[f64::MAX, -f64::MIN_POSITIVE]), Some(f64::MAX));
    }
}
