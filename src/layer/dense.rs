//! The fully connected layer: `z = x·W + b`, `y = f(z)`.

use super::{
    Build, Layer, LayerConfig, LayerSpec, Mode, Param, Tensor, TensorData, check_width,
    declared_name_and_input,
};
use crate::buffer::{Buffer, matrix};
use crate::gemm::{self, gemm};
use crate::{Activation, Error, Result, Scalar, kernels};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, CowArray, Ix2};
use rand::{Rng, RngExt};
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

/// The description of a [`Dense`] layer, with the numpy design's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenseSpec {
    /// The layer's name; `dense_<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Inputs; required for the first layer, and checked against the previous layer's
    /// `output_size` when given for a later one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Outputs.
    pub output_size: usize,
    /// The activation, by name (`"ReLU"`, `"Identity"`, ...).
    #[serde(default)]
    pub activation_function: Activation,
}

impl LayerConfig for DenseSpec {
    const KIND: &'static str = "Dense";
    const TENSORS: &'static [&'static str] = &["weights", "biases"];

    declared_name_and_input!();

    fn output_size(&self, _input_size: usize) -> usize {
        self.output_size
    }

    fn tensor_shapes(&self, input_size: usize) -> Vec<(&'static str, Vec<usize>)> {
        vec![
            ("weights", vec![input_size, self.output_size]),
            ("biases", vec![self.output_size]),
        ]
    }

    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
        let Build {
            index,
            name,
            input_size,
            model_seed,
            rng,
            tensors,
        } = build;
        let dense = match tensors.map(<[Vec<F>; 2]>::try_from) {
            Some(Ok([w, b])) => {
                let w = Array2::from_shape_vec((input_size, self.output_size), w)
                    .map_err(|e| Error::Config(format!("layer {index} ({name}) weights: {e}")))?;
                Dense::from_weights(name, w, Array1::from_vec(b), self.activation_function)?
            }
            Some(Err(t)) => {
                return Err(Error::Config(format!(
                    "layer {index} ({name}): {} tensors given, 2 expected",
                    t.len()
                )));
            }
            None => {
                let dense =
                    Dense::new(input_size, self.output_size, self.activation_function, rng)?
                        .with_name(name);
                log::info!(
                    "initialised {} (Dense): {input_size} -> {}, {}, He normal, seed {model_seed}",
                    dense.name(),
                    self.output_size,
                    self.activation_function
                );
                dense
            }
        };
        Ok(Box::new(dense))
    }
}

/// A fully connected layer, as in the numpy design: weights `(input_size, output_size)`, biases
/// `(output_size)`, `z = x·W + b` and `y = f(z)` for a batch `x` of shape `(batch, input_size)`.
///
/// Backward follows the numpy design, with parameter gradients as **batch means**:
/// `δ = g ⊙ f'(z)`, `dW = xᵀδ / B`, `db = Σᵢ δᵢ / B`, `dx = δ·Wᵀ`.
///
/// Every product runs as one GEMM into a buffer the layer owns; the bias is added as the
/// product is written (a small product, in its registers) or in the activation's pass right
/// after it, and transposes are views.
#[derive(Debug, Clone)]
pub struct Dense<F: Scalar> {
    name: String,
    activation: Activation,
    weights: Array2<F>,
    biases: Array1<F>,
    grad_weights: Array2<F>,
    grad_biases: Array1<F>,
    /// Pre-activation `z`; it is also the output when the activation is the identity.
    z: Buffer<F>,
    /// Output `y = f(z)` (unused for the identity).
    y: Buffer<F>,
    /// `δ = g ⊙ f'(z)` (unused for the identity, where `δ = g`).
    delta: Buffer<F>,
    /// Gradient for the input.
    dx: Buffer<F>,
    /// A row-major copy of the input's transpose, for the weight gradient where the backend
    /// reads the transposed view slowly ([`gemm::transposed_copy_pays`]).
    input_t: Buffer<F>,
    /// Whether the latest backward folded the weight update into the weight-gradient product
    /// ([`Layer::backward_folding_sgd`]), which [`Layer::apply_folded_sgd`] then runs.
    folded: bool,
}

