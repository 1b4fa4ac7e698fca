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

mod activation;
mod dense;
mod dropout;
mod norm;
mod quantized;

pub use activation::{ActivationLayer, ActivationSpec};
pub use dense::{Dense, DenseSpec};
pub use dropout::{Dropout, DropoutSpec};
pub use norm::{BatchNorm, BatchNormSpec, LayerNorm, LayerNormSpec};
pub use quantized::{Bf16DenseSpec, Int8DenseSpec, QuantizedDense};
pub(crate) use quantized::{quantized_spec, quantized_tensors};

use crate::quant::Precision;
use crate::{Error, Result, Scalar};
use ndarray::{ArrayView2, ArrayViewMut2};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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
        return Err(width_error(name, what, size, input.dim()));
    }
    Ok(())
}

/// [`check_width`]'s error, out of line: the check runs on every layer call, the error hardly
/// ever.
#[cold]
#[inline(never)]
fn width_error(name: &str, what: &str, size: usize, dim: (usize, usize)) -> Error {
    Error::shape(
        format!("layer {name} {what}"),
        format!("(batch, {size})"),
        format!("{dim:?}"),
    )
}

/// One layer from its description (the numpy design's `from_dict` for a layer), with fresh weights
/// drawn from a `Xoshiro256PlusPlus` seeded with `seed`: the inverse of [`Layer::to_spec`].
/// The description must give `input_size`, as `to_spec` does, and is held to the limits a model
/// file is ([`Limits`](crate::spec::Limits)).
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
    // The description is checked, named and held to the limits as a one-layer model's is: one
    // place decides what a description may ask for.
    let model = crate::spec::ModelSpec {
        seed: Some(seed),
        layers: vec![spec.clone()],
        preprocessing: None,
    };
    let (name, input_size, spec) = model
        .resolve()?
        .layers
        .pop()
        .expect("a one-layer model has one layer");
    spec.build(Build {
        index: 0,
        name,
        input_size,
        model_seed: seed,
        rng: &mut Xoshiro256PlusPlus::seed_from_u64(seed),
        tensors: None,
    })
}

/// What a layer is built from besides its description: its place in the model, its name and
/// input size, the model's seed and generator, and its saved tensors if it is loaded (in the
/// order of [`LayerConfig::TENSORS`], lengths already checked against
/// [`LayerConfig::tensor_shapes`]).
pub(crate) struct Build<'a, F> {
    pub index: usize,
    pub name: String,
    pub input_size: usize,
    pub model_seed: u64,
    pub rng: &'a mut Xoshiro256PlusPlus,
    pub tensors: Option<Vec<Vec<F>>>,
}

/// How a layer kind describes itself in a model file and builds itself from that description
/// (as burn's `LinearConfig::init`). Each kind's `*Spec`, in the kind's own file, implements it;
/// [`LayerSpec`] lists the kinds. Adding a kind is its file and one line of `layer_kinds!`.
pub(crate) trait LayerConfig {
    /// The `type` tag in model files.
    const KIND: &'static str;
    /// The names of the layer's tensors, in saving order.
    const TENSORS: &'static [&'static str];
    /// The name given in the file, if any.
    fn name(&self) -> Option<&str>;
    /// The declared input size, if any.
    fn input_size(&self) -> Option<usize>;
    /// Declares the input size.
    fn set_input_size(&mut self, input_size: usize);
    /// The output size for an input size: the same, unless the kind changes it.
    fn output_size(&self, input_size: usize) -> usize {
        input_size
    }
    /// Each tensor's shape, in [`TENSORS`](Self::TENSORS) order: `[output size]`, unless the
    /// kind says otherwise.
    fn tensor_shapes(&self, input_size: usize) -> Vec<(&'static str, Vec<usize>)> {
        let out = self.output_size(input_size);
        Self::TENSORS.iter().map(|&t| (t, vec![out])).collect()
    }
    /// Checks the kind's own settings (rates, epsilons): the field and what is wrong.
    fn check(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    /// How files store tensor `tensor`: `None` (the default) in the model's type, or in a
    /// reduced precision.
    fn stored(&self, _tensor: &str) -> Option<Precision> {
        None
    }
    /// The layer: from `build.tensors` when given, else fresh from `build.rng`.
    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>>;
}

/// [`LayerConfig`]'s `name`, `input_size` and `set_input_size` for a description with the
/// fields `name: Option<String>` and `input_size: Option<usize>`, as every kind's has.
macro_rules! declared_name_and_input {
    () => {
        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }

        fn input_size(&self) -> Option<usize> {
            self.input_size
        }

        fn set_input_size(&mut self, input_size: usize) {
            self.input_size = Some(input_size);
        }
    };
}
pub(crate) use declared_name_and_input;

/// `field = value is out of range`, for [`LayerConfig::check`].
pub(crate) fn out_of_range(field: &str, value: f64) -> std::result::Result<(), String> {
    Err(format!("field `{field}` = {value} is out of range"))
}

