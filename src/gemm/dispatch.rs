//! From generic code to the kernels of its element type.
//!
//! The kernels ([`Backend`], [`SmallKernel`]) are implemented for `f32` and `f64`.
//! [`Scalar`], sealed to those two types, does not name them, so that the element type sits
//! below the products in the crate's layers; these functions take any `F: Scalar` and call the
//! implementation of the type `F` is. After monomorphisation the type test is a constant, so a
//! call costs what a direct call does.

use super::backend::Backend;
use super::small::{Product, SmallKernel};
use crate::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::any::TypeId;

fn is<F: 'static, T: 'static>() -> bool {
    TypeId::of::<F>() == TypeId::of::<T>()
}

/// `c = alpha · a · b + beta · c` on the calling thread, by the backend of `F`.
#[inline]
pub(crate) fn product<F: Scalar>(
    alpha: F,
    a: &ArrayView2<'_, F>,
    b: &ArrayView2<'_, F>,
    beta: F,
    c: &mut ArrayViewMut2<'_, F>,
) {
    macro_rules! on {
        ($t:ty) => {
            if is::<F, $t>() {
                // SAFETY: `F` is `$t`, so each reference is to a value of exactly the type it
                // is cast to.
                let (a, b, c) = unsafe {
                    (
                        &*(a as *const ArrayView2<'_, F>).cast::<ArrayView2<'_, $t>>(),
                        &*(b as *const ArrayView2<'_, F>).cast::<ArrayView2<'_, $t>>(),
                        &mut *(c as *mut ArrayViewMut2<'_, F>).cast::<ArrayViewMut2<'_, $t>>(),
                    )
                };
                // Exact: an `f32` widened to `f64` and narrowed back is itself.
                let (alpha, beta) = (alpha.as_f64() as $t, beta.as_f64() as $t);
                return <$t as Backend>::product(alpha, a, b, beta, c);
            }
        };
    }
    on!(f32);
    on!(f64);
    unreachable!("Scalar is implemented for f32 and f64 only")
}

/// Runs a small product on the vector kernel of `F` and returns `true`, or returns `false`
/// (nothing written) when the processor lacks the instructions.
#[inline]
pub(crate) fn vector_product<F: Scalar>(p: &mut Product<'_, '_, F>) -> bool {
    macro_rules! on {
        ($t:ty) => {
            if is::<F, $t>() {
                // SAFETY: `F` is `$t`: the product is of exactly the type it is cast to.
                let p =
                    unsafe { &mut *(p as *mut Product<'_, '_, F>).cast::<Product<'_, '_, $t>>() };
                return <$t as SmallKernel>::vector_product(p);
            }
        };
    }
    on!(f32);
    on!(f64);
    unreachable!("Scalar is implemented for f32 and f64 only")
}

/// `rows[p · w + j] = cols[j · k + p]` (see [`SmallKernel::transpose`]), by the kernel of `F`.
#[inline]
pub(crate) fn transpose<F: Scalar>(cols: &[F], k: usize, rows: &mut [F]) {
    if is::<F, f32>() {
        f32::transpose(
            bytemuck::cast_slice(cols),
            k,
            bytemuck::cast_slice_mut(rows),
        );
    } else {
        f64::transpose(
            bytemuck::cast_slice(cols),
            k,
            bytemuck::cast_slice_mut(rows),
        );
    }
}
