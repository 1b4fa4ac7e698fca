//! The floating-point types crank computes in: `f32` and `f64`.

use ndarray::NdFloat;
use serde::{Serialize, de::DeserializeOwned};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type: implemented for `f32` (the default) and `f64` (what gradient
/// checks use), and sealed so that no other type can be plugged in.
pub trait Scalar:
    NdFloat
    + num_traits::FromPrimitive
    + Default
    + Serialize
    + DeserializeOwned
    + sealed::Sealed
    + std::iter::Sum
    + bytemuck::Pod
{
    /// `"f32"` or `"f64"`.
    const NAME: &'static str;

    /// Converts an `f64`, rounding to the nearest value of `Self`.
    fn of(x: f64) -> Self;

    /// Widens (or keeps) `self` as an `f64`.
    fn as_f64(self) -> f64;

    /// The error function, `erf(x) = 2/√π ∫₀ˣ e^{-t²} dt`, as crank's kernels compute it: for
    /// `f32` a branch-free version that vectorises (within 1.5 units in the last place), for
    /// `f64` libm's.
    fn erf_vec(self) -> Self;

    /// `eˣ` as crank's kernels compute it: for `f32` a branch-free version that vectorises
    /// (within 1.5 units in the last place), for `f64` the C library's.
    fn exp_vec(self) -> Self;

    /// `ln x` as crank's kernels compute it: for `f32` a branch-free version that vectorises
    /// (within one unit in the last place), for `f64` the C library's.
    fn ln_vec(self) -> Self;

    /// `tanh x` as crank's kernels compute it: for `f32` a branch-free version that vectorises
    /// (within 2.5 units in the last place), for `f64` the C library's.
    fn tanh_vec(self) -> Self;

    /// `ln(1 + eˣ)` without overflow, as crank's kernels compute it: for `f32` a branch-free
    /// version that vectorises (within 3.5 units in the last place), for `f64`
    /// `max(x, 0) + ln_1p(e^{−|x|})` with the C library's functions.
    fn softplus_vec(self) -> Self;

    /// A parameter and its gradient as slices of their concrete type, for code with separate
    /// `f32` and `f64` paths (an optimizer's update).
    fn slices<'a>(param: &'a mut [Self], grad: &'a [Self]) -> Slices<'a>;
}

/// A parameter and its gradient, in `f32` or in `f64`: see [`Scalar::slices`].
pub enum Slices<'a> {
    /// `f32` values.
    F32(&'a mut [f32], &'a [f32]),
    /// `f64` values.
    F64(&'a mut [f64], &'a [f64]),
}

impl Scalar for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn erf_vec(self) -> Self {
        crate::math::erf(self)
    }
    #[inline(always)]
    fn exp_vec(self) -> Self {
        crate::math::exp(self)
    }
    #[inline(always)]
    fn ln_vec(self) -> Self {
        crate::math::ln(self)
    }
    #[inline(always)]
    fn tanh_vec(self) -> Self {
        crate::math::tanh(self)
    }
    #[inline(always)]
    fn softplus_vec(self) -> Self {
        crate::math::softplus(self)
    }
    fn slices<'a>(param: &'a mut [Self], grad: &'a [Self]) -> Slices<'a> {
        Slices::F32(param, grad)
    }
}

impl Scalar for f64 {
    const NAME: &'static str = "f64";
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline]
    fn erf_vec(self) -> Self {
        libm::erf(self)
    }
    #[inline]
    fn exp_vec(self) -> Self {
        self.exp()
    }
    #[inline]
    fn ln_vec(self) -> Self {
        self.ln()
    }
    #[inline]
    fn tanh_vec(self) -> Self {
        self.tanh()
    }
    #[inline]
    fn softplus_vec(self) -> Self {
        self.max(0.0) + (-self.abs()).exp().ln_1p()
    }
    fn slices<'a>(param: &'a mut [Self], grad: &'a [Self]) -> Slices<'a> {
        Slices::F64(param, grad)
    }
}