/// The layer kinds, once: the [`LayerSpec`] enum and its dispatch to each kind's
/// [`LayerConfig`].
macro_rules! layer_kinds {
    ($($(#[$doc:meta])* $kind:ident($spec:ty),)*) => {
        /// One layer's description. Serialized with a `"type"` tag, as in the numpy design's
        /// `to_dict`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum LayerSpec {
            $($(#[$doc])* $kind($spec),)*
        }

        impl LayerSpec {
            /// The layer's type name as written in files.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(LayerSpec::$kind(_) => <$spec as LayerConfig>::KIND,)*
                }
            }

            /// The names of the tensors a layer of type `kind` holds (none for an unknown type).
            pub fn tensor_names(kind: &str) -> &'static [&'static str] {
                $(if kind == <$spec as LayerConfig>::KIND {
                    return <$spec as LayerConfig>::TENSORS;
                })*
                &[]
            }

            /// The name given in the file, if any.
            pub fn name(&self) -> Option<&str> {
                match self {
                    $(LayerSpec::$kind(s) => s.name(),)*
                }
            }

            /// The declared input size, if any.
            pub fn input_size(&self) -> Option<usize> {
                match self {
                    $(LayerSpec::$kind(s) => s.input_size(),)*
                }
            }

            /// Declares the input size.
            pub fn set_input_size(&mut self, input_size: usize) {
                match self {
                    $(LayerSpec::$kind(s) => s.set_input_size(input_size),)*
                }
            }

            /// The output size for a given input size.
            pub fn output_size(&self, input_size: usize) -> usize {
                match self {
                    $(LayerSpec::$kind(s) => s.output_size(input_size),)*
                }
            }

            /// The tensors a layer of this description holds, with their shapes, in saving
            /// order.
            pub fn tensor_shapes(&self, input_size: usize) -> Vec<(&'static str, Vec<usize>)> {
                match self {
                    $(LayerSpec::$kind(s) => s.tensor_shapes(input_size),)*
                }
            }

            /// How files store the layer's tensor `tensor`: `None` in the model's type, or in
            /// a reduced precision.
            pub fn stored(&self, tensor: &str) -> Option<Precision> {
                match self {
                    $(LayerSpec::$kind(s) => s.stored(tensor),)*
                }
            }

            /// Checks the layer's own settings (rates, epsilons).
            pub(crate) fn check(&self) -> std::result::Result<(), String> {
                match self {
                    $(LayerSpec::$kind(s) => s.check(),)*
                }
            }

            /// The layer this description makes.
            pub(crate) fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
                match self {
                    $(LayerSpec::$kind(s) => s.build(build),)*
                }
            }
        }
    };
}

layer_kinds! {
    /// A fully connected layer ([`Dense`]).
    Dense(DenseSpec),
    /// Inverted dropout ([`Dropout`]).
    Dropout(DropoutSpec),
    /// Batch normalisation over the batch ([`BatchNorm`]).
    BatchNorm(BatchNormSpec),
    /// Layer normalisation over each sample's features ([`LayerNorm`]).
    LayerNorm(LayerNormSpec),
    /// An activation on its own, after a layer other than Dense ([`ActivationLayer`]).
    Activation(ActivationSpec),
    /// A Dense layer in int8, for inference ([`QuantizedDense`]).
    Int8Dense(Int8DenseSpec),
    /// A Dense layer in bf16, for inference ([`QuantizedDense`]).
    Bf16Dense(Bf16DenseSpec),
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
    pub data: TensorData<'a, F>,
}

/// A saved tensor's values, in the model's type or in the reduced precision of a quantized
/// layer ([`crate::quant`]).
#[derive(Debug, Clone, Copy)]
pub enum TensorData<'a, F> {
    /// Values of the model's type.
    Float(&'a [F]),
    /// int8 codes.
    Int8(&'a [i8]),
    /// bfloat16 values, as their bits.
    Bf16(&'a [u16]),
}

impl<'a, F: Scalar> TensorData<'a, F> {
    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int8(v) => v.len(),
            TensorData::Bf16(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How the values are stored: `None` for the model's type.
    pub fn precision(&self) -> Option<Precision> {
        match self {
            TensorData::Float(_) => None,
            TensorData::Int8(_) => Some(Precision::Int8),
            TensorData::Bf16(_) => Some(Precision::Bf16),
        }
    }

    /// The values in the model's type (every int8 code and bfloat16 value is exact in it):
    /// borrowed when they are stored that way.
    pub fn values(&self) -> Cow<'a, [F]> {
        match *self {
            TensorData::Float(v) => Cow::Borrowed(v),
            TensorData::Int8(v) => Cow::Owned(v.iter().map(|&c| F::of(f64::from(c))).collect()),
            TensorData::Bf16(v) => Cow::Owned(
                v.iter()
                    .map(|&b| F::of(f64::from(crate::quant::bf16_to_f32(b))))
                    .collect(),
            ),
        }
    }
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

    /// Tells the layer, before a training forward, the model's step count and the place of the
    /// batch's first row in the step's global batch (0 unless a data-parallel run split that
    /// batch among ranks). Dropout seeds each row's mask from both, so a sample's mask is the
    /// same whichever rank computes it.
    fn set_step(&mut self, _step: u64, _first_row: u64) {}

    /// The fewest samples a training batch may hold (BatchNorm needs 2 for a variance). A
    /// data-parallel step gives no rank a smaller share than this.
    fn min_train_batch(&self) -> usize {
        1
    }

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

    /// Calls `f` on each tensor that training changes other than through gradients
    /// (BatchNorm's running statistics), mutably, in a fixed order: a data-parallel run averages
    /// them over the ranks. The default has none.
    fn visit_statistics_mut(&mut self, _f: &mut dyn FnMut(&mut [F])) {}

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
