//! Layers: the building blocks a [`Sequential`](crate::Sequential) model chains.
//!
//! The contract follows the numpy design's `Layer` class, with buffers owned by the layer:
//!
//! - [`Layer::forward`] takes a batch `(batch, input_size)` and writes the layer's output into a
//!   buffer the layer owns, read back through [`Layer::output`]. It keeps what backward needs.
//! - [`Layer::backward`] takes the gradient of the loss for that output and writes the gradient
//!   for the layer's input (read through [`Layer::input_grad`]) and the gradients of its
//!   parameters, which [`Layer::visit_params`] hands to an optimizer. A layer never updates its
//!   own weights of its own accord. The one exception is asked for by the model, for plain SGD:
//!   [`Layer::backward_folding_sgd`] and [`Layer::apply_folded_sgd`] let a layer fold the update
//!   into the product that would compute a gradient, so the gradient is never written.
//! - [`Layer::infer`] is the inference path: `&self`, writing into a caller's buffer, so one model
//!   can serve many threads at once.
//!
//! Buffers grow to the largest batch seen and are reused: forward and backward of a batch no
//! larger than an earlier one allocate nothing.

mod dense;
mod dropout;
mod norm;

pub use dense::Dense;
pub use dropout::Dropout;
pub use norm::{BatchNorm, LayerNorm};

use crate::spec::LayerSpec;
use crate::{Error, Result, Scalar};
use ndarray::{ArrayView2, ArrayViewMut2};
use std::fmt::Debug;

/// Checks that a batch has the `size` features layer `name` takes; `what` names the batch in
/// the error ("input", "backward input").
pub(crate) fn check_width<F>(
    name: &str,
    what: &str,
    size: usize,
    input: &ArrayView2<'_, F>,
) -> Result<()> {
    if input.ncols() != size {
        return Err(Error::shape(
            format!("layer {name} {what}"),
            format!("(batch, {size})"),
            format!("{:?}", input.dim()),
        ));
    }
    Ok(())
}

/// One layer from its description (the numpy design's `from_dict` for a layer), with fresh weights
/// drawn from a `Xoshiro256PlusPlus` seeded with `seed`: the inverse of [`Layer::to_spec`].
/// The description must give `input_size`, as `to_spec` does.
///
/// ```
/// use crank::{Activation, Layer, layer};
/// use crank::spec::{DenseSpec, LayerSpec};
///
/// let spec = LayerSpec::Dense(DenseSpec {
///     name: Some("hidden".into()),
///     input_size: Some(4),
///     output_size: 8,
///     activation_function: Activation::Relu,
/// });
/// let dense = layer::from_spec::<f32>(&spec, 7)?;
/// assert_eq!((dense.input_size(), dense.output_size()), (4, 8));
/// assert_eq!(dense.to_spec(), spec);
/// # Ok::<(), crank::Error>(())
/// ```
pub fn from_spec<F: Scalar>(spec: &LayerSpec, seed: u64) -> Result<Box<dyn Layer<F>>> {
    let model = crate::spec::ModelSpec {
        seed: Some(seed),
        layers: vec![spec.clone()],
        preprocessing: None,
    };
    let mut layers = crate::Sequential::<F>::from_spec(&model)?.into_layers();
    Ok(layers.pop().expect("a one-layer model has one layer"))
}

/// Whether a forward pass is part of training. Layers such as dropout behave differently in
/// the two modes; [`Dense`] does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Training: keep what backward needs, use batch statistics, apply dropout.
    #[default]
    Train,
    /// Evaluation: deterministic inference behaviour.
    Eval,
}

/// A parameter of a layer together with its gradient from the latest backward pass.
#[derive(Debug)]
pub struct Param<'a, F> {
    /// The parameter's name within its layer (`"weights"`, `"biases"`).
    pub name: &'static str,
    /// The parameter's values, row-major.
    pub value: &'a mut [F],
    /// The gradient of the loss for each value (a batch mean; see [`crate::loss`]).
    pub grad: &'a [F],
}

/// A tensor a saved model holds: a layer's weights, biases or running statistics.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a, F> {
    /// The tensor's name within its layer (`"weights"`, `"biases"`).
    pub name: &'static str,
    /// Its shape.
    pub shape: &'a [usize],
    /// Its values, row-major.
    pub data: &'a [F],
}

/// A differentiable layer. See the [module docs](self) for the contract.
pub trait Layer<F: Scalar>: Send + Sync + Debug {
    /// The layer's name, unique within a model (`"dense_0"`, ...).
    fn name(&self) -> &str;

    /// The layer's type as written in model files (`"Dense"`).
    fn kind(&self) -> &'static str;

    /// Number of input features.
    fn input_size(&self) -> usize;

