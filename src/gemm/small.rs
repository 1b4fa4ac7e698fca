//! crank's own loops for small products, those of at most [`SMALL_GEMM`](super::SMALL_GEMM)
//! multiply-adds.
//!
//! `c` is computed in register tiles: each tile keeps its block of `c` as running sums over `k`
//! and writes it once. With AVX2 and FMA (checked at run time) the tiles are explicit vector code,
//! 4 rows × 2 registers or 8 rows × 1 register (8 independent sums, enough to hide the latency
//! of a fused multiply-add; the last rows in pairs, then one), and a last block of fewer columns
//! than a register holds uses masked loads and partial stores. Elsewhere the same tiling runs as
//! plain loops.
//!
//! A layer's product can also apply its ReLU as it writes (`Store`), keeping the value before
//! it where training needs it and noting whether every value was finite: a small network's
//! forward then makes no pass over its activations after the product.
//!
//! Every element of `c` is one sum over `p = 0, 1, …, k − 1` in that order, whatever tile it
//! falls in, so among the products this kernel runs, a row's result does not depend on how many
//! rows the batch has (a larger batch may cross [`SMALL_GEMM`](super::SMALL_GEMM) and go to the
//! backend, which sums differently).

use super::dispatch;
use crate::Scalar;
use crate::math::relu;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::ops::Range;

/// What a small product adds to `alpha · a · b` as it writes `c`.
#[derive(Clone, Copy)]
pub(super) enum Addend<'a, F> {
    /// `beta · c`; `c` is not read when `beta` is 0.
    Scaled(F),
    /// A row of `n` values added to every row of `c` (a layer's bias); `c` is not read.
    Row(&'a [F]),
}

/// What a small product writes of each value `v = alpha · a · b + add`.
pub(super) enum Store<'a, F> {
    /// `c = v`.
    Plain,
    /// `c = ReLU(v)`, which is `v` where `v > 0` and `+0` elsewhere (NaN included), as
    /// [`Activation::Relu`](crate::Activation::Relu) computes it.
    Relu,
    /// `c = ReLU(v)` and `pre = v`, `pre` laid out as `c` (a training forward keeps `z`).
    ReluKeeping(&'a mut [F]),
}

impl<F> Store<'_, F> {
    /// Whether the store applies the ReLU (and so also tracks whether every `v` is finite).
    fn relu(&self) -> bool {
        !matches!(self, Store::Plain)
    }

    /// The same store for one more product (a block of columns), `pre` lent to it.
    fn reborrow(&mut self) -> Store<'_, F> {
        match self {
            Store::Plain => Store::Plain,
            Store::Relu => Store::Relu,
            Store::ReluKeeping(pre) => Store::ReluKeeping(pre),
        }
    }
}

/// The direct loops for small products, `c = alpha · a · b + add` written as `store` says;
/// `None` (nothing written) when the layouts are not ones it handles: `c` contiguous, `a` row-
/// or column-major, and `b` row-major or the transpose of a row-major matrix with at most 1,024
/// rows. Otherwise `Some(finite)`: with a ReLU store, whether every `alpha · a · b + add` was
/// finite (before the ReLU, which maps NaN to 0); with a plain store, `true`.
pub(super) fn small_gemm<F: Scalar>(
    alpha: F,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    add: Addend<'_, F>,
    mut store: Store<'_, F>,
    c: &mut ArrayViewMut2<'_, F>,
) -> Option<bool> {
    let (k, n) = b.dim();
    let c = c.as_slice_mut()?;
    // `a` row-major or column-major (a transposed view): element (i, p) is at `i·rs + p·cs`.
    let (Some(a_mem), &[rs, cs]) = (a.as_slice_memory_order(), a.strides()) else {
        return None;
    };
    let (Ok(rs), Ok(cs)) = (usize::try_from(rs), usize::try_from(cs)) else {
        return None;
    };
    let a = Strided {
        data: a_mem,
        rs,
        cs,
        m: a.nrows(),
        k: a.ncols(),
    };
    if n == 0 {
        return Some(true);
    }
    if let Some(b) = b.as_slice() {
        return Some(run(Product {
            alpha,
            a: &a,
            b,
            n,
            add,
            store,
            c,
            ldc: n,
            c0: 0,
            finite: true,
        }));
    }
    // b is the transpose of a row-major (n, k) matrix: copy it, a block of columns at a time,
    // into a row-major (k, block) buffer on the stack, of the least of three sizes that holds
    // the block (the buffer is zeroed first, a pass over all of it).
    match b.t().as_slice() {
        Some(bt) if k > 0 && k <= STACK => {
            let block = (STACK / k).min(n);
            let store = &mut store;
            Some(match k * block {
                ..=64 => transposed::<F, 64>(alpha, &a, bt, n, block, add, store, c),
                65..=512 => transposed::<F, 512>(alpha, &a, bt, n, block, add, store, c),
                _ => transposed::<F, STACK>(alpha, &a, bt, n, block, add, store, c),
            })
        }
        _ => None,
    }
}

