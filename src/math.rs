//! Elementary functions in single precision written to vectorise: no branches, no table lookups
//! and no calls, only arithmetic, bit moves and selects, so that a kernel loop calling them
//! compiles to SIMD code (in the AVX2 clones of [`kernels`](crate::kernels) 8 lanes at a time).
//! A call to the C library's `expf` or `tanhf` per element keeps such a loop scalar.
//!
//! Each is within a few units in the last place of the exact value (the tests measure the
//! largest error against `f64` over a dense sweep); `NaN` gives `NaN`.
//!
//! Double precision keeps the C library's functions: it is what gradient checks use, where
//! exactness matters more than speed.

use crate::Scalar;

/// The ReLU: `x` where `x > 0`, else `+0` (NaN and `−0` included). One rule for the activation
/// and for the small products that apply it as they write.
#[inline(always)]
pub(crate) fn relu<F: Scalar>(x: F) -> F {
    if x > F::zero() { x } else { F::zero() }
}

/// `v[j] ← exp(v[j] − max)` with crank's vectorising `exp`, returning `sum` plus the new values,
/// added one by one in order. Two loops, so that the first, with no running sum to keep in
/// order, vectorises. The softmax activation and the softmax cross-entropy loss share it, so
/// the two compute the same exponentials and sums.
#[inline]
pub(crate) fn exp_shifted<F: Scalar>(v: &mut [F], max: F, sum: F) -> F {
    for x in v.iter_mut() {
        *x = (*x - max).exp_vec();
    }
    v.iter().fold(sum, |s, &e| s + e)
}

/// `1.5 · 2²³`: adding it to a float of magnitude below 2²² rounds that float to an integer
/// (ties to even) and leaves the integer in the low bits of the mantissa.
const ROUND: f32 = 12_582_912.0;

/// `ln 2` in two parts: the first exact in 9 significant bits (`0x3f31_8000`), so that `n · LN2_HI`
/// is exact for every integer `|n| ≤ 2⁸`.
const LN2_HI: f32 = 0.693_359_4;
/// `ln 2 − LN2_HI`.
const LN2_LO: f32 = -2.121_944_4e-4;

/// `eˣ` for `f32`.
///
/// `x = n·ln 2 + r` with `n` an integer and `|r| ≤ ln 2 / 2`; `eʳ` is its Taylor polynomial of
/// degree 7 (the first omitted term is below 2⁻²⁶ of the result), and `2ⁿ` is built in the
/// exponent bits. `ln 2` is split in two parts (the first exact in few bits), so that `r`
/// carries no rounding error from `n·ln 2`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // Clamped so that `n` stays within [-150, 129]; beyond that the result is 0 or ∞ anyway.
    // NaN compares false both ways and passes through.
    let x_in = x;
    let x = if x < -104.0 { -104.0 } else { x };
    let x = if x > 89.0 { 89.0 } else { x };
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n from the mantissa bits of t; 2ⁿ as 2^(n/2) · 2^(n − n/2), so that each factor's
    // exponent is in range even where 2ⁿ alone is not (n = 128, or n < −126).
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n_int >> 1;
    let scale1 = f32::from_bits(((half + 127) as u32) << 23);
    let scale2 = f32::from_bits(((n_int - half + 127) as u32) << 23);
    let y = p * scale1 * scale2;
    if x_in.is_nan() { x_in } else { y }
}

/// `tanh x` for `f32`.
///
/// Below |x| = 0.5 its Taylor series to x¹⁵ (the first omitted term is below 2⁻²⁶ of the
/// result); above, `1 − 2 / (e^{2|x|} + 1)` with the sign of `x`, where the subtraction loses
/// less than a bit. Both are computed and one is selected.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let series = x
        * (1.0
            + z * (-1.0 / 3.0
                + z * (2.0 / 15.0
                    + z * (-17.0 / 315.0
                        + z * (62.0 / 2835.0
                            + z * (-1382.0 / 155_925.0
                                + z * (21_844.0 / 6_081_075.0
                                    + z * (-929_569.0 / 638_512_875.0))))))));
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let large = f32::copysign(large, x);
    if a < 0.5 { series } else { large }
}

