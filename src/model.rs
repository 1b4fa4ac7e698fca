//! The `Sequential` model: layers chained one after another, trained on a loss.

use crate::buffer::Buffer;
use crate::layer::{BatchNorm, Dense, Dropout, Layer, LayerNorm, Mode, Param, Tensor};
use crate::loss::{Loss, Target};
use crate::metrics::argmax;
use crate::optim::Optimizer;
use crate::spec::{
    BatchNormSpec, DenseSpec, DropoutSpec, LayerNormSpec, LayerSpec, ModelSpec, Preprocessing,
};
use crate::{Activation, Error, Result, Scalar, gemm, kernels, threads};
use ndarray::{Array1, Array2, ArrayView2};
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
}

/// Builds a [`Sequential`] model layer by layer; see [`Sequential::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SequentialBuilder<F> {
    input_size: usize,
    layers: Vec<LayerSpec>,
    seed: u64,
    scalar: PhantomData<F>,
}

impl<F: Scalar> SequentialBuilder<F> {
    /// Appends a [`Dense`] layer with `units` outputs, named `dense_<index>`.
    pub fn dense(self, units: usize, activation: Activation) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            name: None,
            input_size: None,
            output_size: units,
            activation_function: activation,
        }))
    }

    /// Appends a [`Dense`] layer with a name of your choosing.
    pub fn dense_named(
        self,
        name: impl Into<String>,
        units: usize,
        activation: Activation,
    ) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            name: Some(name.into()),
            input_size: None,
            output_size: units,
            activation_function: activation,
        }))
    }

    /// Appends inverted [`Dropout`] with probability `rate`.
    pub fn dropout(self, rate: f64) -> Self {
        self.layer(LayerSpec::Dropout(DropoutSpec {
            name: None,
            input_size: None,
            rate,
            seed: None,
        }))
    }

    /// Appends [`BatchNorm`] with PyTorch's defaults (momentum 0.1, ε = 1e-5).
    pub fn batch_norm(self) -> Self {
        self.layer(LayerSpec::BatchNorm(BatchNormSpec {
            name: None,
            input_size: None,
            momentum: 0.1,
            eps: 1e-5,
        }))
    }

    /// Appends [`LayerNorm`] with ε = 1e-5.
    pub fn layer_norm(self) -> Self {
        self.layer(LayerSpec::LayerNorm(LayerNormSpec {
            name: None,
            input_size: None,
            eps: 1e-5,
        }))
    }

    /// Appends any layer by its description.
    pub fn layer(mut self, spec: LayerSpec) -> Self {
        self.layers.push(spec);
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
        let mut layers = self.layers.clone();
        if let Some(first) = layers.first_mut() {
            let input = Some(self.input_size);
            match first {
                LayerSpec::Dense(d) => d.input_size = input,
                LayerSpec::Dropout(d) => d.input_size = input,
                LayerSpec::BatchNorm(d) => d.input_size = input,
                LayerSpec::LayerNorm(d) => d.input_size = input,
            }
        }
        ModelSpec {
            seed: Some(self.seed),
            layers,
            preprocessing: None,
        }
    }

    /// Builds the model, initialising the layers in order from the seeded generator.
    pub fn build(self) -> Result<Sequential<F>> {
        Sequential::from_spec(&self.to_spec())
    }
}

