//! The `Sequential` model: layers chained one after another, trained on a loss.

use crate::buffer::Buffer;
use crate::layer::{Dense, Layer, Mode, Param};
use crate::loss::{Loss, Target};
use crate::optim::Optimizer;
use crate::spec::{DenseSpec, LayerSpec, ModelSpec};
use crate::{Activation, Error, Result, Scalar, kernels};
use ndarray::{Array1, Array2, ArrayView2};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use std::fmt;
use std::marker::PhantomData;

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
}

/// Builds a [`Sequential`] model layer by layer; see [`Sequential::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SequentialBuilder<F> {
    input_size: usize,
    layers: Vec<(Option<String>, usize, Activation)>,
    seed: u64,
    scalar: PhantomData<F>,
}

impl<F: Scalar> SequentialBuilder<F> {
    /// Appends a [`Dense`] layer with `units` outputs, named `dense_<index>`.
    pub fn dense(mut self, units: usize, activation: Activation) -> Self {
        self.layers.push((None, units, activation));
        self
    }

    /// Appends a [`Dense`] layer with a name of your choosing.
    pub fn dense_named(
        mut self,
        name: impl Into<String>,
        units: usize,
        activation: Activation,
    ) -> Self {
        self.layers.push((Some(name.into()), units, activation));
        self
    }

    /// The seed of the `Xoshiro256PlusPlus` generator that initialises the weights
    /// (default [`DEFAULT_SEED`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The description of the model this builder makes.
    pub fn to_spec(&self) -> ModelSpec {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, (name, units, activation))| {
                LayerSpec::Dense(DenseSpec {
                    name: name.clone(),
                    input_size: (i == 0).then_some(self.input_size),
                    output_size: *units,
                    activation_function: *activation,
                })
            })
            .collect();
        ModelSpec {
            seed: Some(self.seed),
            layers,
        }
    }

    /// Builds the model, initialising the layers in order from the seeded generator.
    pub fn build(self) -> Result<Sequential<F>> {
        Sequential::from_spec(&self.to_spec())
    }
}

impl<F: Scalar> Sequential<F> {
    /// Starts a model whose input has `input_size` features.
    pub fn builder(input_size: usize) -> SequentialBuilder<F> {
        SequentialBuilder {
            input_size,
            layers: Vec::new(),
            seed: DEFAULT_SEED,
            scalar: PhantomData,
        }
    }

    /// A model from its description, with fresh weights drawn from a `Xoshiro256PlusPlus`
    /// seeded with the description's seed (or [`DEFAULT_SEED`]): the seed's `from_dict`.
    pub fn from_spec(spec: &ModelSpec) -> Result<Self> {
        let resolved = spec.resolve()?;
        let seed = spec.seed.unwrap_or(DEFAULT_SEED);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut layers: Vec<Box<dyn Layer<F>>> = Vec::with_capacity(resolved.layers.len());
        for (name, input, layer) in resolved.layers {
            let built: Box<dyn Layer<F>> = match layer {
                LayerSpec::Dense(d) => {
                    let dense = Dense::new(input, d.output_size, d.activation_function, &mut rng)?
                        .with_name(name);
                    log::info!(
                        "initialised {} (Dense): {input} -> {}, {}, He normal, seed {seed}",
                        dense.name(),
                        d.output_size,
                        d.activation_function
                    );
                    Box::new(dense)
                }
            };
            layers.push(built);
        }
        Sequential::from_layers(resolved.input_size, layers)
    }