/// `erf x` for `f32`, within 1.5 units in the last place of the exact value.
///
/// Below |x| = 1, `x + x·q(x²)`: the leading `x` is exact, so only the small correction
/// `q ≈ erf(x)/x − 1` (at most 0.13) carries rounding. From 1 on, `1 − e^{−x²}·p(1/|x|)` with
/// the sign of `x`, where `p ≈ erfc(x)·e^{x²}`. Rounding `x²` moves `e^{−x²}` by less than
/// erfc can show in erf's last place, so no extra care is taken there. Beyond about
/// |x| = 3.9, `e^{−x²}·p` is below half a unit of 1 and the result is ±1.
///
/// `q` and `p` are polynomials of degree 6 fitted by least squares in a Chebyshev basis over
/// 4,000 Chebyshev points (numpy, against double-precision `erf` and `erfc`): `q` in `x²` on
/// `[0, 1]`, weighted by `1 / |erf(x)/x|`, and `p` in `1/x` on `[1, 3.95]`, weighted by `e^{−x²}`,
/// the size of its part in the result. The tests measure the result, not the fit.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const Q: [f32; 7] = [
        0.128_379_17,
        -0.376_126_3,
        0.112_836_12,
        -0.026_854_81,
        5.190_053_5e-3,
        -8.024_354e-4,
        7.898_21e-5,
    ];
    const P: [f32; 7] = [
        -1.627_675_7e-3,
        0.577_586_3,
        -0.032_927_87,
        -0.311_840_15,
        0.310_565_17,
        -0.139_776_92,
        0.025_604_717,
    ];
    let a = x.abs();
    let z = x * x;
    let small = a < 1.0;
    // One polynomial evaluation, its variable and coefficients chosen per value: less code
    // than evaluating both, and GELU with it is small enough for the compiler to inline into
    // the kernels' loops (with both, it stayed a call per element, in scalar code).
    let v = if small { z } else { 1.0 / a };
    let c = |k: usize| if small { Q[k] } else { P[k] };
    let poly = c(0) + v * (c(1) + v * (c(2) + v * (c(3) + v * (c(4) + v * (c(5) + v * c(6))))));
    let large = f32::copysign(1.0 - exp(-z) * poly, x);
    if small { x + x * poly } else { large }
}

/// `ln(1 + eˣ)` for `f32`, without overflow: `max(x, 0) + ln(1 + e^{−|x|})`, within 3.5 units in
/// the last place of the exact value (most of it [`exp`]'s error, which passes through where the
/// result is about `eˣ`).
///
/// `u = e^{−|x|}` is in `(0, 1]` (or 0 below `e⁻¹⁰⁴`), so `ln(1 + u)` only needs a logarithm on
/// `[1, 2]`, and [`ln_1p_unit`] gives it.
#[inline(always)]
pub(crate) fn softplus(x: f32) -> f32 {
    let y = x.max(0.0) + ln_1p_unit(exp(-x.abs()));
    if x.is_nan() { x } else { y }
}

/// `ln(1 + u)` for `u` in `[0, 1]`, as `2 atanh s` with `s = u / (2 + u)`: the odd series to
/// `s¹¹`, whose first omitted term is below 2⁻²⁸ of the result while `|s| ≤ 0.172`, that is
/// while `1 + u ≤ √2`. Above, `ln(1 + u) = ln 2 + ln m` with `m = (1 + u) / 2` in `[1/√2, 1]`, and
/// `s = (m − 1) / (m + 1)`; there `w = 1 + u` is rounded, and `((w − 1) − u) / w` corrects for
/// that to first order.
#[inline(always)]
fn ln_1p_unit(u: f32) -> f32 {
    let w = 1.0 + u;
    let high = w > std::f32::consts::SQRT_2;
    let m = 0.5 * w;
    let s = if high {
        (m - 1.0) / (m + 1.0)
    } else {
        u / (2.0 + u)
    };
    let z = s * s;
    let series = 2.0 * s * (1.0 + z * atanh_series(z));
    let high_value = ((LN2_LO + series) + LN2_HI) - ((w - 1.0) - u) / w;
    if high { high_value } else { series }
}

