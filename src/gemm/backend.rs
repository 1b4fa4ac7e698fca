//! The library behind products too large for crank's own small-product loops.
//!
//! The default build calls [faer](https://docs.rs/faer)'s `matmul`, which picks its kernels at
//! run time: AVX-512 or AVX2 with FMA on x86-64 (through the `private-gemm-x86` crate), the
//! `gemm` crate's portable code elsewhere. Its packing space is one buffer per thread, kept
//! from call to call, so after a thread's first product no product allocates. Operands are
//! passed by pointer and strides, so transposed views are read in place.
//!
//! The `openblas` feature sends the same calls to the system OpenBLAS through ndarray's `blas`
//! feature.
//!
//! Every call here runs on the calling thread: crank splits large products over rayon's threads
//! itself (see the parent module).

use ndarray::{ArrayView2, ArrayViewMut2};

/// The element types the backend multiplies: `f32` and `f64`. Generic code reaches it through
/// `dispatch::product`.
pub trait Backend: Sized {
    /// `c = alpha · a · b + beta · c` on the calling thread; `c` is not read when `beta` is 0.
    /// Shapes are the caller's invariant (`a: (m, k)`, `b: (k, n)`, `c: (m, n)`).
    fn product(
        alpha: Self,
        a: &ArrayView2<'_, Self>,
        b: &ArrayView2<'_, Self>,
        beta: Self,
        c: &mut ArrayViewMut2<'_, Self>,
    );
}

macro_rules! backend {
    ($t:ty) => {
        impl Backend for $t {
            #[inline]
            fn product(
                alpha: Self,
                a: &ArrayView2<'_, Self>,
                b: &ArrayView2<'_, Self>,
                beta: Self,
                c: &mut ArrayViewMut2<'_, Self>,
            ) {
                #[cfg(feature = "openblas")]
                {
                    single_threaded_openblas();
                    ndarray::linalg::general_mat_mul(alpha, a, b, beta, c);
                }
                #[cfg(not(feature = "openblas"))]
                faer_product(alpha, a, b, beta, c);
            }
        }
    };
}

backend!(f32);
backend!(f64);

/// Products whose output is longer than this along its contiguous axis, and at most this long
/// across it, are cut into blocks of at most this many along the contiguous axis: faer runs a
/// short, wide output (say 256 × 1024, row-major) markedly slower than the same product in
/// blocks of 512 columns (`cargo bench --bench dense -- gemm`; BENCHMARKS.md).
#[cfg(not(feature = "openblas"))]
const WIDE: usize = 512;

/// One product through faer on the calling thread. faer either overwrites `c` or adds onto it,
/// so another `beta` scales `c` first. A short, wide output is cut into blocks (see [`WIDE`]),
/// and on the portable kernels the sum over `k` into panels (see [`K_PANEL`]); each element is
/// summed the same way in a block as in the whole product, so the result does not depend on
/// the cut (`backend_blocks_equal_the_whole_product_bitwise`).
#[cfg(not(feature = "openblas"))]
#[inline]
fn faer_product<T>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    beta: T,
    c: &mut ArrayViewMut2<'_, T>,
) where
    T: faer::traits::ComplexField + ndarray::LinalgScalar,
{
    use ndarray::s;
    let (m, k) = a.dim();
    let n = b.ncols();
    assert!(
        b.nrows() == k && c.dim() == (m, n),
        "the product's shapes do not match"
    );
    let accum = if beta == T::zero() {
        faer::Accum::Replace
    } else {
        if beta != T::one() {
            c.map_inplace(|x| *x *= beta);
        }
        faer::Accum::Add
    };
    // faer works on the output's contiguous axis as its rows: columns for a row-major `c`.
    let along_columns = c.strides()[1].unsigned_abs() <= c.strides()[0].unsigned_abs();
    let (long, short) = if along_columns { (n, m) } else { (m, n) };
    let block = if long <= WIDE || short > WIDE {
        long
    } else {
        long.div_ceil(long.div_ceil(WIDE))
    };
    // Where faer runs the `gemm` crate's portable kernels, that crate cuts `k` into panels whose
    // length depends on `m` and `n` too, so a block of `c` could be summed in other panels than
    // the whole product and differ in the last bits. There `k` is cut here instead, into equal
    // panels of at most `K_PANEL` (which the crate takes whole), by `k` alone. faer's own x86
    // kernels cut `k` by `k` alone.
    let panel = if k <= K_PANEL || faer_kernels() {
        k
    } else {
        k.div_ceil(k.div_ceil(K_PANEL))
    };
    for start in (0..long).step_by(block.max(1)) {
        let end = (start + block).min(long);
        let (a, b, mut c) = if along_columns {
            (
                a.view(),
                b.slice(s![.., start..end]),
                c.slice_mut(s![.., start..end]),
            )
        } else {
            (
                a.slice(s![start..end, ..]),
                b.view(),
                c.slice_mut(s![start..end, ..]),
            )
        };
        for depth in (0..k.max(1)).step_by(panel.max(1)) {
            let stop = (depth + panel).min(k);
            let accum = if depth == 0 { accum } else { faer::Accum::Add };
            let (a, b) = (a.slice(s![.., depth..stop]), b.slice(s![depth..stop, ..]));
            faer_call(alpha, &a, &b, accum, &mut c);
        }
    }
}