impl<F: Scalar> Dense<F> {
    /// A layer with He-initialised weights, `W ~ N(0, 2 / input_size)`, and zero biases, drawn
    /// from `rng` (crank uses a seeded `Xoshiro256PlusPlus`).
    pub fn new<R: Rng + ?Sized>(
        input_size: usize,
        output_size: usize,
        activation: Activation,
        rng: &mut R,
    ) -> Result<Self> {
        check_sizes(input_size, output_size)?;
        let std = (2.0 / input_size as f64).sqrt();
        let weights = Array2::from_shape_simple_fn((input_size, output_size), || {
            F::of(rng.sample::<f64, _>(StandardNormal) * std)
        });
        Self::from_parts(
            "dense".into(),
            weights,
            Array1::zeros(output_size),
            activation,
        )
    }

    /// A layer with the given weights `(input_size, output_size)` and biases `(output_size)`.
    pub fn from_weights(
        name: impl Into<String>,
        weights: Array2<F>,
        biases: Array1<F>,
        activation: Activation,
    ) -> Result<Self> {
        let name = name.into();
        check_sizes(weights.nrows(), weights.ncols())?;
        if biases.len() != weights.ncols() {
            return Err(Error::shape(
                format!("layer {name} biases"),
                format!("({})", weights.ncols()),
                format!("({})", biases.len()),
            ));
        }
        Self::from_parts(name, weights, biases, activation)
    }

    fn from_parts(
        name: String,
        weights: Array2<F>,
        biases: Array1<F>,
        activation: Activation,
    ) -> Result<Self> {
        // Standard layout, so that parameters can be handed out as slices.
        let weights = if weights.is_standard_layout() {
            weights
        } else {
            weights.as_standard_layout().into_owned()
        };
        let biases = if biases.is_standard_layout() {
            biases
        } else {
            biases.as_standard_layout().into_owned()
        };
        Ok(Dense {
            name,
            activation,
            grad_weights: Array2::zeros(weights.raw_dim()),
            grad_biases: Array1::zeros(biases.raw_dim()),
            weights,
            biases,
            z: Buffer::default(),
            y: Buffer::default(),
            delta: Buffer::default(),
            dx: Buffer::default(),
            input_t: Buffer::default(),
            folded: false,
        })
    }

    /// The same layer under another name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The activation function.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The weights, `(input_size, output_size)`.
    pub fn weights(&self) -> ArrayView2<'_, F> {
        self.weights.view()
    }

    /// The biases, `(output_size)`.
    pub fn biases(&self) -> ArrayView1<'_, F> {
        self.biases.view()
    }

    /// `∂L/∂W` from the latest backward pass that computed it (a batch mean); a training step
    /// with plain SGD folds the update instead ([`Sequential::train_step`](crate::Sequential::train_step)).
    pub fn weight_grad(&self) -> ArrayView2<'_, F> {
        self.grad_weights.view()
    }

    /// `∂L/∂b` from the latest backward pass (a batch mean).
    pub fn bias_grad(&self) -> ArrayView1<'_, F> {
        self.grad_biases.view()
    }
}

impl<F: Scalar> Dense<F> {
    #[cold]
    #[inline(never)]
    fn backward_shape_error(&self, input: &ArrayView2<'_, F>, grad: &ArrayView2<'_, F>) -> Error {
        let (batch, n_out) = self.z.shape();
        Error::shape(
            format!("layer {} backward", self.name),
            format!(
                "input ({batch}, {}) and gradient ({batch}, {n_out})",
                self.input_size()
            ),
            format!("input {:?} and gradient {:?}", input.dim(), grad.dim()),
        )
    }

