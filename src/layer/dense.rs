//! The fully connected layer: `z = x·W + b`, `y = f(z)`.

use super::{Layer, Mode, Param, Tensor, check_width};
use crate::buffer::Buffer;
use crate::gemm::gemm;
use crate::spec::{DenseSpec, LayerSpec};
use crate::{Activation, Error, Result, Scalar, kernels};
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, CowArray, Ix2};
use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

/// A fully connected layer, as in the seed: weights `(input_size, output_size)`, biases
/// `(output_size)`, `z = x·W + b` and `y = f(z)` for a batch `x` of shape `(batch, input_size)`.
///
/// Backward follows the seed, with parameter gradients as **batch means**:
/// `δ = g ⊙ f'(z)`, `dW = xᵀδ / B`, `db = Σᵢ δᵢ / B`, `dx = δ·Wᵀ`.
///
/// Every product runs as one GEMM into a buffer the layer owns; the bias is written into the
/// output first and the GEMM accumulates onto it (`beta = 1`), and transposes are views.
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

    /// `∂L/∂W` from the latest backward pass (a batch mean).
    pub fn weight_grad(&self) -> ArrayView2<'_, F> {
        self.grad_weights.view()
    }

    /// `∂L/∂b` from the latest backward pass (a batch mean).
    pub fn bias_grad(&self) -> ArrayView1<'_, F> {
        self.grad_biases.view()
    }
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
        let (batch, n_out) = (input.nrows(), self.output_size());
        let bias = self.biases.as_slice().expect("biases are contiguous");
        self.z.resize(batch, n_out);
        kernels::broadcast_rows(self.z.as_mut_slice(), bias);
        gemm(
            F::one(),
            input,
            self.weights.view(),
            F::one(),
            self.z.view_mut(),
        );
        if self.activation != Activation::Identity {
            self.y.resize(batch, n_out);
            self.activation
                .forward(self.z.as_slice(), self.y.as_mut_slice(), n_out);
        }
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
        check_width(&self.name, "backward input", self.input_size(), &input)?;
        let (batch, n_out) = self.z.shape();
        if input.nrows() != batch || grad_output.dim() != (batch, n_out) {
            return Err(Error::shape(
                format!("layer {} backward", self.name),
                format!(
                    "input ({batch}, {}) and gradient ({batch}, {n_out})",
                    self.input_size()
                ),
                format!(
                    "input {:?} and gradient {:?}",
                    input.dim(),
                    grad_output.dim()
                ),
            ));
        }
        // The kernels read slices; a gradient in another memory order is copied once.
        let g: CowArray<'_, F, Ix2> = grad_output.as_standard_layout();
        let g = g.as_slice().expect("standard layout is contiguous");

        let inv_batch = F::one() / F::of(batch as f64);
        let db = self
            .grad_biases
            .as_slice_mut()
            .expect("biases are contiguous");
        let delta: &[F] = if self.activation == Activation::Identity {
            kernels::column_sums(g, n_out, inv_batch, db);
            g
        } else {
            self.delta.resize(batch, n_out);
            self.activation.backward_with_sums(
                self.z.as_slice(),
                self.y.as_slice(),
                g,
                self.delta.as_mut_slice(),
                n_out,
                inv_batch,
                db,
            );
            self.delta.as_slice()
        };
        let delta_m = ArrayView2::from_shape((batch, n_out), delta).expect("delta is (batch, out)");

        gemm(
            inv_batch,
            input.t(),
            delta_m,
            F::zero(),
            self.grad_weights.view_mut(),
        );
        if need_input_grad {
            self.dx.resize(batch, self.weights.nrows());
            gemm(
                F::one(),
                delta_m,
                self.weights.t(),
                F::zero(),
                self.dx.view_mut(),
            );
        }
        Ok(())
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
            data: self.weights.as_slice().expect(contiguous),
        });
        f(Tensor {
            name: "biases",
            shape: self.biases.shape(),
            data: self.biases.as_slice().expect(contiguous),
        });
    }

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        if out.dim() != (input.nrows(), self.output_size()) || !out.is_standard_layout() {
            return Err(Error::shape(
                format!("layer {} output buffer", self.name),
                format!("contiguous ({}, {})", input.nrows(), self.output_size()),
                format!("{:?}", out.dim()),
            ));
        }
        out.assign(&self.biases);
        gemm(
            F::one(),
            input,
            self.weights.view(),
            F::one(),
            out.view_mut(),
        );
        let n_out = self.output_size();
        let y = out.as_slice_mut().expect("checked standard layout");
        self.activation.forward_inplace(y, n_out);
        Ok(())
    }
}
