//! Activation functions as differentiable functions: value and derivative.
//!
//! Every activation but [`Activation::Softmax`] acts elementwise. Softmax acts on each row of a
//! batch, and its backward pass is the vector-Jacobian product `δ = y ⊙ (g − Σⱼ gⱼ yⱼ)` rather
//! than an elementwise derivative.

use crate::{Error, Result, Scalar, kernels};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An activation function, applied to a layer's pre-activation `z` to give its output `y = f(z)`.
///
/// Serialized by name, as in the numpy design's model files (`"ReLU"`, `"Sigmoid"`, ...), with Keras's
/// lower-case names accepted too (`"relu"`, `"linear"`, ...). `LeakyReLU` carries its slope:
/// `{"LeakyReLU": {"alpha": 0.01}}`.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub enum Activation {
    /// `f(x) = x`.
    #[default]
    #[serde(alias = "identity", alias = "Linear", alias = "linear")]
    Identity,
    /// `f(x) = max(x, 0)`; the derivative at 0 is taken as 0.
    #[serde(rename = "ReLU", alias = "relu")]
    Relu,
    /// `f(x) = x` for `x > 0`, `alpha · x` otherwise.
    #[serde(rename = "LeakyReLU", alias = "leaky_relu")]
    LeakyRelu {
        /// The slope for negative inputs (PyTorch's default is 0.01).
        alpha: f64,
    },
    /// `f(x) = 1 / (1 + e^{-x})`.
    #[serde(alias = "sigmoid")]
    Sigmoid,
    /// `f(x) = tanh(x)`.
    #[serde(alias = "tanh")]
    Tanh,
    /// The exact GELU, `f(x) = x · Φ(x)` with `Φ` the standard normal CDF (PyTorch's default).
    #[serde(rename = "GELU", alias = "gelu")]
    Gelu,
    /// `f(x) = ln(1 + eˣ)`, computed without overflow.
    #[serde(alias = "softplus")]
    Softplus,
    /// `f(x)ᵢ = e^{xᵢ} / Σⱼ e^{xⱼ}` over each row, computed with the row maximum subtracted.
    #[serde(alias = "softmax")]
    Softmax,
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::LeakyRelu { alpha } => write!(f, "LeakyReLU({alpha})"),
            other => f.write_str(other.name()),
        }
    }
}

/// `1 / (1 + e^{-x})`, branch-free so that it vectorises. Accurate for every `x`: for large
/// negative `x` the denominator is large (or infinite, giving 0) and loses nothing to
/// cancellation.
#[inline(always)]
pub(crate) fn sigmoid<F: Scalar>(x: F) -> F {
    F::one() / (F::one() + (-x).exp_vec())
}

/// GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
#[inline(always)]
fn gelu<F: Scalar>(x: F) -> F {
    let half = F::of(0.5);
    half * x * (F::one() + (x * F::of(std::f64::consts::FRAC_1_SQRT_2)).erf_vec())
}