/// `ln x` for `f32`, within one unit in the last place: `x = 2ᵉ · (1 + f)` with `1 + f` in
/// `[1/√2, √2)` (`f` is exact), and `ln x = e · ln 2 + ln(1 + f)`. `ln(1 + f) = 2 atanh s` with
/// `s = f / (2 + f)`, `|s| ≤ 0.172`, is `2s + s·R` for the series `R = 2s²/3 + 2s⁴/5 + … +
/// 2s¹⁰/11` (the first term left out, `2s¹³/13`, is below 2⁻³⁴ of the result), written as
/// `f − (f²/2 − s (f²/2 + R))`: the exact `f` plus a small correction, so that near `x = 1` the
/// result keeps its precision (fdlibm's `logf` does the same). A subnormal `x` is scaled by 2²³
/// first. `ln 0 = −∞`, `ln ∞ = ∞`, and a negative `x` or NaN gives NaN.
#[inline(always)]
pub(crate) fn ln(x: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let subnormal = x < f32::MIN_POSITIVE;
    let bits = if subnormal { x * TWO_23 } else { x }.to_bits();
    // x = 2ᵉ · m with m in [1, 2), then in [1/√2, √2).
    let e = (bits >> 23) as i32 - 127 - if subnormal { 23 } else { 0 };
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let high = m >= std::f32::consts::SQRT_2;
    let (m, e) = if high { (0.5 * m, e + 1) } else { (m, e) };
    let (e, f) = (e as f32, m - 1.0);
    let s = f / (2.0 + f);
    let z = s * s;
    let r = 2.0 * (z * atanh_series(z));
    let half_f2 = 0.5 * f * f;
    let value = e * LN2_HI - ((half_f2 - (s * (half_f2 + r) + e * LN2_LO)) - f);
    if x > 0.0 && x < f32::INFINITY {
        value
    } else if x == 0.0 {
        f32::NEG_INFINITY
    } else if x == f32::INFINITY {
        x
    } else {
        f32::NAN
    }
}