    /// The first half of backward: checks the shapes against the latest forward, then computes
    /// `δ = g ⊙ f'(z)` (kept in `self.delta`, or `g` itself for the identity) and
    /// `db = Σᵢ δᵢ / B`. Returns `g` in standard layout (a gradient in another memory order is
    /// copied once).
    fn delta_and_bias_grad<'g>(
        &mut self,
        input: &ArrayView2<'_, F>,
        grad_output: &'g ArrayView2<'_, F>,
    ) -> Result<CowArray<'g, F, Ix2>> {
        check_width(&self.name, "backward input", self.input_size(), input)?;
        self.folded = false;
        let (batch, n_out) = self.z.shape();
        if input.nrows() != batch || grad_output.dim() != (batch, n_out) {
            return Err(self.backward_shape_error(input, grad_output));
        }
        let g = grad_output.as_standard_layout();
        let gs = g.as_slice().expect("standard layout is contiguous");
        let inv_batch = F::one() / F::of(batch as f64);
        let db = self
            .grad_biases
            .as_slice_mut()
            .expect("biases are contiguous");
        if self.activation == Activation::Identity {
            kernels::column_sums(gs, n_out, inv_batch, db);
        } else {
            self.delta.resize(batch, n_out);
            self.activation.backward_with_sums(
                self.z.as_slice(),
                self.y.as_slice(),
                gs,
                self.delta.as_mut_slice(),
                n_out,
                inv_batch,
                db,
            );
        }
        Ok(g)
    }

    /// Backward, folding the SGD update when `sgd` (the learning rate, and the largest `|input|`
    /// if the caller knows it) is given and the product is sure to be finite: `δ` and `db`,
    /// then `dW = xᵀδ / B` unless it folds, then `dx = δ·Wᵀ` when asked. Returns whether it
    /// folded.
    fn backward_products(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
        sgd: Option<(F, Option<F>)>,
    ) -> Result<bool> {
        let g = self.delta_and_bias_grad(&input, &grad_output)?;
        let g = g.as_slice().expect("standard layout is contiguous");
        let (batch, n_out) = self.z.shape();
        let inv_batch = F::one() / F::of(batch as f64);
        let delta = delta(self.activation, &self.delta, g);
        let db = self.grad_biases.as_slice().expect("biases are contiguous");
        let folded = sgd.is_some_and(|(lr, input_max)| {
            folding_is_safe(&input, delta, db, lr * inv_batch, input_max)
        });
        let delta = matrix(delta, batch, n_out);
        if !folded {
            gemm(
                inv_batch,
                input_transposed(&input, n_out, &mut self.input_t),
                delta,
                F::zero(),
                self.grad_weights.view_mut(),
            );
        }
        if need_input_grad {
            self.dx.resize(batch, self.weights.nrows());
            gemm(
                F::one(),
                delta,
                self.weights.t(),
                F::zero(),
                self.dx.view_mut(),
            );
        }
        self.folded = folded;
        Ok(folded)
    }

    /// The error of an output buffer that is not a contiguous `(batch, outputs)`, out of line.
    #[cold]
    #[inline(never)]
    fn output_buffer_error(&self, batch: usize, dim: (usize, usize)) -> Error {
        Error::shape(
            format!("layer {} output buffer", self.name),
            format!("contiguous ({batch}, {})", self.output_size()),
            format!("{dim:?}"),
        )
    }

    /// Inference's product: checks the shapes and writes `f(x·W + b)` into `out` where a small
    /// product applies the ReLU itself ([`gemm::affine_relu`]); otherwise `x·W + b`, or `x·W`
    /// and the bias still to add ([`gemm::affine_deferred`]), for the activation's pass, which
    /// adds that bias as it goes. Returns `out` as a slice and what is left to do.
    fn product<'o>(
        &self,
        input: ArrayView2<'_, F>,
        out: &'o mut ArrayViewMut2<'_, F>,
    ) -> Result<(&'o mut [F], Left<'_, F>)> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        if out.dim() != (input.nrows(), self.output_size()) || !out.is_standard_layout() {
            return Err(self.output_buffer_error(input.nrows(), out.dim()));
        }
        let weights = self.weights.view();
        let bias = self.biases.as_slice().expect("biases are contiguous");
        let left = match self.activation {
            Activation::Relu => gemm::affine_relu(&input, &weights, bias, out, None)
                .map(|finite| Left::Nothing { finite }),
            _ => None,
        }
        .unwrap_or_else(|| Left::Activation(gemm::affine_deferred(&input, &weights, bias, out)));
        Ok((out.as_slice_mut().expect("checked standard layout"), left))
    }
}