/// The most values of `b` [`small_gemm`] copies at once, and so the largest `k` of a product
/// whose `b` it copies.
const STACK: usize = 1024;

/// The product `c = alpha · a · b + add` whose `b` `(k, n)` is the transpose of the row-major
/// `(n, k)` matrix `bt`, run a block of `block` columns at a time through a copy of them in rows,
/// in a buffer of `LEN ≥ k · block` values on the stack. Returns what [`run`] returns, for all
/// the blocks.
#[allow(clippy::too_many_arguments)]
fn transposed<F: Scalar, const LEN: usize>(
    alpha: F,
    a: &Strided<'_, F>,
    bt: &[F],
    n: usize,
    block: usize,
    add: Addend<'_, F>,
    store: &mut Store<'_, F>,
    c: &mut [F],
) -> bool {
    let k = a.k;
    let mut rows = [F::zero(); LEN];
    let mut finite = true;
    for j0 in (0..n).step_by(block) {
        let width = block.min(n - j0);
        let rows = &mut rows[..k * width];
        dispatch::transpose(&bt[j0 * k..(j0 + width) * k], k, rows);
        finite &= run(Product {
            alpha,
            a,
            b: rows,
            n: width,
            add,
            store: store.reborrow(),
            c: &mut *c,
            ldc: n,
            c0: j0,
            finite: true,
        });
    }
    finite
}

/// A matrix `(m, k)` stored in `data`, element `(i, p)` at `i · rs + p · cs`.
pub struct Strided<'a, F> {
    data: &'a [F],
    rs: usize,
    cs: usize,
    m: usize,
    k: usize,
}

/// The operands of one small product: `c[:, c0..c0 + n] = alpha · a · b + add` (for
/// [`Addend::Row`], its columns `c0..c0 + n`), written as `store` says, for a row-major `b`
/// `(k, n)` and a row-major `c` with `ldc` columns.
pub struct Product<'a, 'c, F> {
    alpha: F,
    a: &'a Strided<'a, F>,
    b: &'a [F],
    n: usize,
    add: Addend<'a, F>,
    store: Store<'c, F>,
    c: &'c mut [F],
    ldc: usize,
    c0: usize,
    /// Set to `false` by a ReLU store that wrote a value of `c` from a non-finite `v`.
    finite: bool,
}

impl<F> Product<'_, '_, F> {
    /// Whether every element the product reads or writes is inside its slices (`m`, `k` and `n`
    /// at least 1).
    fn in_bounds(&self) -> bool {
        let a = self.a;
        let a_last = (a.m - 1) * a.rs + (a.k.max(1) - 1) * a.cs;
        (a.k == 0 || a_last < a.data.len())
            && self.b.len() >= a.k * self.n
            && self.c0 + self.n <= self.ldc
            && (a.m - 1) * self.ldc + self.c0 + self.n <= self.c.len()
            && match self.add {
                Addend::Scaled(_) => true,
                Addend::Row(row) => self.c0 + self.n <= row.len(),
            }
            && match &self.store {
                Store::ReluKeeping(pre) => pre.len() == self.c.len(),
                _ => true,
            }
    }
}

/// The vector kernel of one element type, implemented for `f32` and `f64`. Generic code
/// reaches it through `dispatch::vector_product` and `dispatch::transpose`.
pub trait SmallKernel: Sized {
    /// Runs the product with vector code and returns `true`, or returns `false` (nothing
    /// written) when the processor lacks the instructions.
    fn vector_product(p: &mut Product<'_, '_, Self>) -> bool;

    /// `rows[p · w + j] = cols[j · k + p]`: the `w` rows of `k` values in `cols` as `k` rows of
    /// `w` in `rows` (`w = rows.len() / k`), in register tiles where the vector kernel runs
    /// (AVX2 and FMA).
    fn transpose(cols: &[Self], k: usize, rows: &mut [Self]);
}

/// [`SmallKernel::transpose`] one value at a time, for the columns `js` of `rows` (`width`
/// of them) and their rows `ps`: the edges the register tiles leave, or the whole copy.
fn transpose_part<F: Copy>(
    cols: &[F],
    k: usize,
    rows: &mut [F],
    width: usize,
    js: Range<usize>,
    ps: Range<usize>,
) {
    for j in js {
        for p in ps.clone() {
            rows[p * width + j] = cols[j * k + p];
        }
    }
}

