//! The `Sequential` model: layers chained one after another, trained on a loss.

mod builder;
mod description;
pub(crate) use description::check_tensors;
mod predict;
mod quantize;
mod step;
pub(crate) use step::Share;

pub use builder::SequentialBuilder;
pub use predict::Workspace;

use crate::buffer::Buffer;
use crate::layer::{Layer, Mode, Param, Tensor};
use crate::loss::{Loss, Target};
use crate::metrics::argmax;
use crate::optim::Optimizer;
use crate::spec::{
    ActivationSpec, BatchNormSpec, DenseSpec, DropoutSpec, LayerNormSpec, LayerSpec, ModelSpec,
    Preprocessing,
};
use crate::{Activation, Error, Result, Scalar, gemm, kernels, threads};
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::fmt;
use std::marker::PhantomData;

/// Every layer's saved tensors: `[layer][tensor]` values, row-major, in the order of
/// [`LayerSpec::tensor_shapes`].
pub(crate) type LayerTensors<F> = Vec<Vec<Vec<F>>>;

/// The seed used when a builder is given none: models are reproducible by default.
pub const DEFAULT_SEED: u64 = 0;

/// A stack of layers applied in order.
///
/// Training ([`train_step`](Self::train_step)) uses buffers owned by the layers and the model:
/// after the first batch of a given size it allocates nothing. Inference
/// ([`predict_with`](Self::predict_with)) takes `&self` and a caller-owned [`Workspace`], so a
/// trained model behind an `Arc` serves any number of threads without locks.
///
/// ```
/// use crank::{Activation, Loss, Sequential, Sgd};
/// use ndarray::array;
///
/// let mut model = Sequential::<f32>::builder(2)
///     .dense(8, Activation::Tanh)
///     .dense(1, Activation::Identity)
///     .seed(7)
///     .build()?;
/// let x = array![[0.0f32, 1.0], [1.0, 0.0]];
/// let y = array![[1.0f32], [1.0]];
/// let mut sgd = Sgd::new(0.1)?;
/// let before = model.train_step(x.view(), &y, &Loss::Mse, &mut sgd)?;
/// let after = model.evaluate(x.view(), &y, &Loss::Mse)?;
/// assert!(after < before);
/// # Ok::<(), crank::Error>(())
/// ```
#[derive(Debug)]
pub struct Sequential<F: Scalar = f32> {
    input_size: usize,
    layers: Vec<Box<dyn Layer<F>>>,
    /// Gradient of the loss for the last layer's output.
    grad: Buffer<F>,
    steps: u64,
    preprocessing: Option<Preprocessing>,
    /// The layers' sizes that [`forks`](Self::forks) asks about, taken once: the most
    /// `inputs · outputs` of any layer, and the most of its inputs or outputs.
    largest: (usize, usize),
}