    /// A model from its description and saved tensors: `tensors[layer][k]` holds the values of
    /// the `k`-th tensor of [`LayerSpec::tensor_shapes`], row-major. Lengths are checked
    /// against the description before any layer is made.
    pub(crate) fn from_tensors(spec: &ModelSpec, tensors: Vec<Vec<Vec<F>>>) -> Result<Self> {
        let resolved = spec.resolve()?;
        if tensors.len() != resolved.layers.len() {
            return Err(Error::Spec {
                at: "model".into(),
                reason: format!(
                    "{} layers described but tensors for {}",
                    resolved.layers.len(),
                    tensors.len()
                ),
            });
        }
        let mut layers: Vec<Box<dyn Layer<F>>> = Vec::with_capacity(tensors.len());
        for (i, ((name, input, layer), values)) in
            resolved.layers.into_iter().zip(tensors).enumerate()
        {
            let shapes = layer.tensor_shapes(input);
            let bad = |reason: String| Error::Spec {
                at: format!("layer {i} ({name})"),
                reason,
            };
            if values.len() != shapes.len() {
                return Err(bad(format!(
                    "{} tensors given, {} expected",
                    values.len(),
                    shapes.len()
                )));
            }
            for ((tensor, shape), v) in shapes.iter().zip(&values) {
                let want: usize = shape.iter().product();
                if v.len() != want {
                    return Err(bad(format!(
                        "{tensor} hold {} values, shape {shape:?} needs {want}",
                        v.len()
                    )));
                }
                if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                    return Err(bad(format!("{tensor} value {p} is not finite")));
                }
            }
            let mut values = values.into_iter();
            let built: Box<dyn Layer<F>> = match layer {
                LayerSpec::Dense(d) => {
                    let (w, b) = (
                        values.next().unwrap_or_default(),
                        values.next().unwrap_or_default(),
                    );
                    let w = Array2::from_shape_vec((input, d.output_size), w)
                        .map_err(|e| bad(e.to_string()))?;
                    Box::new(Dense::from_weights(
                        name,
                        w,
                        Array1::from_vec(b),
                        d.activation_function,
                    )?)
                }
            };
            layers.push(built);
        }
        Sequential::from_layers(resolved.input_size, layers)
    }

    /// The model's description (the seed's `to_dict`); [`from_spec`](Self::from_spec) of it
    /// gives a model of the same architecture with fresh weights.
    pub fn to_spec(&self) -> ModelSpec {
        ModelSpec {
            seed: None,
            layers: self.layers.iter().map(|l| l.to_spec()).collect(),
        }
    }

    /// Every layer's tensors, in the order of [`LayerSpec::tensor_shapes`].
    pub(crate) fn tensors(&self) -> Vec<Vec<Vec<F>>> {
        self.layers
            .iter()
            .map(|l| {
                let mut out = Vec::new();
                l.visit_tensors(&mut |t| out.push(t.data.to_vec()));
                out
            })
            .collect()
    }

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
        Ok(Sequential {
            input_size,
            layers,
            grad: Buffer::default(),
            steps: 0,
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

    fn check_input(&self, x: &ArrayView2<'_, F>, step: Option<u64>) -> Result<()> {
        if x.ncols() != self.input_size || x.nrows() == 0 {
            let at = format!("layer 0 ({}) input", self.layers[0].name());
            return Err(Error::shape(
                at,
                format!("(batch >= 1, {})", self.input_size),
                format!("{:?}", x.dim()),
            ));
        }
        let finite = match x.as_slice() {
            Some(s) => kernels::all_finite(s),
            None => x.iter().all(|v| v.is_finite()),
        };
        if !finite {
            let p = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
            let cols = x.ncols();
            return Err(Error::NonFinite {
                what: format!("input at row {}, column {}", p / cols, p % cols),
                step,
            });
        }
        Ok(())
    }

    /// Runs every layer forward on `x` in training buffers.
    fn forward(&mut self, x: ArrayView2<'_, F>, mode: Mode) -> Result<()> {
        for i in 0..self.layers.len() {
            let (before, rest) = self.layers.split_at_mut(i);
            let input = before.last().map_or(x, |l| l.output());
            rest[0].forward(input, mode)?;
        }
        Ok(())
    }

    /// Forward, loss and backward on one batch, leaving the gradients in the layers without
    /// updating anything (PyTorch's `loss.backward()`). Returns the batch's mean loss.
    pub fn compute_gradients<'t>(
        &mut self,
        x: ArrayView2<'_, F>,
        y: impl Into<Target<'t, F>>,
        loss: &Loss,
    ) -> Result<F> {
        let step = Some(self.steps);
        self.check_input(&x, step)?;
        self.forward(x, Mode::Train)?;

        let last = self.layers.last().expect("a model has layers");
        let out = last.output();
        self.grad.resize(out.nrows(), out.ncols());
        let value = loss.loss_and_grad(out, y.into(), self.grad.view_mut())?;
        if !value.is_finite() {
            let what = match self
                .layers
                .iter()
                .position(|l| !l.output().iter().all(|v| v.is_finite()))
            {
                Some(i) => format!("output of layer {i} ({})", self.layers[i].name()),
                None => format!("{loss} loss"),
            };
            return Err(Error::NonFinite { what, step });
        }

        for i in (0..self.layers.len()).rev() {
            let (before, rest) = self.layers.split_at_mut(i);
            let (layer, after) = rest.split_first_mut().expect("index in range");
            let input = before.last().map_or(x, |l| l.output());
            let grad = after
                .first()
                .map_or_else(|| self.grad.view(), |l| l.input_grad());
            layer.backward(input, grad, i > 0)?;
        }
        // A finite loss can still overflow in backward; never hand such a gradient on.
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let mut bad = None;
            layer.visit_params(&mut |p| {
                if bad.is_none() && !kernels::all_finite(p.grad) {
                    bad = Some(p.name);
                }
            });
            if let Some(param) = bad {
                let what = format!("gradient of layer {i} ({}) {param}", layer.name());
                return Err(Error::NonFinite { what, step });
            }
        }
        Ok(value)
    }

    /// Calls `f` on every parameter of every layer with a stable index, in layer order.
    pub fn visit_params(&mut self, mut f: impl FnMut(usize, Param<'_, F>)) {
        let mut index = 0;
        for layer in &mut self.layers {
            layer.visit_params(&mut |p| {
                f(index, p);
                index += 1;
            });
        }
    }

    /// One training step: forward, loss, backward and an optimizer update. Returns the batch's
    /// mean loss (before the update).
    ///
    /// A non-finite input or loss is an error naming the step and, for the loss, the first layer
    /// whose output went non-finite; the weights are left as they were before the step.
    pub fn train_step<'t, O: Optimizer + ?Sized>(
        &mut self,
        x: ArrayView2<'_, F>,
        y: impl Into<Target<'t, F>>,
        loss: &Loss,
        optimizer: &mut O,
    ) -> Result<F> {
        let value = self.compute_gradients(x, y, loss)?;
        optimizer.begin_step();
        let mut result = Ok(());
        self.visit_params(|i, p| {
            if result.is_ok() {
                result = F::update(optimizer, i, p.value, p.grad);
            }
        });
        result?;
        log::debug!(
            "step {}: {loss} loss {value} on a batch of {}",
            self.steps,
            x.nrows()
        );
        self.steps += 1;
        Ok(value)
    }

    /// A [`Workspace`] for [`predict_with`](Self::predict_with).
    pub fn workspace(&self) -> Workspace<F> {
        Workspace::default()
    }

    /// Inference on a batch `(batch, input_size)` using `workspace` for every intermediate
    /// result: once the workspace has seen a batch this large, nothing is allocated. Takes
    /// `&self`, so any number of threads can predict at once, each with its own workspace.
    pub fn predict_with<'w>(
        &self,
        x: ArrayView2<'_, F>,
        workspace: &'w mut Workspace<F>,
    ) -> Result<ArrayView2<'w, F>> {
        self.check_input(&x, None)?;
        let batch = x.nrows();
        let Workspace { a, b } = workspace;
        let (mut src, mut dst) = (a, b);
        for (i, layer) in self.layers.iter().enumerate() {
            dst.resize(batch, layer.output_size());
            let input = if i == 0 { x } else { src.view() };
            layer.infer(input, dst.view_mut())?;
            std::mem::swap(&mut src, &mut dst);
        }
        let out: &'w Buffer<F> = src;
        Ok(out.view())
    }

    /// Inference on a batch, returning a new array (see [`predict_with`](Self::predict_with)
    /// for the allocation-free form).
    pub fn predict(&self, x: ArrayView2<'_, F>) -> Result<Array2<F>> {
        let mut ws = Workspace::default();
        Ok(self.predict_with(x, &mut ws)?.to_owned())
    }

    /// The mean loss on a data set, without changing the model.
    pub fn evaluate<'t>(
        &self,
        x: ArrayView2<'_, F>,
        y: impl Into<Target<'t, F>>,
        loss: &Loss,
    ) -> Result<F> {
        let mut ws = Workspace::default();
        let out = self.predict_with(x, &mut ws)?;
        loss.loss(out, y.into())
    }

    /// The fraction of samples whose largest output is at the index of their class.
    pub fn accuracy(&self, x: ArrayView2<'_, F>, classes: &[usize]) -> Result<f64> {
        if classes.len() != x.nrows() {
            return Err(Error::shape(
                "accuracy labels",
                format!("{} labels", x.nrows()),
                format!("{}", classes.len()),
            ));
        }
        let mut ws = Workspace::default();
        let out = self.predict_with(x, &mut ws)?;
        let hits = out
            .rows()
            .into_iter()
            .zip(classes)
            .filter(|(row, c)| argmax(row.iter().copied()) == Some(**c))
            .count();
        Ok(hits as f64 / classes.len() as f64)
    }
}

/// Index of the largest value (the first one on ties); `None` when empty.
pub fn argmax<F: Scalar>(values: impl IntoIterator<Item = F>) -> Option<usize> {
    let mut best: Option<(usize, F)> = None;
    for (i, v) in values.into_iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Scratch space for inference: two buffers that the layers' outputs alternate between. Keep
/// one per thread (in a `thread_local!`, a pool, or a worker's state) and reuse it.
#[derive(Debug, Default, Clone)]
pub struct Workspace<F> {
    a: Buffer<F>,
    b: Buffer<F>,
}

impl<F: Scalar> Workspace<F> {
    /// An empty workspace; it grows to the largest batch it is used with.
    pub fn new() -> Self {
        Workspace {
            a: Buffer::default(),
            b: Buffer::default(),
        }
    }
}

impl<F: Scalar> fmt::Display for Sequential<F> {
    /// A one-line-per-layer summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Sequential<{}>: {} -> {}, {} layers, {} parameters",
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