/// The most of `k` one call sums where faer uses the `gemm` crate's portable kernels: at most
/// what that crate sums in one panel whatever the shape.
#[cfg(not(feature = "openblas"))]
const K_PANEL: usize = 512;

/// `c = alpha · a · b`, or `c += alpha · a · b`, through faer on the calling thread.
#[cfg(not(feature = "openblas"))]
#[inline]
fn faer_call<T>(
    alpha: T,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
    accum: faer::Accum,
    c: &mut ArrayViewMut2<'_, T>,
) where
    T: faer::traits::ComplexField + ndarray::LinalgScalar,
{
    use faer::{MatMut, MatRef, Par};
    let (m, k) = a.dim();
    let n = b.ncols();
    debug_assert!(b.nrows() == k && c.dim() == (m, n));
    // SAFETY: each view's pointer, shape and strides are an ndarray view's own (the shapes
    // checked by the caller), so every element faer addresses with them lies in that view's
    // memory; `c` is borrowed mutably and cannot alias `a` or `b`, which are only read.
    // ndarray strides count elements, as faer's do.
    let (a, b, c) = unsafe {
        (
            MatRef::from_raw_parts(a.as_ptr(), m, k, a.strides()[0], a.strides()[1]),
            MatRef::from_raw_parts(b.as_ptr(), k, n, b.strides()[0], b.strides()[1]),
            MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, c.strides()[0], c.strides()[1]),
        )
    };
    faer::linalg::matmul::matmul(c, accum, a, b, alpha, Par::Seq);
}

/// Tells OpenBLAS, once, to run every call on the calling thread: crank's threads are rayon's.
#[cfg(feature = "openblas")]
fn single_threaded_openblas() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: takes a thread count; 1 is always valid.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}

#[cfg(feature = "openblas")]
unsafe extern "C" {
    fn openblas_set_num_threads(n: std::ffi::c_int);
    fn openblas_get_config() -> *const std::ffi::c_char;
}

/// Which GEMM this build of crank uses, and which kernels it runs on this processor.
///
/// Without the `openblas` feature: `"faer"` and the instruction set its kernels use here
/// (`AVX-512`, `AVX2+FMA`, or `portable`). With it: `"OpenBLAS"` followed by OpenBLAS's own
/// configuration string (version, kernel, thread limit), read from the library that is
/// actually linked.
///
/// ```
/// let b = crank::backend();
/// assert!(b.starts_with("faer") || b.starts_with("OpenBLAS"));
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
        format!(
            "faer {} (pure Rust, {} kernels)",
            FAER_VERSION,
            instruction_set()
        )
    }
}

/// Whether products run on faer's own x86 kernels (AVX2+FMA or AVX-512): the default build on
/// a processor that has them.
pub(crate) fn faer_kernels() -> bool {
    #[cfg(feature = "openblas")]
    {
        false
    }
    #[cfg(not(feature = "openblas"))]
    {
        instruction_set() != "portable"
    }
}

/// The faer release crank is built against (its major line: Cargo picks the newest patch).
#[cfg(not(feature = "openblas"))]
const FAER_VERSION: &str = "0.24";

/// The instruction set faer's kernels dispatch to on this processor, checked the way faer
/// checks it.
#[cfg(not(feature = "openblas"))]
fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA";
        }
    }
    "portable"
}