impl<F: Scalar> Sequential<F> {
    /// A model from layers already made; each layer's input size must equal the previous
    /// layer's output size (or `input_size` for the first).
    pub fn from_layers(input_size: usize, layers: Vec<Box<dyn Layer<F>>>) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::Config("a model needs at least one layer".into()));
        }
        let mut width = input_size;
        for (i, layer) in layers.iter().enumerate() {
            if layer.input_size() != width {
                return Err(Error::shape(
                    format!("layer {i} ({}) input size", layer.name()),
                    width.to_string(),
                    layer.input_size().to_string(),
                ));
            }
            width = layer.output_size();
        }
        let largest = layers.iter().fold((0, 0), |(io, width), l| {
            let (i, o) = (l.input_size(), l.output_size());
            (io.max(i * o), width.max(i.max(o)))
        });
        Ok(Sequential {
            input_size,
            grad: Buffer::default(),
            steps: 0,
            preprocessing: None,
            layers,
            largest,
        })
    }

    /// Number of input features.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Number of outputs.
    pub fn output_size(&self) -> usize {
        self.layers
            .last()
            .map_or(self.input_size, |l| l.output_size())
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer<F>>] {
        &self.layers
    }

    /// The model's layers, first to last, taken out of the model.
    pub fn into_layers(self) -> Vec<Box<dyn Layer<F>>> {
        self.layers
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.num_params()).sum()
    }

    /// Number of training steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Sets the step count (when resuming from a checkpoint).
    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }

    /// Whether a pass over a batch of `batch` rows (0: the update alone) forks over rayon's
    /// threads somewhere (a kernel over a layer's parameters or activations, or a split
    /// product), and so is worth running on the pool ([`threads::on_pool`]). Asks the kernels
    /// and the GEMM their own rules.
    ///
    /// Each rule grows with its argument, so some layer forks exactly when the largest sizes
    /// do, which were taken once, when the model was made: a one-sample prediction asks this
    /// on every call.
    pub(crate) fn forks(&self, batch: usize) -> bool {
        let (io, width) = self.largest;
        kernels::parallel(io) || kernels::parallel(batch * width) || gemm::splits(batch * io)
    }

    /// Checks the input's width and that it is finite; returns its largest magnitude.
    fn check_input(&self, x: &ArrayView2<'_, F>, step: Option<u64>) -> Result<F> {
        self.check_input_shape(x)?;
        let Some(max) = max_abs(x) else {
            let p = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let cols = x.ncols();
            return Err(Error::NonFinite {
                what: format!("input at row {}, column {}", p / cols, p % cols),
                step,
            });
        };
        Ok(max)
    }

    /// The shape half of [`check_input`](Self::check_input).
    fn check_input_shape(&self, x: &ArrayView2<'_, F>) -> Result<()> {
        if x.ncols() != self.input_size || x.nrows() == 0 {
            let at = format!("layer 0 ({}) input", self.layers[0].name());
            return Err(Error::shape(
                at,
                format!("(batch >= 1, {})", self.input_size),
                format!("{:?}", x.dim()),
            ));
        }
        Ok(())
    }
}

/// The largest magnitude in `a`, or `None` when some element is not finite.
fn max_abs<F: Scalar>(a: &ArrayView2<'_, F>) -> Option<F> {
    match a.as_slice() {
        Some(s) => kernels::max_abs(s),
        None => a
            .iter()
            .try_fold(F::zero(), |m, &v| v.is_finite().then(|| m.max(v.abs()))),
    }
}

impl<F: Scalar> fmt::Display for Sequential<F> {
    /// A one-line-per-layer summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = match self.precision() {
            Some(p) => format!(", {p} weights"),
            None => String::new(),
        };
        writeln!(
            f,
            "Sequential<{}>: {} -> {}, {} layers, {} parameters{precision}",
            F::NAME,
            self.input_size,
            self.output_size(),
            self.layers.len(),
            self.num_params()
        )?;
        writeln!(
            f,
            "  {:>3}  {:<16} {:<8} {:>7} {:>7}  {:<14} {:>10}",
            "#", "name", "type", "in", "out", "activation", "params"
        )?;
        for (i, l) in self.layers.iter().enumerate() {
            writeln!(
                f,
                "  {:>3}  {:<16} {:<8} {:>7} {:>7}  {:<14} {:>10}",
                i,
                l.name(),
                l.kind(),
                l.input_size(),
                l.output_size(),
                l.describe(),
                l.num_params()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes taken once answer as asking every layer would: some layer's parameters or
    /// activations are worth a parallel kernel, or its product splits.
    #[test]
    fn forks_asks_the_largest_layer_as_every_layer_would() {
        let model = Sequential::<f32>::builder(2000)
            .dense(12, Activation::Relu)
            .dense(700, Activation::Relu)
            .dense(2, Activation::Identity)
            .seed(1)
            .build()
            .unwrap();
        let each_layer = |batch: usize| {
            model.layers.iter().any(|l| {
                let (i, o) = (l.input_size(), l.output_size());
                kernels::parallel(i * o)
                    || kernels::parallel(batch * i.max(o))
                    || gemm::splits(batch * i * o)
            })
        };
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for batch in [0, 1, 2, 3, 5, 8, 11, 16, 40, 47, 100, 1000, 5000] {
            assert_eq!(
                model.forks(batch),
                each_layer(batch),
                "batch {batch}, 1 thread"
            );
            threads.install(|| {
                assert_eq!(
                    model.forks(batch),
                    each_layer(batch),
                    "batch {batch}, 2 threads"
                )
            });
        }
        // Both answers occur on two threads, so the comparison above has teeth.
        threads.install(|| assert!(!model.forks(1) && model.forks(5000)));
    }
}