/// What is left of a layer's inference after [`Dense::product`].
enum Left<'b, F> {
    /// Nothing: the product applied the activation too. `finite`: whether every `x·W + b` was.
    Nothing { finite: bool },
    /// The activation, and first the bias when it is `Some`.
    Activation(Option<&'b [F]>),
}

/// `δ` of the latest backward: the layer's buffer, or for the identity `g` itself (in standard
/// layout).
fn delta<'a, F: Scalar>(activation: Activation, buffer: &'a Buffer<F>, g: &'a [F]) -> &'a [F] {
    if activation == Activation::Identity {
        g
    } else {
        buffer.as_slice()
    }
}

/// `xᵀ`, the weight gradient's left operand for an `x` of `(batch, n_in)` and `n_out` outputs:
/// the transposed view, or a row-major copy in `buffer` where that pays
/// ([`gemm::transposed_copy_pays`]; an input not in standard layout is not copied).
fn input_transposed<'a, F: Scalar>(
    input: &'a ArrayView2<'_, F>,
    n_out: usize,
    buffer: &'a mut Buffer<F>,
) -> ArrayView2<'a, F> {
    let (batch, n_in) = input.dim();
    match input.as_slice() {
        Some(x) if gemm::transposed_copy_pays::<F>(batch, n_in, n_out) => {
            buffer.resize(n_in, batch);
            gemm::transpose(x, n_in, buffer.as_mut_slice());
            buffer.view()
        }
        _ => input.t(),
    }
}

/// Whether folding the update into the weight-gradient product saves more than it costs. It
/// saves passes over the weights: the gradient's check, the update's reads and write, and with
/// OpenBLAS the zeroing of the gradient (about four passes of `n_in · n_out`). It costs the
/// largest `|δ|` and `|x|`, a pass over `batch · (n_out + n_in)`. A small layer over a large
/// batch (an output layer of ten units, the tiny networks) does better without.
fn folding_pays(batch: usize, n_in: usize, n_out: usize) -> bool {
    2 * n_in * n_out >= batch * (n_in + n_out)
}

/// Whether `W ← W − α·xᵀδ` may be folded: `δ`, the input and the bias gradient `db` are finite
/// and the product is sure to be (see [`folding_is_finite`]). `input_max` is the largest
/// `|input|` when known; an input not in standard layout is not scanned and does not fold.
fn folding_is_safe<F: Scalar>(
    input: &ArrayView2<'_, F>,
    delta: &[F],
    db: &[F],
    alpha: F,
    input_max: Option<F>,
) -> bool {
    let Some(delta_max) = kernels::max_abs(delta) else {
        return false;
    };
    let Some(input_max) = input_max.or_else(|| input.as_slice().and_then(kernels::max_abs)) else {
        return false;
    };
    folding_is_finite(input.nrows(), input_max, delta_max, alpha) && kernels::all_finite(db)
}

/// Whether `α·xᵀδ`, a sum over `batch` rows with every `|x| ≤ x_max` and `|δ| ≤ delta_max`, is
/// sure to be finite however a GEMM orders and scales it. Every partial sum is at most
/// `batch · x_max · delta_max` in magnitude, and `|α|` times that after scaling (a GEMM may
/// scale before or after summing). Rounding grows a sum of `batch` terms by at most
/// `(1 + ε)^batch`, below 2 while `batch · ε ≤ 1/2`. The bound is taken in `f64`, where it
/// cannot overflow for `f32`; for `f64` an overflowing bound is infinite and fails the test.
fn folding_is_finite<F: Scalar>(batch: usize, x_max: F, delta_max: F, alpha: F) -> bool {
    let n = batch as f64;
    let bound = n * x_max.abs().as_f64() * delta_max.abs().as_f64() * alpha.abs().as_f64().max(1.0);
    n * F::epsilon().as_f64() <= 0.5 && 2.0 * bound <= F::max_value().as_f64()
}

fn check_sizes(input_size: usize, output_size: usize) -> Result<()> {
    if input_size == 0 || output_size == 0 {
        return Err(Error::Config(format!(
            "a Dense layer needs at least one input and one output, got {input_size} -> {output_size}"
        )));
    }
    Ok(())
}