    /// Number of output features.
    fn output_size(&self) -> usize;

    /// Number of trainable parameters.
    fn num_params(&self) -> usize;

    /// A short description of the layer's settings for summaries (e.g. its activation).
    fn describe(&self) -> String {
        String::new()
    }

    /// Tells the layer the model's step count before a training forward (dropout seeds its
    /// masks from it).
    fn set_step(&mut self, _step: u64) {}

    /// Runs the layer on a batch `(batch, input_size)` and keeps the result in its own buffer.
    /// The caller guarantees the input's width; `input` must stay the same until `backward`.
    fn forward(&mut self, input: ArrayView2<'_, F>, mode: Mode) -> Result<()>;

    /// The output of the latest [`forward`](Layer::forward): `(batch, output_size)`.
    fn output(&self) -> ArrayView2<'_, F>;

    /// The backward pass for the latest forward. `input` is the batch given to that forward and
    /// `grad_output` the gradient of the loss for [`output`](Layer::output), one row per sample.
    /// Computes the parameter gradients and, when `need_input_grad`, the gradient for the input.
    fn backward(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
    ) -> Result<()>;

    /// Backward for a training step whose optimizer is plain SGD, `p ← p − lr·∂L/∂p` (see
    /// [`Optimizer::plain_sgd`](crate::Optimizer::plain_sgd)). As
    /// [`backward`](Layer::backward), except that the layer may leave a parameter gradient
    /// uncomputed when it can fold that parameter's update into the product that would compute
    /// the gradient, in [`apply_folded_sgd`](Layer::apply_folded_sgd). It may fold only a
    /// gradient that is sure to be finite. `input_max_abs` is the largest `|input|` when the
    /// caller knows it (a model does for its input batch, which it checks); otherwise the layer
    /// finds it if it needs it.
    ///
    /// Returns whether it folded anything. When it returns `false`, every parameter gradient is
    /// in place, as after `backward`, and the model updates the parameters through the optimizer.
    /// When it returns `true`, the parameter gradients it folded are not computed, the layer has
    /// checked that the others are finite, and the model calls `apply_folded_sgd` after the
    /// backward pass of every layer has succeeded. The layer remembers whether it folded until
    /// its next forward or backward. The default folds nothing.
    fn backward_folding_sgd(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
        _lr: F,
        _input_max_abs: Option<F>,
    ) -> Result<bool> {
        self.backward(input, grad_output, need_input_grad)?;
        Ok(false)
    }

    /// Applies the update that the latest [`backward_folding_sgd`](Layer::backward_folding_sgd)
    /// folded, if it folded one, with the same `input`, `grad_output` and `lr`, and returns
    /// whether it did. When it returns `false`, the parameters are untouched and their gradients
    /// are the layer's to hand to an optimizer. The default, for a layer that never folds, does
    /// nothing.
    fn apply_folded_sgd(
        &mut self,
        _input: ArrayView2<'_, F>,
        _grad_output: ArrayView2<'_, F>,
        _lr: F,
    ) -> Result<bool> {
        Ok(false)
    }

    /// The gradient for the input from the latest backward with `need_input_grad`:
    /// `(batch, input_size)`.
    fn input_grad(&self) -> ArrayView2<'_, F>;

    /// Calls `f` on each parameter and its gradient, always in the same order.
    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_, F>));

    /// Calls `f` on each parameter's gradient, mutably (for clipping).
    fn visit_grads_mut(&mut self, f: &mut dyn FnMut(&mut [F]));

    /// The layer's description, with its name and input size filled in (the numpy design's `to_dict`).
    fn to_spec(&self) -> LayerSpec;

    /// Calls `f` with each tensor a saved model holds for this layer, in the order of
    /// [`LayerSpec::tensor_shapes`].
    fn visit_tensors<'a>(&'a self, f: &mut dyn FnMut(Tensor<'a, F>));

    /// Inference without touching the layer's own buffers: writes the output for `input` into
    /// `out`, of shape `(batch, output_size)`.
    fn infer(&self, input: ArrayView2<'_, F>, out: ArrayViewMut2<'_, F>) -> Result<()>;

    /// [`infer`](Layer::infer) for a model's first layer, also telling whether `input` held only
    /// finite values, when the layer can tell that from a pass it makes anyway: `Some(true)` if
    /// it did, `Some(false)` if it may not have, `None` if the layer cannot tell (the default).
    /// The model looks through the input itself unless it gets `Some(true)`.
    fn infer_first(
        &self,
        input: ArrayView2<'_, F>,
        out: ArrayViewMut2<'_, F>,
    ) -> Result<Option<bool>> {
        self.infer(input, out)?;
        Ok(None)
    }
}