macro_rules! small_kernel {
    ($t:ty, $lanes:ty) => {
        impl SmallKernel for $t {
            #[inline]
            fn vector_product(p: &mut Product<'_, '_, Self>) -> bool {
                #[cfg(target_arch = "x86_64")]
                if avx::available() {
                    // SAFETY: the processor has AVX2 and FMA, and every index is in bounds
                    // (checked by `run` before any kernel runs).
                    unsafe { avx::product::<$lanes>(p) };
                    return true;
                }
                let _ = p;
                false
            }

            #[inline]
            fn transpose(cols: &[Self], k: usize, rows: &mut [Self]) {
                if k == 0 {
                    return;
                }
                let width = rows.len() / k;
                // The columns and rows the register tiles cover: none without AVX.
                let (mut wide, mut deep) = (0, 0);
                #[cfg(target_arch = "x86_64")]
                if avx::available() {
                    assert!(cols.len() >= width * k, "transpose operands out of bounds");
                    // SAFETY: the processor has AVX, and `cols` holds `width` rows of `k`.
                    (wide, deep) = unsafe { avx::transpose::<$lanes>(cols, k, rows) };
                }
                transpose_part(cols, k, rows, width, 0..wide, deep..k);
                transpose_part(cols, k, rows, width, wide..width, 0..k);
            }
        }
    };
}
small_kernel!(f32, std::arch::x86_64::__m256);
small_kernel!(f64, std::arch::x86_64::__m256d);

/// Runs one product on the vector kernel when there is one, on plain loops otherwise. Returns
/// `p.finite` after it (see [`small_gemm`]).
fn run<F: Scalar>(mut p: Product<'_, '_, F>) -> bool {
    if p.a.m == 0 || p.n == 0 {
        return true;
    }
    assert!(p.in_bounds(), "small product operands out of bounds");
    if portable_only() || !dispatch::vector_product(&mut p) {
        tiles(&mut p);
    }
    p.finite
}