/// Makes one layer from its checked description: fresh (`tensors` is `None`, weights drawn from
/// `rng`) or from saved tensors in the order of [`LayerSpec::tensor_shapes`].
fn build_layer<F: Scalar>(
    index: usize,
    name: String,
    input: usize,
    spec: LayerSpec,
    model_seed: u64,
    rng: &mut Xoshiro256PlusPlus,
    tensors: Option<Vec<Vec<F>>>,
) -> Result<Box<dyn Layer<F>>> {
    let mut tensors = tensors.map(|t| t.into_iter().map(Array1::from_vec));
    let mut next = || tensors.as_mut().and_then(|t| t.next());
    Ok(match spec {
        LayerSpec::Dense(d) => {
            let dense = match (next(), next()) {
                (Some(w), Some(b)) => {
                    let w = w
                        .into_shape_with_order((input, d.output_size))
                        .map_err(|e| {
                            Error::Config(format!("layer {index} ({name}) weights: {e}"))
                        })?;
                    Dense::from_weights(name, w, b, d.activation_function)?
                }
                _ => {
                    let dense = Dense::new(input, d.output_size, d.activation_function, rng)?
                        .with_name(name);
                    log::info!(
                        "initialised {} (Dense): {input} -> {}, {}, He normal, seed {model_seed}",
                        dense.name(),
                        d.output_size,
                        d.activation_function
                    );
                    dense
                }
            };
            Box::new(dense)
        }
        LayerSpec::Dropout(d) => {
            let seed = d.seed.unwrap_or_else(|| {
                model_seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            });
            Box::new(Dropout::new(name, input, d.rate, seed)?)
        }
        LayerSpec::BatchNorm(b) => Box::new(match (next(), next(), next(), next()) {
            (Some(g), Some(be), Some(m), Some(v)) => {
                BatchNorm::from_tensors(name, g, be, m, v, b.momentum, b.eps)
            }
            _ => BatchNorm::new(name, input, b.momentum, b.eps),
        }),
        LayerSpec::LayerNorm(l) => Box::new(match (next(), next()) {
            (Some(g), Some(be)) => LayerNorm::from_tensors(name, g, be, l.eps),
            _ => LayerNorm::new(name, input, l.eps),
        }),
    })
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
    /// seeded with the description's seed (or [`DEFAULT_SEED`]): the numpy design's `from_dict`.
    pub fn from_spec(spec: &ModelSpec) -> Result<Self> {
        let resolved = spec.resolve()?;
        let seed = spec.seed.unwrap_or(DEFAULT_SEED);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let layers = resolved
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, (name, input, layer))| {
                build_layer(i, name, input, layer, seed, &mut rng, None)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Sequential::from_layers(resolved.input_size, layers)?;
        model.preprocessing = spec.preprocessing.clone();
        Ok(model)
    }

    /// A model from its description and saved tensors: `tensors[layer][k]` holds the values of
    /// the `k`-th tensor of [`LayerSpec::tensor_shapes`], row-major. Lengths are checked
    /// against the description before any layer is made.
    pub(crate) fn from_tensors(spec: &ModelSpec, tensors: LayerTensors<F>) -> Result<Self> {
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
                if !kernels::all_finite(v) {
                    let p = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
                    return Err(bad(format!("{tensor} value {p} is not finite")));
                }
            }
            let seed = spec.seed.unwrap_or(DEFAULT_SEED);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            layers.push(build_layer(
                i,
                name,
                input,
                layer,
                seed,
                &mut rng,
                Some(values),
            )?);
        }
        let mut model = Sequential::from_layers(resolved.input_size, layers)?;
        model.preprocessing = spec.preprocessing.clone();
        Ok(model)
    }

    /// The model's description (the numpy design's `to_dict`); [`from_spec`](Self::from_spec) of it
    /// gives a model of the same architecture with fresh weights.
    pub fn to_spec(&self) -> ModelSpec {
        ModelSpec {
            seed: None,
            layers: self.layers.iter().map(|l| l.to_spec()).collect(),
            preprocessing: self.preprocessing.clone(),
        }
    }

    /// The preprocessing kept with the model (standardisation, class names), if any.
    pub fn preprocessing(&self) -> Option<&Preprocessing> {
        self.preprocessing.as_ref()
    }

    /// Keeps `preprocessing` with the model; it is saved in every format.
    pub fn set_preprocessing(&mut self, preprocessing: Option<Preprocessing>) -> Result<()> {
        let mut spec = self.to_spec();
        spec.preprocessing = preprocessing;
        spec.resolve()?;
        self.preprocessing = spec.preprocessing;
        Ok(())
    }

    /// Replaces every layer's tensors with `tensors` (as [`tensors`](Self::tensors) gave them),
    /// keeping the step count.
    pub(crate) fn restore_tensors(&mut self, tensors: LayerTensors<F>) -> Result<()> {
        let steps = self.steps;
        *self = Sequential::from_tensors(&self.to_spec(), tensors)?;
        self.steps = steps;
        Ok(())
    }

    /// Every layer's tensors, copied, in the order of [`LayerSpec::tensor_shapes`].
    pub(crate) fn tensors(&self) -> LayerTensors<F> {
        self.tensor_views()
            .into_iter()
            .map(|layer| layer.into_iter().map(|t| t.data.to_vec()).collect())
            .collect()
    }

    /// Every layer's tensors, borrowed: `[layer][tensor]` in the order of
    /// [`LayerSpec::tensor_shapes`]. Savers write from these without copying.
    pub(crate) fn tensor_views(&self) -> Vec<Vec<Tensor<'_, F>>> {
        self.layers
            .iter()
            .map(|l| {
                let mut out = Vec::new();
                l.visit_tensors(&mut |t| out.push(t));
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
            grad: Buffer::default(),
            steps: 0,
            preprocessing: None,
            layers,
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
    pub(crate) fn forks(&self, batch: usize) -> bool {
        self.layers.iter().any(|l| {
            let (inputs, outputs) = (l.input_size(), l.output_size());
            kernels::parallel(inputs * outputs)
                || kernels::parallel(batch * inputs.max(outputs))
                || gemm::splits(batch * inputs * outputs)
        })
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
        let y = y.into();
        let parallel = self.forks(x.nrows());
        threads::on_pool(parallel, || self.gradients(x, y, loss))
    }

    /// [`compute_gradients`](Self::compute_gradients) on the calling thread.
    fn gradients(&mut self, x: ArrayView2<'_, F>, y: Target<'_, F>, loss: &Loss) -> Result<F> {
        self.backpropagate(x, y, loss, None)
    }

    /// Forward, loss and backward. With `fold = Some(lr)` (plain SGD), each layer may fold its
    /// update into its weight-gradient product ([`Layer::backward_folding_sgd`]), which
    /// [`update`](Self::update) then runs; nothing is updated here either way.
    fn backpropagate(
        &mut self,
        x: ArrayView2<'_, F>,
        y: Target<'_, F>,
        loss: &Loss,
        fold: Option<F>,
    ) -> Result<F> {
        let step = Some(self.steps);
        let input_max = self.check_input(&x, step)?;
        for layer in &mut self.layers {
            layer.set_step(self.steps);
        }
        self.forward(x, Mode::Train)?;

        let last = self.layers.last().expect("a model has layers");
        let out = last.output();
        self.grad.resize(out.nrows(), out.ncols());
        let value = loss.loss_and_grad(out, y, self.grad.view_mut())?;
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
            let (layer, input, grad) = in_chain(&mut self.layers, i, x, self.grad.view());
            let folded = match fold {
                None => {
                    layer.backward(input, grad, i > 0)?;
                    false
                }
                Some(lr) => {
                    let input_max = (i == 0).then_some(input_max);
                    layer.backward_folding_sgd(input, grad, i > 0, lr, input_max)?
                }
            };
            if folded {
                // The layer checked what it computed, and folded only what is sure to be finite.
                continue;
            }
            // A finite loss can still overflow in backward; never hand such a gradient on.
            // Checked now, while the layer's gradients are still in cache.
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

    /// Applies the gradients of the latest [`compute_gradients`](Self::compute_gradients)
    /// with `optimizer` (PyTorch's `optimizer.step()`), and counts a step.
    pub fn apply_gradients<O: Optimizer + ?Sized>(&mut self, optimizer: &mut O) -> Result<()> {
        let parallel = self.forks(0);
        threads::on_pool(parallel, || self.update(optimizer, None))
    }

    /// [`apply_gradients`](Self::apply_gradients) on the calling thread. After a backward with
    /// `fold = Some(lr)` ([`backpropagate`](Self::backpropagate)), `folded` is the batch `x` and
    /// that `lr`: each layer applies the update it folded, if any ([`Layer::apply_folded_sgd`]),
    /// and the parameters of the others go through the optimizer. Counts a step.
    fn update<O: Optimizer + ?Sized>(
        &mut self,
        optimizer: &mut O,
        folded: Option<(ArrayView2<'_, F>, F)>,
    ) -> Result<()> {
        optimizer.begin_step();
        let mut index = 0;
        for i in 0..self.layers.len() {
            let applied = match folded {
                Some((x, lr)) => {
                    let (layer, input, grad) = in_chain(&mut self.layers, i, x, self.grad.view());
                    layer.apply_folded_sgd(input, grad, lr)?
                }
                None => false,
            };
            let layer = &mut self.layers[i];
            let mut result = Ok(());
            layer.visit_params(&mut |p| {
                if result.is_ok() && !applied {
                    result = F::update(optimizer, index, p.value, p.grad);
                }
                index += 1;
            });
            result?;
        }
        self.steps += 1;
        Ok(())
    }

    /// Scales all gradients so that their global L2 norm is at most `max_norm`, as PyTorch's
    /// `clip_grad_norm_` (scale `max_norm / (norm + 1e-6)` when below 1). Returns the norm
    /// before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Result<f64> {
        if !(max_norm > 0.0 && max_norm.is_finite()) {
            return Err(Error::Config(format!(
                "max_norm must be finite and positive, got {max_norm}"
            )));
        }
        let mut sum_sq = 0.0;
        for layer in &mut self.layers {
            layer.visit_grads_mut(&mut |g| sum_sq += kernels::sum_map(g, |v| v * v).as_f64());
        }
        let norm = sum_sq.sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let c = F::of(coef);
            for layer in &mut self.layers {
                layer.visit_grads_mut(&mut |g| kernels::map_inplace(g, |v| v * c));
            }
        }
        Ok(norm)
    }

    /// Clamps every gradient element to `[-clip, clip]` (PyTorch's `clip_grad_value_`).
    pub fn clip_grad_value(&mut self, clip: f64) -> Result<()> {
        if !(clip > 0.0 && clip.is_finite()) {
            return Err(Error::Config(format!(
                "clip value must be finite and positive, got {clip}"
            )));
        }
        let c = F::of(clip);
        for layer in &mut self.layers {
            layer.visit_grads_mut(&mut |g| kernels::map_inplace(g, |v| v.max(-c).min(c)));
        }
        Ok(())
    }

    /// One training step: forward, loss, backward and an optimizer update. Returns the batch's
    /// mean loss (before the update).
    ///
    /// A non-finite input or loss is an error naming the step and, for the loss, the first layer
    /// whose output went non-finite; the weights are left as they were before the step.
    ///
    /// With plain SGD ([`Optimizer::plain_sgd`]: no momentum, no weight decay) a [`Dense`] layer
    /// folds its weight update into the product that would compute its weight gradient:
    /// `W ← W − (lr/B)·xᵀδ` is one GEMM into `W`, with no gradient written, checked or read
    /// back. It folds only when a bound from the largest input and `δ` shows that the product is
    /// finite; otherwise it computes and checks the gradient as usual. The weights come out as
    /// with [`compute_gradients`](Self::compute_gradients) and
    /// [`apply_gradients`](Self::apply_gradients) up to rounding (the two scales are applied as
    /// one), and those two remain the way to look at or clip gradients: after a folded step,
    /// [`Dense::weight_grad`] still holds an earlier gradient.
    ///
    /// With more than one thread, a step large enough to be split over them runs on rayon's
    /// pool while the caller waits: it enters the pool once, rather than at each split product
    /// and parallel kernel. Entering from outside goes through rayon's queue, which allocates
    /// a block every 63 entries; a loop that runs on the pool itself (inside `rayon::scope`,
    /// say) allocates nothing in its steps.
    pub fn train_step<'t, O: Optimizer + ?Sized>(
        &mut self,
        x: ArrayView2<'_, F>,
        y: impl Into<Target<'t, F>>,
        loss: &Loss,
        optimizer: &mut O,
    ) -> Result<F> {
        let y = y.into();
        let parallel = self.forks(x.nrows());
        let value = threads::on_pool(parallel, || self.step(x, y, loss, optimizer))?;
        log::debug!(
            "step {}: {loss} loss {value} on a batch of {}",
            self.steps,
            x.nrows()
        );
        Ok(value)
    }

    /// [`train_step`](Self::train_step) on the calling thread (without its log line).
    pub(crate) fn step<O: Optimizer + ?Sized>(
        &mut self,
        x: ArrayView2<'_, F>,
        y: Target<'_, F>,
        loss: &Loss,
        optimizer: &mut O,
    ) -> Result<F> {
        // With plain SGD, layers may fold their updates into their products.
        let fold = optimizer.plain_sgd().map(F::of);
        let value = self.backpropagate(x, y, loss, fold)?;
        self.update(optimizer, fold.map(|lr| (x, lr)))?;
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
        self.check_input_shape(&x)?;
        let parallel = self.forks(x.nrows());
        threads::on_pool(parallel, || self.infer(x, workspace))
    }

    /// [`predict_with`](Self::predict_with) on the calling thread, after the input's shape
    /// check. The first layer checks the input's values as it goes when it can
    /// ([`Layer::infer_first`]); otherwise, or when it found something, the input is scanned.
    fn infer<'w>(
        &self,
        x: ArrayView2<'_, F>,
        workspace: &'w mut Workspace<F>,
    ) -> Result<ArrayView2<'w, F>> {
        let batch = x.nrows();
        let Workspace { a, b } = workspace;
        let (mut src, mut dst) = (a, b);
        for (i, layer) in self.layers.iter().enumerate() {
            dst.resize(batch, layer.output_size());
            if i == 0 {
                if layer.infer_first(x, dst.view_mut())? != Some(true) {
                    self.check_input(&x, None)?;
                }
            } else {
                layer.infer(src.view(), dst.view_mut())?;
            }
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

/// Layer `i` of a chain, with its input (`x` for the first layer, else the previous layer's
/// output) and the gradient for its output (`loss_grad` for the last layer, else the next
/// layer's input gradient).
fn in_chain<'a, F: Scalar>(
    layers: &'a mut [Box<dyn Layer<F>>],
    i: usize,
    x: ArrayView2<'a, F>,
    loss_grad: ArrayView2<'a, F>,
) -> (&'a mut dyn Layer<F>, ArrayView2<'a, F>, ArrayView2<'a, F>) {
    let (before, rest) = layers.split_at_mut(i);
    let (layer, after) = rest.split_first_mut().expect("index in range");
    let input = before.last().map_or(x, |l| l.output());
    let grad = after.first().map_or(loss_grad, |l| l.input_grad());
    (layer.as_mut(), input, grad)
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