impl<F: Scalar> Layer<F> for Dense<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "Dense"
    }

    fn input_size(&self) -> usize {
        self.weights.nrows()
    }

    fn output_size(&self) -> usize {
        self.weights.ncols()
    }

    fn num_params(&self) -> usize {
        self.weights.len() + self.biases.len()
    }

    fn describe(&self) -> String {
        self.activation.to_string()
    }

    fn forward(&mut self, input: ArrayView2<'_, F>, _mode: Mode) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        self.folded = false;
        let (batch, n_out) = (input.nrows(), self.output_size());
        self.z.resize(batch, n_out);
        let weights = self.weights.view();
        let bias = self.biases.as_slice().expect("biases are contiguous");
        if self.activation == Activation::Identity {
            gemm::affine(&input, &weights, bias, &mut self.z.view_mut());
            return Ok(());
        }
        self.y.resize(batch, n_out);
        if self.activation == Activation::Relu {
            // A small product writes `z` and `y` itself.
            let (y, z) = (&mut self.y.view_mut(), Some(self.z.as_mut_slice()));
            if gemm::affine_relu(&input, &weights, bias, y, z).is_some() {
                return Ok(());
            }
        }
        let bias = gemm::affine_deferred(&input, &weights, bias, &mut self.z.view_mut());
        self.activation
            .forward_adding(self.z.as_mut_slice(), bias, self.y.as_mut_slice(), n_out);
        Ok(())
    }

    fn output(&self) -> ArrayView2<'_, F> {
        if self.activation == Activation::Identity {
            self.z.view()
        } else {
            self.y.view()
        }
    }

    fn backward(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
    ) -> Result<()> {
        self.backward_products(input, grad_output, need_input_grad, None)?;
        Ok(())
    }

    /// Folds `W ← W − lr·dW` into the weight-gradient product, `W ← W − (lr/B)·xᵀδ` as one GEMM
    /// with `beta = 1`, when that product is sure to be finite (`B · max|x| · max|δ|`, with a
    /// margin for rounding, is below the largest float) and the bias gradient is finite. That
    /// skips writing `dW`, checking it, and the update's pass over it. A layer whose weights
    /// are few next to its batch's activations does not fold (see `folding_pays`). Otherwise
    /// it is [`backward`](Layer::backward).
    fn backward_folding_sgd(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
        lr: F,
        input_max_abs: Option<F>,
    ) -> Result<bool> {
        let (batch, n_in, n_out) = (input.nrows(), self.input_size(), self.output_size());
        let sgd = folding_pays(batch, n_in, n_out).then_some((lr, input_max_abs));
        self.backward_products(input, grad_output, need_input_grad, sgd)
    }

    fn apply_folded_sgd(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        lr: F,
    ) -> Result<bool> {
        let (batch, n_out) = self.z.shape();
        if !self.folded {
            return Ok(false);
        }
        if input.dim() != (batch, self.input_size()) || grad_output.dim() != (batch, n_out) {
            return Err(self.backward_shape_error(&input, &grad_output));
        }
        self.folded = false;
        let g = grad_output.as_standard_layout();
        let inv_batch = F::one() / F::of(batch as f64);
        let g = g.as_slice().expect("standard layout is contiguous");
        let delta = delta(self.activation, &self.delta, g);
        let delta = matrix(delta, batch, n_out);
        gemm(
            -(lr * inv_batch),
            input_transposed(&input, n_out, &mut self.input_t),
            delta,
            F::one(),
            self.weights.view_mut(),
        );
        let biases = self.biases.as_slice_mut().expect("biases are contiguous");
        let db = self.grad_biases.as_slice().expect("biases are contiguous");
        kernels::axpy(-lr, db, biases);
        Ok(true)
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.dx.view()
    }

    fn visit_grads_mut(&mut self, f: &mut dyn FnMut(&mut [F])) {
        let contiguous = "gradients are in standard layout";
        f(self.grad_weights.as_slice_mut().expect(contiguous));
        f(self.grad_biases.as_slice_mut().expect(contiguous));
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_, F>)) {
        let contiguous = "parameters are in standard layout";
        f(Param {
            name: "weights",
            value: self.weights.as_slice_mut().expect(contiguous),
            grad: self.grad_weights.as_slice().expect(contiguous),
        });
        f(Param {
            name: "biases",
            value: self.biases.as_slice_mut().expect(contiguous),
            grad: self.grad_biases.as_slice().expect(contiguous),
        });
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Dense(DenseSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.input_size()),
            output_size: self.output_size(),
            activation_function: self.activation,
        })
    }

    fn visit_tensors<'a>(&'a self, f: &mut dyn FnMut(Tensor<'a, F>)) {
        let contiguous = "parameters are in standard layout";
        f(Tensor {
            name: "weights",
            shape: self.weights.shape(),
            data: TensorData::Float(self.weights.as_slice().expect(contiguous)),
        });
        f(Tensor {
            name: "biases",
            shape: self.biases.shape(),
            data: TensorData::Float(self.biases.as_slice().expect(contiguous)),
        });
    }

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        let (y, left) = self.product(input, &mut out)?;
        if let Left::Activation(bias) = left {
            self.activation.forward_inplace(y, self.output_size(), bias);
        }
        Ok(())
    }

    /// Every product of a non-finite input value is NaN or infinite, so a non-finite input value
    /// makes its whole row of `x·W + b` non-finite: the activation's pass over `x·W + b` checks
    /// the input for free. (The converse does not hold: a large input or weight can overflow.
    /// That is why the answer is "maybe", and the model then looks at the input itself.)
    fn infer_first(
        &self,
        input: ArrayView2<'_, F>,
        mut out: ArrayViewMut2<'_, F>,
    ) -> Result<Option<bool>> {
        let (y, left) = self.product(input, &mut out)?;
        Ok(Some(match left {
            Left::Nothing { finite } => finite,
            Left::Activation(bias) => {
                self.activation
                    .forward_inplace_finite(y, self.output_size(), bias)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::folding_is_finite;
    use crate::{Activation, Dense, Layer, Mode, Scalar, gemm};
    use ndarray::Array2;
    use rand::SeedableRng;

    /// Widths whose rows are 4 KiB long (1024 `f32`, 512 `f64`), where the weight gradient reads
    /// a row-major copy of `xᵀ` on faer's x86 kernels, and one beside them: the gradient and the
    /// folded SGD update against `xᵀδ / B` summed here, and the copy taken where it should be.
    #[test]
    fn weight_gradients_of_wide_inputs_match_the_definition() {
        fn check<F: Scalar>(n_in: usize) {
            let (batch, n_out) = (8, 24);
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(4);
            let mut layer = Dense::<F>::new(n_in, n_out, Activation::Identity, &mut rng).unwrap();
            let x = Array2::from_shape_fn((batch, n_in), |(i, j)| {
                F::of(((i * 13 + j * 7) % 17) as f64 / 17.0 - 0.5)
            });
            let g = Array2::from_shape_fn((batch, n_out), |(i, j)| {
                F::of(((i * 5 + j * 3) % 11) as f64 / 11.0 - 0.4)
            });
            let want = |w: usize, o: usize| -> f64 {
                (0..batch)
                    .map(|b| x[[b, w]].as_f64() * g[[b, o]].as_f64())
                    .sum::<f64>()
                    / batch as f64
            };
            let close =
                |got: F, want: f64| (got.as_f64() - want).abs() <= 1e-5 * (1.0 + want.abs());
            let copies = gemm::transposed_copy_pays::<F>(batch, n_in, n_out);
            assert_eq!(
                copies,
                gemm::faer_kernels() && n_in * size_of::<F>() == 4096
            );
            layer.forward(x.view(), Mode::Train).unwrap();
            layer.backward(x.view(), g.view(), false).unwrap();
            for ((w, o), &got) in layer.weight_grad().indexed_iter() {
                assert!(close(got, want(w, o)), "{} {n_in}: dW[{w}, {o}]", F::NAME);
            }
            let before = layer.weights().to_owned();
            let lr = F::of(0.5);
            layer.forward(x.view(), Mode::Train).unwrap();
            assert!(
                layer
                    .backward_folding_sgd(x.view(), g.view(), false, lr, None)
                    .unwrap()
            );
            assert!(layer.apply_folded_sgd(x.view(), g.view(), lr).unwrap());
            for ((w, o), &got) in layer.weights().indexed_iter() {
                let step = before[[w, o]].as_f64() - 0.5 * want(w, o);
                assert!(close(got, step), "{} {n_in}: folded W[{w}, {o}]", F::NAME);
            }
        }
        check::<f32>(1024);
        check::<f32>(1000);
        check::<f64>(512);
        check::<f64>(520);
    }

    /// A ReLU layer whose product is small applies the bias and the ReLU as the product is
    /// written (`z` and `y` in training, `y` in inference): bitwise what an identity layer with
    /// the same weights and then the ReLU give, as for a large product, which takes the pass.
    #[test]
    fn relu_in_the_products_store_equals_the_activation_pass_bitwise() {
        for (batch, n_in, n_out) in [(32, 6, 64), (1, 6, 64), (7, 13, 9), (64, 200, 100)] {
            let w = Array2::from_shape_fn((n_in, n_out), |(i, j)| {
                ((i * 7 + j * 3) % 19) as f32 * 0.071 - 0.6
            });
            let b = ndarray::Array1::from_shape_fn(n_out, |j| (j % 5) as f32 * 0.13 - 0.3);
            let x = Array2::from_shape_fn((batch, n_in), |(i, j)| {
                ((i * 5 + j * 11) % 23) as f32 * 0.097 - 1.1
            });
            let layer = |act| Dense::from_weights("d", w.clone(), b.clone(), act).unwrap();
            let (mut relu, mut identity) = (layer(Activation::Relu), layer(Activation::Identity));
            relu.forward(x.view(), Mode::Train).unwrap();
            identity.forward(x.view(), Mode::Train).unwrap();
            let z = identity.output().to_owned();
            let want = z.mapv(|v| if v > 0.0 { v } else { 0.0 });
            let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let what = format!("{batch}x{n_in}x{n_out}");
            assert_eq!(
                bits(relu.z.as_slice()),
                bits(z.as_slice().unwrap()),
                "{what} z"
            );
            assert_eq!(
                bits(relu.y.as_slice()),
                bits(want.as_slice().unwrap()),
                "{what} y"
            );
            let mut out = Array2::from_elem((batch, n_out), f32::NAN);
            relu.infer(x.view(), out.view_mut()).unwrap();
            assert_eq!(
                bits(out.as_slice().unwrap()),
                bits(want.as_slice().unwrap()),
                "{what}"
            );
            out.fill(f32::NAN);
            assert_eq!(
                relu.infer_first(x.view(), out.view_mut()).unwrap(),
                Some(true)
            );
            assert_eq!(
                bits(out.as_slice().unwrap()),
                bits(want.as_slice().unwrap()),
                "{what}"
            );
        }
    }

    #[test]
    fn the_folding_bound_refuses_what_could_overflow() {
        assert!(folding_is_finite::<f32>(256, 10.0, 1.0, 0.01));
        // 2 · 2 · 1e19 · 1e19 = 4e38 > f32::MAX, though each product is finite.
        assert!(!folding_is_finite::<f32>(2, 1e19, 1e19, 0.01));
        assert!(folding_is_finite::<f32>(2, 1e18, 1e19, 0.01));
        // A large learning rate scales the bound.
        assert!(!folding_is_finite::<f32>(2, 1e18, 1e19, 100.0));
        // In f64 the bound itself overflows to infinity, and fails.
        assert!(!folding_is_finite::<f64>(4, 1e300, 1e300, 0.1));
        assert!(folding_is_finite::<f64>(4, 1e100, 1e100, 0.1));
        // Unknown magnitudes (NaN) and batches too large for the rounding margin do not fold.
        assert!(!folding_is_finite::<f32>(4, f32::NAN, 1.0, 0.1));
        assert!(!folding_is_finite::<f32>(4, f32::INFINITY, 0.0, 0.1));
        assert!(!folding_is_finite::<f32>(1 << 24, 1.0, 1.0, 0.1));
        assert!(folding_is_finite::<f64>(1 << 24, 1.0, 1.0, 0.1));
    }
}