#[cfg(test)]
thread_local! {
    /// Set by tests to run the portable kernel where the vector one would run.
    static PORTABLE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a test asked this thread for the portable kernel; always `false` outside tests.
#[inline(always)]
fn portable_only() -> bool {
    #[cfg(test)]
    return PORTABLE_ONLY.get();
    #[cfg(not(test))]
    false
}

/// The portable kernel: tiles of 4 rows (then single rows) by 16, 8, 4 and 1 columns.
///
/// Not inlined: where the vector kernel runs this is never called, and inlined into [`run`] its
/// tiles gave that function a stack frame of 712 to 968 bytes to set up on every product.
#[inline(never)]
fn tiles<F: Scalar>(p: &mut Product<'_, '_, F>) {
    let (m, n) = (p.a.m, p.n);
    let mut i = 0;
    while i < m {
        let rows = if m - i >= 4 { 4 } else { 1 };
        let mut j = 0;
        while j < n {
            let w = match n - j {
                16.. => 16,
                8.. => 8,
                4.. => 4,
                _ => 1,
            };
            match (rows, w) {
                (4, 16) => tile::<F, 4, 16>(p, i, j),
                (4, 8) => tile::<F, 4, 8>(p, i, j),
                (4, 4) => tile::<F, 4, 4>(p, i, j),
                (4, _) => tile::<F, 4, 1>(p, i, j),
                (_, 16) => tile::<F, 1, 16>(p, i, j),
                (_, 8) => tile::<F, 1, 8>(p, i, j),
                (_, 4) => tile::<F, 1, 4>(p, i, j),
                _ => tile::<F, 1, 1>(p, i, j),
            }
            j += w;
        }
        i += rows;
    }
}

/// Rows `i..i + R`, columns `j..j + W` of the portable kernel.
#[inline(always)]
fn tile<F: Scalar, const R: usize, const W: usize>(p: &mut Product<'_, '_, F>, i: usize, j: usize) {
    let (a, n) = (p.a, p.n);
    let mut acc = [[F::zero(); W]; R];
    for q in 0..a.k {
        let b_blk: &[F; W] = p.b[q * n + j..q * n + j + W].try_into().expect("W values");
        for (r, acc) in acc.iter_mut().enumerate() {
            let a_iq = a.data[(i + r) * a.rs + q * a.cs];
            for l in 0..W {
                acc[l] += a_iq * b_blk[l];
            }
        }
    }
    let mut finite = true;
    for (r, acc) in acc.iter().enumerate() {
        let at = (i + r) * p.ldc + p.c0 + j;
        let c_blk: &mut [F; W] = (&mut p.c[at..at + W]).try_into().expect("W values");
        for l in 0..W {
            let value = p.alpha * acc[l];
            let v = match p.add {
                Addend::Scaled(beta) if beta == F::zero() => value,
                Addend::Scaled(beta) => value + beta * c_blk[l],
                Addend::Row(row) => value + row[p.c0 + j + l],
            };
            c_blk[l] = match &mut p.store {
                Store::Plain => v,
                Store::Relu => relu(v),
                Store::ReluKeeping(pre) => {
                    pre[at + l] = v;
                    relu(v)
                }
            };
            finite &= v.is_finite();
        }
    }
    if p.store.relu() {
        p.finite &= finite;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::{Addend, Product, Store};
    use std::arch::x86_64::*;

    /// Whether the processor has AVX2 and FMA (detected once, then a cached load).
    #[inline]
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// One 256-bit register of `S` lanes and the operations the kernel needs. The methods are
    /// `#[inline(always)]` wrappers of intrinsics, called only from AVX2+FMA functions.
    pub trait Lanes: Copy {
        type S: Copy + PartialEq + Default;
        const N: usize;
        const ONE: Self::S;
        unsafe fn zero() -> Self;
        unsafe fn splat(x: Self::S) -> Self;
        unsafe fn load(p: *const Self::S) -> Self;
        unsafe fn store(self, p: *mut Self::S);
        /// The first `n < N` lanes from `p` (zeros in the rest); nothing past them is read.
        unsafe fn load_part(p: *const Self::S, n: usize) -> Self;
        /// Writes the first `n < N` lanes to `p`, and nothing past them: halves, quarters and a
        /// last lane as `n`'s bits say, not a masked store, which AMD's Zen runs as microcode
        /// (with masked stores the dense bench's `gemm/crank/32x8x4/nn` took 214–347 ns there,
        /// and 99–152 ns without).
        unsafe fn store_part(self, p: *mut Self::S, n: usize);
        /// `a · b + c`, rounded once.
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
        unsafe fn mul(a: Self, b: Self) -> Self;
        /// Each lane `x` as `x` where `x > 0`, else `+0` (NaN included): `max(x, 0)` with the
        /// zero as the second operand, which `maxps` returns when either is NaN or both are
        /// zeros.
        unsafe fn relu(self) -> Self;
        /// Whether some lane is NaN.
        unsafe fn any_nan(self) -> bool;
        /// Writes the transpose of the `N × N` tile at `src` (rows `ld_src` apart) to `dst`
        /// (rows `ld_dst` apart).
        unsafe fn transpose_tile(
            src: *const Self::S,
            ld_src: usize,
            dst: *mut Self::S,
            ld_dst: usize,
        );
    }

    impl Lanes for __m256 {
        type S = f32;
        const N: usize = 8;
        const ONE: f32 = 1.0;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            unsafe { _mm256_storeu_ps(p, self) }
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f32, n: usize) -> Self {
            unsafe { _mm256_maskload_ps(p, mask32(n)) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f32, n: usize) {
            // SAFETY: the caller's `n` lanes at `p`; each store writes the next of them.
            unsafe {
                let (mut p, mut v) = (p, _mm256_castps256_ps128(self));
                if n & 4 != 0 {
                    _mm_storeu_ps(p, v);
                    (p, v) = (p.add(4), _mm256_extractf128_ps::<1>(self));
                }
                if n & 2 != 0 {
                    _mm_store_sd(p.cast(), _mm_castps_pd(v));
                    (p, v) = (p.add(2), _mm_movehl_ps(v, v));
                }
                if n & 1 != 0 {
                    _mm_store_ss(p, v);
                }
            }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { _mm256_max_ps(self, _mm256_setzero_ps()) }
        }
        #[inline(always)]
        unsafe fn any_nan(self) -> bool {
            unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(self, self)) != 0 }
        }
        #[inline(always)]
        unsafe fn transpose_tile(src: *const f32, ld_src: usize, dst: *mut f32, ld_dst: usize) {
            // SAFETY: the caller's tile bounds.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ld_src)));
                // Pairs of rows interleaved, then pairs of pairs, then the two 128-bit halves.
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let c = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (i, c) in c.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add(i * ld_dst), c);
                }
            }
        }
    }

    impl Lanes for __m256d {
        type S = f64;
        const N: usize = 4;
        const ONE: f64 = 1.0;
        #[inline(always)]
        unsafe fn zero() -> Self {
            unsafe { _mm256_setzero_pd() }
        }
        #[inline(always)]
        unsafe fn splat(x: f64) -> Self {
            unsafe { _mm256_set1_pd(x) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f64) -> Self {
            unsafe { _mm256_loadu_pd(p) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f64) {
            unsafe { _mm256_storeu_pd(p, self) }
        }
        #[inline(always)]
        unsafe fn load_part(p: *const f64, n: usize) -> Self {
            unsafe { _mm256_maskload_pd(p, mask64(n)) }
        }
        #[inline(always)]
        unsafe fn store_part(self, p: *mut f64, n: usize) {
            // SAFETY: the caller's `n` lanes at `p`; each store writes the next of them.
            unsafe {
                let (mut p, mut v) = (p, _mm256_castpd256_pd128(self));
                if n & 2 != 0 {
                    _mm_storeu_pd(p, v);
                    (p, v) = (p.add(2), _mm256_extractf128_pd::<1>(self));
                }
                if n & 1 != 0 {
                    _mm_store_sd(p, v);
                }
            }
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            unsafe { _mm256_fmadd_pd(a, b, c) }
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            unsafe { _mm256_mul_pd(a, b) }
        }
        #[inline(always)]
        unsafe fn relu(self) -> Self {
            unsafe { _mm256_max_pd(self, _mm256_setzero_pd()) }
        }
        #[inline(always)]
        unsafe fn any_nan(self) -> bool {
            unsafe { _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_UNORD_Q>(self, self)) != 0 }
        }
        #[inline(always)]
        unsafe fn transpose_tile(src: *const f64, ld_src: usize, dst: *mut f64, ld_dst: usize) {
            // SAFETY: the caller's tile bounds.
            unsafe {
                let r: [__m256d; 4] = std::array::from_fn(|i| _mm256_loadu_pd(src.add(i * ld_src)));
                let t0 = _mm256_unpacklo_pd(r[0], r[1]);
                let t1 = _mm256_unpackhi_pd(r[0], r[1]);
                let t2 = _mm256_unpacklo_pd(r[2], r[3]);
                let t3 = _mm256_unpackhi_pd(r[2], r[3]);
                let c = [
                    _mm256_permute2f128_pd::<0x20>(t0, t2),
                    _mm256_permute2f128_pd::<0x20>(t1, t3),
                    _mm256_permute2f128_pd::<0x31>(t0, t2),
                    _mm256_permute2f128_pd::<0x31>(t1, t3),
                ];
                for (i, c) in c.into_iter().enumerate() {
                    _mm256_storeu_pd(dst.add(i * ld_dst), c);
                }
            }
        }
    }

    /// [`SmallKernel::transpose`](super::SmallKernel::transpose) of the first
    /// `wide = ⌊w / N⌋ · N` columns of `rows` and their first `deep = ⌊k / N⌋ · N` rows, in
    /// `N × N` tiles; returns `(wide, deep)` and leaves the edges to the caller.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA, `k > 0`, and `cols` holds `w = rows.len() / k` rows of
    /// `k` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn transpose<V: Lanes>(
        cols: &[V::S],
        k: usize,
        rows: &mut [V::S],
    ) -> (usize, usize) {
        let width = rows.len() / k;
        let (wide, deep) = (width / V::N * V::N, k / V::N * V::N);
        let (src, dst) = (cols.as_ptr(), rows.as_mut_ptr());
        for j in (0..wide).step_by(V::N) {
            for p in (0..deep).step_by(V::N) {
                // SAFETY: rows `j..j + N` of `cols` hold values `p..p + N`, and `rows` holds
                // rows `p..p + N` of `width`, each with columns `j..j + N`.
                unsafe { V::transpose_tile(src.add(j * k + p), k, dst.add(p * width + j), width) };
            }
        }
        (wide, deep)
    }

    /// Lanes `0..n` of 8 × 32 bits selected (sign bit set).
    #[inline(always)]
    unsafe fn mask32(n: usize) -> __m256i {
        unsafe {
            _mm256_cmpgt_epi32(
                _mm256_set1_epi32(n as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            )
        }
    }

    /// Lanes `0..n` of 4 × 64 bits selected.
    #[inline(always)]
    unsafe fn mask64(n: usize) -> __m256i {
        unsafe { _mm256_cmpgt_epi64(_mm256_set1_epi64x(n as i64), _mm256_setr_epi64x(0, 1, 2, 3)) }
    }

    /// The product in vector tiles: panels of 2 registers' width in groups of 4 rows, then
    /// panels of one register and a last partial one in groups of 8 rows, then 4; the last rows
    /// of each panel in pairs, then one.
    ///
    /// # Safety
    /// The processor has AVX2 and FMA, and `p.in_bounds()` holds with `m`, `n` at least 1.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn product<V: Lanes>(p: &mut Product<'_, '_, V::S>) {
        let n = p.n;
        let mut j = 0;
        while n - j >= 2 * V::N {
            unsafe { panel::<V, 2, false>(p, j, 2 * V::N) };
            j += 2 * V::N;
        }
        if n - j >= V::N {
            unsafe { panel::<V, 1, false>(p, j, V::N) };
            j += V::N;
        }
        if j < n {
            unsafe { panel::<V, 1, true>(p, j, n - j) };
        }
    }

    /// Columns `j..j + width` of every row: `NV` registers across (`PART`: one register, of
    /// which `width < N` lanes are used).
    #[inline(always)]
    unsafe fn panel<V: Lanes, const NV: usize, const PART: bool>(
        p: &mut Product<'_, '_, V::S>,
        j: usize,
        width: usize,
    ) {
        let m = p.a.m;
        let mut i = 0;
        if NV == 1 {
            while m - i >= 8 {
                unsafe { tile::<V, 8, NV, PART>(p, i, j, width) };
                i += 8;
            }
        }
        while m - i >= 4 {
            unsafe { tile::<V, 4, NV, PART>(p, i, j, width) };
            i += 4;
        }
        while m - i >= 2 {
            unsafe { tile::<V, 2, NV, PART>(p, i, j, width) };
            i += 2;
        }
        while i < m {
            unsafe { tile::<V, 1, NV, PART>(p, i, j, width) };
            i += 1;
        }
    }

    /// Rows `i..i + R` by `NV` registers of columns from `j`: `R · NV` running sums in registers.
    #[inline(always)]
    unsafe fn tile<V: Lanes, const R: usize, const NV: usize, const PART: bool>(
        p: &mut Product<'_, '_, V::S>,
        i: usize,
        j: usize,
        width: usize,
    ) {
        let a = p.a;
        let (ap, bp) = (a.data.as_ptr(), p.b.as_ptr());
        let cp = p.c.as_mut_ptr();
        // SAFETY (every pointer below): `in_bounds` bounds the largest index of each operand,
        // and tiles stay inside `m` rows and `n` columns.
        unsafe {
            let mut acc = [[V::zero(); NV]; R];
            for q in 0..a.k {
                let b_row = bp.add(q * p.n + j);
                let mut b = [V::zero(); NV];
                for (v, b) in b.iter_mut().enumerate() {
                    *b = if PART {
                        V::load_part(b_row, width)
                    } else {
                        V::load(b_row.add(v * V::N))
                    };
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = V::splat(*ap.add((i + r) * a.rs + q * a.cs));
                    for v in 0..NV {
                        acc[v] = V::fma(x, b[v], acc[v]);
                    }
                }
            }
            let alpha = V::splat(p.alpha);
            // What to add: `beta` times `c`, or the bias row times 1 for every row (rows 0
            // apart). `beta · x + y` rounds once, so with `beta = 1` it is `x + y`.
            let (beta, add, add_ld) = match p.add {
                Addend::Scaled(beta) if beta == V::S::default() => (None, cp.cast_const(), 0),
                Addend::Scaled(beta) => (Some(V::splat(beta)), cp.cast_const(), p.ldc),
                Addend::Row(row) => (Some(V::splat(V::ONE)), row.as_ptr(), 0),
            };
            // A ReLU store: `pre` (if kept) has `c`'s layout; `check` gathers `v · 0` of every
            // `v`, which is NaN once some `v` is infinite or NaN. Unused lanes of a partial
            // register are zeros, and finite.
            let relu = p.store.relu();
            let pre = match &mut p.store {
                Store::ReluKeeping(pre) => Some(pre.as_mut_ptr()),
                _ => None,
            };
            let mut check = V::zero();
            for (r, acc) in acc.iter().enumerate() {
                let at = (i + r) * p.ldc + p.c0 + j;
                let c_row = cp.add(at);
                let add_row = add.add((i + r) * add_ld + p.c0 + j);
                for (v, &acc) in acc.iter().enumerate() {
                    let mut out = V::mul(alpha, acc);
                    if let Some(beta) = beta {
                        let more = if PART {
                            V::load_part(add_row, width)
                        } else {
                            V::load(add_row.add(v * V::N))
                        };
                        out = V::fma(beta, more, out);
                    }
                    if relu {
                        check = V::fma(out, V::zero(), check);
                        if let Some(pre) = pre {
                            let pre_row = pre.add(at + v * V::N);
                            if PART {
                                out.store_part(pre_row, width);
                            } else {
                                out.store(pre_row);
                            }
                        }
                        out = out.relu();
                    }
                    if PART {
                        out.store_part(c_row, width);
                    } else {
                        out.store(c_row.add(v * V::N));
                    }
                }
            }
            if relu && check.any_nan() {
                p.finite = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// `alpha · a · b + beta · c0`, or with `beta` `None` `alpha · a · b + bias` (the bias added
    /// to every row), by the definition, in f64.
    fn reference(
        a: &Array2<f64>,
        b: &Array2<f64>,
        alpha: f64,
        beta: Option<f64>,
        c0: f64,
        bias: &[f64],
    ) -> Array2<f64> {
        let mut c = a.dot(b) * alpha;
        match beta {
            Some(0.0) => {}
            Some(beta) => c += beta * c0,
            None => c += &ndarray::aview1(bias),
        }
        c
    }

    /// Both kernels, the vector one (when the processor has it) and the portable one, on every
    /// `m` and `n` around the tile and register edges, for `F`.
    fn kernels_match<F: Scalar>(tol: f64) {
        for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13] {
            for n in [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 24, 33] {
                for k in [0, 1, 6, 19] {
                    let a =
                        Array2::from_shape_fn((m, k), |(i, p)| ((i * 7 + p * 3) % 11) as f64 - 5.0);
                    let b =
                        Array2::from_shape_fn((k, n), |(p, j)| ((p * 5 + j) % 13) as f64 * 0.25);
                    let (af, bf) = (a.mapv(F::of), b.mapv(F::of));
                    let at = af.t().as_standard_layout().into_owned();
                    let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.75 - 2.0).collect();
                    let bias_f: Vec<F> = bias.iter().map(|&v| F::of(v)).collect();
                    // beta 0, beta 0.5, and the bias row.
                    for (alpha, beta) in [(1.0, Some(0.0)), (-2.0, Some(0.5)), (0.5, None)] {
                        let want = reference(&a, &b, alpha, beta, 1.5, &bias);
                        let add =
                            beta.map_or(Addend::Row(&bias_f), |beta| Addend::Scaled(F::of(beta)));
                        // a row-major, then a column-major (the transposed view of `at`).
                        for (layout, a_view) in [("row", af.view()), ("col", at.t())] {
                            let a_mem = a_view.as_slice_memory_order().unwrap();
                            let s = a_view.strides();
                            let strided = Strided {
                                data: a_mem,
                                rs: s[0] as usize,
                                cs: s[1] as usize,
                                m,
                                k,
                            };
                            // The plain store, the ReLU, and the ReLU keeping `v`.
                            for (vector, kind) in [false, true].into_iter().flat_map(|v| {
                                ["plain", "relu", "keeping"]
                                    .into_iter()
                                    .map(move |k| (v, k))
                            }) {
                                // NaN in `c` must not leak through when it is not read.
                                let start = match beta {
                                    Some(beta) if beta != 0.0 => F::of(1.5),
                                    _ => F::nan(),
                                };
                                let mut c = vec![start; m * n];
                                let mut pre = vec![F::nan(); m * n];
                                let store = match kind {
                                    "plain" => Store::Plain,
                                    "relu" => Store::Relu,
                                    _ => Store::ReluKeeping(&mut pre),
                                };
                                let mut p = Product {
                                    alpha: F::of(alpha),
                                    a: &strided,
                                    b: bf.as_slice().unwrap(),
                                    n,
                                    add,
                                    store,
                                    c: &mut c,
                                    ldc: n,
                                    c0: 0,
                                    finite: true,
                                };
                                assert!(p.in_bounds());
                                if vector {
                                    if !dispatch::vector_product(&mut p) {
                                        continue; // no vector kernel on this processor
                                    }
                                } else {
                                    tiles(&mut p);
                                }
                                let what = format!(
                                    "{} {m}x{k}x{n} a {layout} vector {vector} {kind} alpha {alpha} beta {beta:?}",
                                    F::NAME
                                );
                                assert!(p.finite, "{what}: every value is finite");
                                for ((i, j), &w) in want.indexed_iter() {
                                    let got = c[i * n + j].as_f64();
                                    let w_c = if kind == "plain" { w } else { w.max(0.0) };
                                    assert!(
                                        (got - w_c).abs() <= tol * (1.0 + w.abs()),
                                        "{what} ({i}, {j}): {got} != {w_c}"
                                    );
                                    if kind == "keeping" {
                                        let got = pre[i * n + j].as_f64();
                                        assert!(
                                            (got - w).abs() <= tol * (1.0 + w.abs()),
                                            "{what} ({i}, {j}): kept {got} != {w}"
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn vector_and_portable_kernels_match_the_definition_f32() {
        kernels_match::<f32>(1e-5);
    }

    #[test]
    fn vector_and_portable_kernels_match_the_definition_f64() {
        kernels_match::<f64>(1e-12);
    }

    /// The copy that turns a transposed `b` into rows, around the tile edges (8 × 8 in `f32`,
    /// 4 × 4 in `f64`), in both element types.
    #[test]
    fn transpose_turns_rows_into_columns() {
        fn check<F: Scalar>() {
            // Nothing to do, and no division by zero, when the rows are empty.
            dispatch::transpose::<F>(&[], 0, &mut []);
            for k in [1, 3, 4, 5, 8, 9, 16, 17] {
                for width in [1, 3, 4, 7, 8, 9, 16, 20] {
                    let cols: Vec<F> = (0..width * k).map(|v| F::of(v as f64)).collect();
                    let mut rows = vec![F::nan(); k * width];
                    dispatch::transpose(&cols, k, &mut rows);
                    for j in 0..width {
                        for p in 0..k {
                            assert_eq!(
                                rows[p * width + j],
                                cols[j * k + p],
                                "{} k {k} width {width} ({p}, {j})",
                                F::NAME
                            );
                        }
                    }
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }

    /// A product into a block of columns of a wider `c` leaves the other columns alone.
    #[test]
    fn writes_only_its_columns() {
        let a = Array2::from_shape_fn((5, 3), |(i, p)| (i + p) as f32);
        let b = Array2::from_shape_fn((3, 7), |(p, j)| (p * j) as f32);
        let strided = Strided {
            data: a.as_slice().unwrap(),
            rs: 3,
            cs: 1,
            m: 5,
            k: 3,
        };
        for vector in [false, true] {
            let mut c = vec![-1.0f32; 5 * 12];
            let mut p = Product {
                alpha: 1.0,
                a: &strided,
                b: b.as_slice().unwrap(),
                n: 7,
                add: Addend::Scaled(0.0),
                store: Store::Plain,
                c: &mut c,
                ldc: 12,
                c0: 2,
                finite: true,
            };
            if vector && !f32::vector_product(&mut p) {
                continue;
            }
            if !vector {
                tiles(&mut p);
            }
            let want = a.dot(&b);
            for i in 0..5 {
                for j in 0..12 {
                    let got = c[i * 12 + j];
                    if (2..9).contains(&j) {
                        assert_eq!(got, want[[i, j - 2]], "vector {vector} ({i}, {j})");
                    } else {
                        assert_eq!(got, -1.0, "vector {vector} ({i}, {j}) was written");
                    }
                }
            }
        }
    }

    /// The ReLU stores, through [`small_gemm`] as a layer calls it (the bias row, `b` row-major
    /// or transposed and copied in blocks of columns), on the vector kernel and the portable
    /// one: `c` is bitwise the plain store's values through [`Activation::Relu`]'s rule, the
    /// kept `pre` bitwise the plain store's, and the finiteness flag finds an infinite or NaN
    /// `v` wherever it is (first element, a partial register's lanes, the last row, a later
    /// block of columns, a sum that overflows), though `c` holds 0 there.
    ///
    /// [`Activation::Relu`]: crate::Activation::Relu
    #[test]
    fn relu_stores_equal_the_plain_store_then_relu_bitwise_and_find_non_finite_values() {
        fn check<F: Scalar>() {
            let relu = |x: F| {
                let (y, mut z) = ([x], [F::zero()]);
                crate::Activation::Relu.forward(&y, &mut z, 1);
                z[0]
            };
            // (m, k, n): tile edges, partial registers, and a `k` whose transposed `b` is
            // copied in several blocks (1,024 values at a time).
            for (m, k, n) in [
                (1, 6, 64),
                (32, 6, 64),
                (13, 7, 9),
                (5, 100, 33),
                (9, 3, 17),
            ] {
                let a = Array2::from_shape_fn((m, k), |(i, p)| {
                    F::of(((i * 7 + p * 3) % 11) as f64 * 0.37 - 1.9)
                });
                let b = Array2::from_shape_fn((k, n), |(p, j)| {
                    F::of(((p * 5 + j) % 13) as f64 * 0.113 - 0.6)
                });
                let bt = b.t().as_standard_layout().into_owned();
                let bias: Vec<F> = (0..n).map(|j| F::of(j as f64 * 0.31 - 2.0)).collect();
                // Where a non-finite value goes: nowhere, into `a` (a whole row of `v`), into
                // the bias (a column), or large values whose sum overflows.
                let spots: Vec<(&str, usize, usize)> = vec![
                    ("none", 0, 0),
                    ("a inf", 0, 0),
                    ("a nan", m - 1, k - 1),
                    ("bias nan", 0, n - 1),
                    ("bias inf", 0, n / 2),
                    ("overflow", m / 2, 0),
                ];
                for (spot, i0, p0) in spots {
                    let (mut a, mut bias) = (a.clone(), bias.clone());
                    match spot {
                        "a inf" => a[[i0, p0]] = F::infinity(),
                        "a nan" => a[[i0, p0]] = F::nan(),
                        "bias nan" => bias[p0] = F::nan(),
                        "bias inf" => bias[p0] = F::neg_infinity(),
                        "overflow" => a.row_mut(i0).fill(F::max_value()),
                        _ => {}
                    }
                    for (layout, b) in [("nn", b.view()), ("nt", bt.t())] {
                        let add = Addend::Row(&bias);
                        // Each kernel against its own plain store: the vector kernel fuses its
                        // multiply-adds, the portable one does not.
                        for vector in [true, false] {
                            let run = |store: Store<'_, F>, c: &mut Array2<F>| {
                                PORTABLE_ONLY.set(!vector);
                                let done = small_gemm(
                                    F::one(),
                                    &a.view(),
                                    &b,
                                    add,
                                    store,
                                    &mut c.view_mut(),
                                );
                                PORTABLE_ONLY.set(false);
                                done
                            };
                            let mut plain = Array2::from_elem((m, n), F::nan());
                            let reported = run(Store::Plain, &mut plain);
                            assert_eq!(reported, Some(true), "the plain store reports nothing");
                            let want_finite = plain.iter().all(|v| v.is_finite());
                            assert_eq!(want_finite, spot == "none", "{spot}: a value not finite");
                            let what =
                                format!("{} {m}x{k}x{n} {layout} {spot} vector {vector}", F::NAME);
                            let mut c = Array2::from_elem((m, n), F::nan());
                            assert_eq!(run(Store::Relu, &mut c), Some(want_finite), "{what}");
                            let mut kept = vec![F::nan(); m * n];
                            let mut c2 = Array2::from_elem((m, n), F::nan());
                            assert_eq!(
                                run(Store::ReluKeeping(&mut kept), &mut c2),
                                Some(want_finite),
                                "{what} keeping"
                            );
                            for ((&v, (&got, &got2)), &pre) in
                                plain.iter().zip(c.iter().zip(&c2)).zip(&kept)
                            {
                                let w = relu(v);
                                assert_eq!(
                                    got.as_f64().to_bits(),
                                    w.as_f64().to_bits(),
                                    "{what}: {v}"
                                );
                                assert_eq!(got2.as_f64().to_bits(), w.as_f64().to_bits(), "{what}");
                                assert_eq!(pre.as_f64().to_bits(), v.as_f64().to_bits(), "{what}");
                            }
                        }
                    }
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }
}