/// GELU's chain rule: `g · (Φ(z) + z · φ(z))`, with `φ` the standard normal density. `Φ(z)` is
/// `y / z`, from the forward's `y = z · Φ(z)`, as sigmoid and tanh take theirs from `y`: no
/// second `erf`. Where `z` is too close to 0 for that quotient (`y` could be subnormal), `Φ(z)`
/// is ½ to within rounding, and ½ is used.
#[inline(always)]
fn gelu_back<F: Scalar>(z: F, y: F, g: F) -> F {
    let half = F::of(0.5);
    let inv_sqrt_2pi =
        F::of(0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    let cdf = if z.abs() < F::of(1e-20) { half } else { y / z };
    g * (cdf + z * inv_sqrt_2pi * (-half * z * z).exp_vec())
}

/// Runs `$body` with `$f` (the function) and `$back` (the chain rule: given `z`, `y = f(z)` and
/// the gradient `g` for `y`, the gradient `g · f'(z)` for `z`)
/// bound to closures for the elementwise activation `$act`, or `$softmax` for Softmax. Each arm is
/// compiled separately, so the closures inline into the kernel loops.
macro_rules! elementwise {
    ($act:expr, $F:ty, |$f:ident, $back:ident| $body:expr, softmax => $softmax:expr) => {{
        let one = <$F>::one();
        let zero = <$F>::zero();
        match *$act {
            Activation::Identity => {
                let $f = move |x: $F| x;
                let $back = move |_z: $F, _y: $F, g: $F| g;
                $body
            }
            Activation::Relu => {
                let $f = crate::math::relu::<$F>;
                let $back = move |z: $F, _y: $F, g: $F| if z > zero { g } else { zero };
                $body
            }
            Activation::LeakyRelu { alpha } => {
                let alpha = <$F>::of(alpha);
                let $f = move |x: $F| if x > zero { x } else { alpha * x };
                let $back = move |z: $F, _y: $F, g: $F| if z > zero { g } else { alpha * g };
                $body
            }
            Activation::Sigmoid => {
                let $f = move |x: $F| sigmoid(x);
                let $back = move |_z: $F, y: $F, g: $F| g * (y * (one - y));
                $body
            }
            Activation::Tanh => {
                let $f = move |x: $F| x.tanh_vec();
                let $back = move |_z: $F, y: $F, g: $F| g * (one - y * y);
                $body
            }
            Activation::Gelu => {
                // Each small enough to inline into the kernels' vector loops, which the compiler
                // decides by size: see `math::erf`, and `gelu_back`, which needs no `erf`.
                let $f = gelu::<$F>;
                let $back = gelu_back::<$F>;
                $body
            }
            Activation::Softplus => {
                let $f = move |x: $F| x.softplus_vec();
                let $back = move |z: $F, _y: $F, g: $F| g * sigmoid(z);
                $body
            }
            Activation::Softmax => $softmax,
        }
    }};
}

/// Softmax of one row, in place.
fn softmax_row<F: Scalar>(row: &mut [F]) {
    let max = row.iter().fold(F::neg_infinity(), |m, &x| m.max(x));
    let sum = crate::math::exp_shifted(row, max, F::zero());
    let inv = F::one() / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// Checks that a buffer of `got` values matches `want` values in whole rows of `cols`.
fn check_rows(what: &str, want: usize, got: usize, cols: usize) -> Result<()> {
    if got != want || cols == 0 || !want.is_multiple_of(cols) {
        return Err(Error::shape(
            what,
            format!("{want} values in rows of {cols}"),
            format!("{got} values"),
        ));
    }
    Ok(())
}

impl Activation {
    /// The activation's name as written in model files (`"ReLU"`, `"LeakyReLU"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Identity => "Identity",
            Activation::Relu => "ReLU",
            Activation::LeakyRelu { .. } => "LeakyReLU",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Gelu => "GELU",
            Activation::Softplus => "Softplus",
            Activation::Softmax => "Softmax",
        }
    }

    /// Whether the activation acts on each element alone (all but Softmax).
    pub fn is_elementwise(&self) -> bool {
        !matches!(self, Activation::Softmax)
    }

    /// `f(x)` for an elementwise activation; `None` for Softmax, which needs a whole row.
    pub fn value<F: Scalar>(&self, x: F) -> Option<F> {
        elementwise!(self, F, |f, _back| Some(f(x)), softmax => None)
    }

    /// `f'(x)` for an elementwise activation; `None` for Softmax, whose derivative is a Jacobian
    /// (see [`Activation::backward_batch`]).
    pub fn derivative<F: Scalar>(&self, x: F) -> Option<F> {
        elementwise!(self, F, |f, back| Some(back(x, f(x), <F>::one())), softmax => None)
    }

    /// `y = f(z)` over a row-major batch of rows of `cols` features (`cols` matters only to
    /// Softmax, which normalises each row), with crank's kernels: serial below
    /// [`PAR_THRESHOLD`](crate::kernels::PAR_THRESHOLD) elements, on rayon's pool above.
    /// An error if the lengths differ or are not a whole number of rows.
    pub fn forward_batch<F: Scalar>(&self, z: &[F], y: &mut [F], cols: usize) -> Result<()> {
        check_rows("activation output", z.len(), y.len(), cols)?;
        self.forward(z, y, cols);
        Ok(())
    }

    /// The backward pass over a batch: given `z`, `y = f(z)` and the gradient `g` for `y`,
    /// writes the gradient for `z` into `delta` (see [`Activation::derivative`]; for Softmax the
    /// vector-Jacobian product of each row). An error if the lengths differ or are not a whole
    /// number of rows of `cols`.
    pub fn backward_batch<F: Scalar>(
        &self,
        z: &[F],
        y: &[F],
        g: &[F],
        delta: &mut [F],
        cols: usize,
    ) -> Result<()> {
        check_rows("activation output", z.len(), y.len(), cols)?;
        check_rows("activation gradient", z.len(), g.len(), cols)?;
        check_rows("activation input gradient", z.len(), delta.len(), cols)?;
        self.backward(z, y, g, delta, cols);
        Ok(())
    }

    /// `y = f(z)` over a row-major batch with `cols` features per row.
    pub(crate) fn forward<F: Scalar>(&self, z: &[F], y: &mut [F], cols: usize) {
        elementwise!(self, F, |f, _back| kernels::map(y, z, f), softmax => {
            y.copy_from_slice(z);
            kernels::for_each_row(y, cols, softmax_row);
        })
    }

    /// [`forward`](Self::forward) for training's forward of a layer whose product left its bias
    /// to add ([`gemm::affine_deferred`](crate::gemm::affine_deferred)): with `Some(bias)`,
    /// first adds `bias` to each row of `z` (whose rows are `bias.len() == cols` long), in the
    /// same pass for an elementwise activation.
    pub(crate) fn forward_adding<F: Scalar>(
        &self,
        z: &mut [F],
        bias: Option<&[F]>,
        y: &mut [F],
        cols: usize,
    ) {
        let Some(bias) = bias else {
            return self.forward(z, y, cols);
        };
        elementwise!(self, F, |f, _back| kernels::add_rows_map_into(z, bias, y, f), softmax => {
            kernels::add_rows(z, bias);
            self.forward(z, y, cols);
        })
    }

    /// `y = f(y)` in place over a row-major batch with `cols` features per row; with
    /// `Some(bias)` (`cols` long), `y = f(y + bias)` row by row, in one pass for an elementwise
    /// activation.
    pub(crate) fn forward_inplace<F: Scalar>(&self, y: &mut [F], cols: usize, bias: Option<&[F]>) {
        match bias {
            None if *self == Activation::Identity => {}
            None => elementwise!(self, F, |f, _back| kernels::map_inplace(y, f), softmax => {
                kernels::for_each_row(y, cols, softmax_row)
            }),
            Some(bias) => {
                elementwise!(self, F, |f, _back| kernels::add_rows_map(y, bias, f), softmax => {
                    kernels::add_rows(y, bias);
                    kernels::for_each_row(y, cols, softmax_row)
                })
            }
        }
    }

    /// [`forward_inplace`](Self::forward_inplace), also returning whether every value it was
    /// applied to (`y`, or `y + bias`) was finite: in the same pass, for an elementwise
    /// activation.
    pub(crate) fn forward_inplace_finite<F: Scalar>(
        &self,
        y: &mut [F],
        cols: usize,
        bias: Option<&[F]>,
    ) -> bool {
        match bias {
            None if *self == Activation::Identity => kernels::all_finite(y),
            None => {
                elementwise!(self, F, |f, _back| kernels::map_inplace_finite(y, f), softmax => {
                    let finite = kernels::all_finite(y);
                    kernels::for_each_row(y, cols, softmax_row);
                    finite
                })
            }
            Some(bias) => {
                elementwise!(self, F, |f, _back| kernels::add_rows_map_finite(y, bias, f), softmax => {
                    let finite = kernels::add_rows_map_finite(y, bias, |x| x);
                    kernels::for_each_row(y, cols, softmax_row);
                    finite
                })
            }
        }
    }

    /// The backward pass: given `z`, `y = f(z)` and the gradient `g` of the loss for `y`, writes
    /// the gradient for `z` into `delta`: `g ⊙ f'(z)` for elementwise activations, and the
    /// vector-Jacobian product `y ⊙ (g − Σⱼ gⱼ yⱼ)` (row by row) for Softmax.
    pub(crate) fn backward<F: Scalar>(
        &self,
        z: &[F],
        y: &[F],
        g: &[F],
        delta: &mut [F],
        cols: usize,
    ) {
        elementwise!(self, F, |_f, back| kernels::zip3_map(delta, z, y, g, back), softmax => {
            delta.copy_from_slice(y);
            kernels::for_each_row_zip(delta, g, cols, |d, g| {
                let dot = d.iter().zip(g).fold(F::zero(), |s, (&y, &g)| s + y * g);
                d.iter_mut().zip(g).for_each(|(d, &g)| *d *= g - dot);
            });
        })
    }

    /// [`backward`](Self::backward), also writing the column sums of `delta` times `scale`
    /// into `sums` (a Dense layer's bias gradient); elementwise activations do both in one pass.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_with_sums<F: Scalar>(
        &self,
        z: &[F],
        y: &[F],
        g: &[F],
        delta: &mut [F],
        cols: usize,
        scale: F,
        sums: &mut [F],
    ) {
        elementwise!(self, F, |_f, back| kernels::zip3_map_column_sums(delta, z, y, g, cols, back, scale, sums), softmax => {
            self.backward(z, y, g, delta, cols);
            kernels::column_sums(delta, cols, scale, sums);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Activation; 8] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu { alpha: 0.1 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Softplus,
        Activation::Softmax,
    ];

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-6;
        for act in ALL.iter().filter(|a| a.is_elementwise()) {
            for i in 0..81 {
                let x = -4.0 + 0.1 * i as f64 + 0.0123; // avoids the kink at 0
                let fd = (act.value(x + h).unwrap() - act.value(x - h).unwrap()) / (2.0 * h);
                let d = act.derivative(x).unwrap();
                assert!((fd - d).abs() < 1e-6, "{act} at {x}: {d} vs {fd}");
            }
        }
    }

    /// The public batch forms agree with the per-element ones and refuse mismatched lengths.
    #[test]
    fn batch_forms_match_values_and_check_lengths() {
        let z: Vec<f64> = (0..12).map(|i| i as f64 * 0.4 - 2.3).collect();
        let g: Vec<f64> = (0..12).map(|i| 1.0 - i as f64 * 0.1).collect();
        for act in ALL.iter().filter(|a| a.is_elementwise()) {
            let mut y = vec![0.0; 12];
            let mut delta = vec![0.0; 12];
            act.forward_batch(&z, &mut y, 4).unwrap();
            act.backward_batch(&z, &y, &g, &mut delta, 4).unwrap();
            for i in 0..12 {
                assert_eq!(y[i], act.value(z[i]).unwrap(), "{act}");
                let want = g[i] * act.derivative(z[i]).unwrap();
                assert!(
                    (delta[i] - want).abs() < 1e-12,
                    "{act}: {} vs {want}",
                    delta[i]
                );
            }
            let mut short = vec![0.0; 11];
            assert!(act.forward_batch(&z, &mut short, 4).is_err());
            assert!(act.forward_batch(&z, &mut y, 5).is_err());
            assert!(act.forward_batch(&z, &mut y, 0).is_err());
            assert!(act.backward_batch(&z, &y, &g[..8], &mut delta, 4).is_err());
            let e = act
                .backward_batch(&z, &y, &g, &mut short, 4)
                .unwrap_err()
                .to_string();
            assert!(e.contains("12 values") && e.contains("11 values"), "{e}");
        }
    }

    /// The forms that add a product's bias in the activation's pass give bitwise what adding it
    /// first (`kernels::add_rows`) and then the plain forms give, for every activation, row
    /// lengths with and without a tail of sixteen, serial and split batches, on one thread and
    /// two; and the finite form finds a value that is not finite wherever it is, a bias that is
    /// not, and a sum that overflows.
    #[test]
    fn forms_taking_the_bias_equal_adding_it_first_bitwise() {
        fn same<F: Scalar>(a: &[F], b: &[F]) -> bool {
            let bits = |x: &F| x.as_f64().to_bits();
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| bits(x) == bits(y))
        }
        fn check<F: Scalar>(act: Activation, rows: usize, cols: usize, poison: Option<(usize, F)>) {
            let mut z: Vec<F> = (0..rows * cols)
                .map(|i| F::of(((i * 7919) % 1013) as f64 / 101.3 - 5.0))
                .collect();
            if let Some((at, v)) = poison {
                let n = z.len();
                z[at % n] = v;
            }
            let bias: Vec<F> = (0..cols).map(|j| F::of(j as f64 * 0.37 - 2.0)).collect();
            let mut sum = z.clone();
            kernels::add_rows(&mut sum, &bias);
            let finite = sum.iter().all(|v| v.is_finite());
            let case = format!("{act} {rows}x{cols} {poison:?}");

            let mut want = vec![F::zero(); z.len()];
            act.forward(&sum, &mut want, cols);
            let (mut got_z, mut got_y) = (z.clone(), vec![F::zero(); z.len()]);
            act.forward_adding(&mut got_z, Some(&bias), &mut got_y, cols);
            assert!(
                same(&got_z, &sum) && same(&got_y, &want),
                "forward_adding {case}"
            );

            let mut want = sum.clone();
            act.forward_inplace(&mut want, cols, None);
            let mut got = z.clone();
            act.forward_inplace(&mut got, cols, Some(&bias));
            assert!(same(&got, &want), "forward_inplace {case}");

            let mut got = z.clone();
            let got_finite = act.forward_inplace_finite(&mut got, cols, Some(&bias));
            assert!(same(&got, &want), "forward_inplace_finite {case}");
            assert_eq!(got_finite, finite, "finiteness {case}");
        }
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for act in ALL {
            for (rows, cols) in [
                (1, 1),
                (3, 5),
                (4, 16),
                (9, 17),
                (33, 64),
                (70, 300),
                (130, 520),
            ] {
                check::<f32>(act, rows, cols, None);
                two.install(|| check::<f64>(act, rows, cols, None));
            }
            // Large enough to split into tasks, with the poisoned value past the first.
            for poison in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX] {
                for at in [0, 13, 70 * 300 - 1, 130 * 520 - 3] {
                    check::<f32>(act, 9, 17, Some((at, poison)));
                    two.install(|| check::<f32>(act, 130, 520, Some((at, poison))));
                }
            }
        }
        // A bias that is not finite.
        let mut y = vec![1.0f64; 40];
        let bias = [0.0, 0.0, f64::NAN, 0.0, 0.0];
        assert!(!Activation::Relu.forward_inplace_finite(&mut y, 5, Some(&bias)));
    }

    /// GELU's backward takes `Φ(z)` from `y / z`, and ½ next to 0: right on both sides of that
    /// switch, at 0 itself, and far out, in both precisions.
    #[test]
    fn gelu_derivative_holds_near_zero_and_far_out() {
        let exact = |z: f64| {
            let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
            0.5 * (1.0 + libm::erf(z * std::f64::consts::FRAC_1_SQRT_2)) + z * pdf
        };
        for z in [
            0.0, 1e-30, 1e-20, 2e-20, 1e-19, 1e-8, 0.5, 1.5, 3.0, 8.0, 30.0,
        ] {
            for z in [z, -z] {
                let d = Activation::Gelu.derivative(z).unwrap();
                assert!((d - exact(z)).abs() < 1e-15, "f64 at {z}: {d}");
                let d = Activation::Gelu.derivative(z as f32).unwrap();
                assert!((d as f64 - exact(z)).abs() < 1e-6, "f32 at {z}: {d}");
            }
        }
    }

    #[test]
    fn values_are_stable_at_extremes() {
        for act in ALL.iter().filter(|a| a.is_elementwise()) {
            for x in [-1e4f64, -80.0, 80.0, 1e4] {
                assert!(act.value(x).unwrap().is_finite(), "{act}({x})");
                assert!(
                    act.value(x as f32).unwrap().is_finite(),
                    "{act}({x}) in f32"
                );
            }
        }
        assert_eq!(Activation::Softplus.value(1e4), Some(1e4));
        assert_eq!(Activation::Sigmoid.value(-1e4), Some(0.0));
    }

    #[test]
    fn softmax_rows_sum_to_one_without_overflow() {
        let z = [1000.0f32, 1001.0, 1002.0, -5.0, 0.0, 5.0];
        let mut y = [0.0f32; 6];
        Activation::Softmax.forward(&z, &mut y, 3);
        for row in y.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(y[2] > y[1] && y[1] > y[0]);
    }

    #[test]
    fn softmax_backward_is_the_jacobian_product() {
        let z = [0.3, -1.2, 2.0, 0.5];
        let g = [0.7, -0.1, 0.4, 1.3];
        let mut y = [0.0; 4];
        Activation::Softmax.forward(&z, &mut y, 4);
        let mut delta = [0.0; 4];
        Activation::Softmax.backward(&z, &y, &g, &mut delta, 4);
        // d(g · softmax(z)) / dz_k by central differences
        let h = 1e-6;
        for k in 0..4 {
            let objective = |dz: f64| {
                let mut zz = z;
                zz[k] += dz;
                let mut yy = [0.0; 4];
                Activation::Softmax.forward(&zz, &mut yy, 4);
                yy.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
            };
            let fd = (objective(h) - objective(-h)) / (2.0 * h);
            assert!((fd - delta[k]).abs() < 1e-8, "k={k}: {} vs {fd}", delta[k]);
        }
    }

    #[test]
    fn names_round_trip_and_accept_keras_spellings() {
        for act in ALL {
            let json = format!("{:?}", act.name());
            if !matches!(act, Activation::LeakyRelu { .. }) {
                assert_eq!(parse(&json), act);
            }
        }
        assert_eq!(parse("\"relu\""), Activation::Relu);
        assert_eq!(parse("\"linear\""), Activation::Identity);
        assert_eq!(
            parse("{\"LeakyReLU\": {\"alpha\": 0.2}}"),
            Activation::LeakyRelu { alpha: 0.2 }
        );
        assert!(serde_json::from_str::<Activation>("\"Swish\"").is_err());
    }

    fn parse(s: &str) -> Activation {
        serde_json::from_str(s).unwrap()
    }
}