/// `1/3 + z/5 + z²/7 + z³/9 + z⁴/11`: with `z = s²`, `2 atanh s = 2s (1 + z · this)` to `s¹¹`,
/// the series [`ln_1p_unit`] and [`ln`] sum.
#[inline(always)]
fn atanh_series(z: f32) -> f32 {
    1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Units in the last place between `got` and the exact `want`, measured in `f32` ulps at
    /// `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        (got as f64 - want).abs() / ulp
    }

    /// The largest error of `f` against the exact `reference`, in ulps, and where it is: over
    /// 2,000,001 points spread evenly in `wide` and 200,001 in `near_zero`, ends included.
    fn worst(
        f: fn(f32) -> f32,
        reference: fn(f64) -> f64,
        wide: (f32, f32),
        near_zero: (f32, f32),
    ) -> (f64, f32) {
        let sweep = |(lo, hi): (f32, f32), n: usize| {
            (0..=n).map(move |i| lo + (hi - lo) * (i as f32 / n as f32))
        };
        sweep(wide, 2_000_000)
            .chain(sweep(near_zero, 200_000))
            .map(|x| (ulps(f(x), reference(x as f64)), x))
            .fold((0.0, 0.0), |w, e| if e.0 > w.0 { e } else { w })
    }

    #[test]
    fn exp_is_within_one_and_a_half_ulps() {
        let (e, at) = worst(exp, f64::exp, (-87.3, 88.7), (-1.0, 1.0));
        assert!(e <= 1.5, "exp: {e} ulps at {at}");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(88.8), f32::INFINITY);
        assert!(exp(88.7).is_finite());
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        // Below the normal range the result is subnormal (to within one step of that grid),
        // then 0.
        for x in [-88.0f32, -95.0, -100.0, -103.0] {
            let (got, want) = (exp(x), (x as f64).exp() as f32);
            assert!(
                got > 0.0 && got.to_bits().abs_diff(want.to_bits()) <= 1,
                "at {x}"
            );
        }
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-f32::NAN).is_nan());
    }

    #[test]
    fn tanh_is_within_two_and_a_half_ulps() {
        let (e, at) = worst(tanh, f64::tanh, (-10.0, 10.0), (-0.6, 0.6));
        assert!(e <= 2.5, "tanh: {e} ulps at {at}");
        // Tiny inputs: tanh x = x to within the series' first term.
        for x in [1e-30f32, -1e-20, 1e-8, 3e-4] {
            assert!(ulps(tanh(x), (x as f64).tanh()) <= 1.0, "at {x}");
        }
    }

    fn softplus_exact(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    #[test]
    fn softplus_is_within_three_and_a_half_ulps() {
        let (e, at) = worst(softplus, softplus_exact, (-100.0, 100.0), (-2.0, 2.0));
        assert!(e <= 3.5, "softplus: {e} ulps at {at}");
        // Far below 0, softplus x = eˣ (within exp's error); far above, x.
        for x in [-20.0f32, -50.0, -87.0] {
            assert!(ulps(softplus(x), softplus_exact(x as f64)) <= 3.5, "at {x}");
        }
        // ln(1 + u) for the smallest u: u itself.
        for u in [1e-30f32, 1e-10, 3e-8, 1e-7, 1e-3, 0.5, 1.0] {
            let want = (u as f64).ln_1p();
            assert!(ulps(ln_1p_unit(u), want) <= 1.5, "ln_1p at {u}");
        }
    }

    #[test]
    fn softplus_edges() {
        assert_eq!(softplus(f32::INFINITY), f32::INFINITY);
        assert_eq!(softplus(f32::NEG_INFINITY), 0.0);
        assert_eq!(softplus(1e30), 1e30);
        assert_eq!(softplus(-200.0), 0.0);
        assert_eq!(softplus(0.0), std::f32::consts::LN_2);
        assert!(softplus(f32::NAN).is_nan());
    }

    #[test]
    fn ln_is_within_one_ulp() {
        // Every 509th float from the smallest subnormal to the largest finite, and around 1,
        // where the result is near 0.
        let all = (1..0x7f80_0000u32).step_by(509).map(f32::from_bits);
        let near_one = (0..=20_000).map(|i| 0.99 + 0.02 * (i as f32 / 20_000.0));
        let (e, at) = all
            .chain(near_one)
            .filter(|&x| x != 1.0)
            .map(|x| (ulps(ln(x), (x as f64).ln()), x))
            .fold((0.0, 0.0), |w, e| if e.0 > w.0 { e } else { w });
        assert!(e <= 1.0, "ln: {e} ulps at {at}");
    }

    #[test]
    fn ln_edges() {
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(2.0), std::f32::consts::LN_2);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(-0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-1.0).is_nan());
        assert!(ln(f32::NEG_INFINITY).is_nan());
        assert!(ln(f32::NAN).is_nan());
        let tiny = f32::from_bits(1);
        assert_eq!(ln(tiny), (tiny as f64).ln() as f32);
        assert!(ulps(ln(f32::MAX), (f32::MAX as f64).ln()) <= 1.0);
    }

    #[test]
    fn erf_is_within_one_and_a_half_ulps() {
        let (e, at) = worst(erf, libm::erf, (-6.0, 6.0), (-1.2, 1.2));
        assert!(e <= 1.5, "erf: {e} ulps at {at}");
        for x in [
            1e-30f32,
            -1e-20,
            1e-8,
            3e-4,
            0.999_999_9,
            1.0,
            3.9,
            4.5,
            -20.0,
            1e20,
        ] {
            assert!(ulps(erf(x), libm::erf(x as f64)) <= 1.5, "at {x}");
        }
    }

    #[test]
    fn erf_edges() {
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(-0.0).is_sign_negative());
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf(f32::MAX), 1.0);
        assert!(erf(f32::NAN).is_nan());
        // Odd, exactly.
        for x in [0.1f32, 0.99, 1.0, 1.01, 2.0, 3.5] {
            assert_eq!(erf(-x), -erf(x));
        }
    }

    #[test]
    fn tanh_edges() {
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        // Odd, exactly.
        for x in [0.1f32, 0.49, 0.5, 0.51, 2.0, 7.5] {
            assert_eq!(tanh(-x), -tanh(x));
        }
    }
}
