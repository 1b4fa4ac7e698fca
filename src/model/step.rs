//! A training step: forward, backward, the update, clipping.

use super::*;

impl<F: Scalar> Sequential<F> {
    /// Runs every layer forward on `x` in training buffers.
    pub(super) fn forward(&mut self, x: ArrayView2<'_, F>, mode: Mode) -> Result<()> {
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
        threads::on_pool(parallel, || self.gradients(x, y, loss, Share::whole()))
    }

    /// [`compute_gradients`](Self::compute_gradients) on the calling thread, for a batch that
    /// is `share` of the step's global batch ([`Share::whole`] but in a data-parallel run).
    pub(crate) fn gradients(
        &mut self,
        x: ArrayView2<'_, F>,
        y: Target<'_, F>,
        loss: &Loss,
        share: Share<F>,
    ) -> Result<F> {
        self.backpropagate(x, y, loss, None, share)
    }

    /// Forward, loss and backward of a batch that is `share` of the step's batch. With
    /// `fold = Some(lr)` (plain SGD), each layer may fold its
    /// update into its weight-gradient product ([`Layer::backward_folding_sgd`]), which
    /// [`update`](Self::update) then runs; nothing is updated here either way.
    pub(super) fn backpropagate(
        &mut self,
        x: ArrayView2<'_, F>,
        y: Target<'_, F>,
        loss: &Loss,
        fold: Option<F>,
        share: Share<F>,
    ) -> Result<F> {
        let step = Some(self.steps);
        let input_max = self.check_input(&x, step)?;
        for layer in &mut self.layers {
            layer.set_step(self.steps, share.first_row);
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
        if share.weight != F::one() {
            // Every gradient is linear in the loss's: weighing it weighs them all.
            let w = share.weight;
            kernels::map_inplace(self.grad.as_mut_slice(), |g| g * w);
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
    pub(crate) fn update<O: Optimizer + ?Sized>(
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
                    result = crate::optim::update(optimizer, index, p.value, p.grad);
                }
                index += 1;
            });
            result?;
        }
        self.steps += 1;
        Ok(())
    }

    /// Calls `f` on every gradient (with `false`) and every running statistic (with `true`) of
    /// every layer, in layer order: what the ranks of a data-parallel step reduce.
    pub(crate) fn visit_reduced_mut(&mut self, f: &mut dyn FnMut(&mut [F], bool)) {
        for layer in &mut self.layers {
            layer.visit_grads_mut(&mut |g| f(g, false));
            layer.visit_statistics_mut(&mut |s| f(s, true));
        }
    }

    /// Calls `f` on every parameter's values and every running statistic of every layer, in
    /// layer order: every tensor a saved model holds, which a data-parallel run gives every rank
    /// from rank 0.
    pub(crate) fn visit_state_mut(&mut self, f: &mut dyn FnMut(&mut [F])) {
        for layer in &mut self.layers {
            layer.visit_params(&mut |p| f(p.value));
            layer.visit_statistics_mut(f);
        }
    }

    /// The fewest samples a training batch may hold, as the layers say.
    pub(crate) fn min_train_batch(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.min_train_batch())
            .max()
            .unwrap_or(1)
    }

    /// The last layer's output from the latest training forward.
    pub(crate) fn train_output(&self) -> ArrayView2<'_, F> {
        self.layers.last().expect("a model has layers").output()
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
    /// A non-finite input or loss is an error naming the step (and, for the loss, the first
    /// layer whose output went non-finite); the weights are then left as they were.
    ///
    /// With plain SGD ([`Optimizer::plain_sgd`]) a [`Dense`](crate::Dense) layer folds its
    /// update into the weight-gradient product, `W ← W − (lr/B)·xᵀδ`, so no gradient is kept:
    /// use [`compute_gradients`](Self::compute_gradients) and
    /// [`apply_gradients`](Self::apply_gradients) to look at or clip gradients (docs/design.md
    /// explains the fold and its overflow guard).
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
        let value = self.backpropagate(x, y, loss, fold, Share::whole())?;
        self.update(optimizer, fold.map(|lr| (x, lr)))?;
        Ok(value)
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

/// Where a batch sits in a step's global batch, which a data-parallel run splits among ranks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share<F> {
    /// The place of the batch's first row in the global batch (dropout's masks depend on it).
    pub first_row: u64,
    /// The batch's rows over the global batch's: the batch's gradients are weighed by it, so
    /// that the ranks' sum is the gradient of the global batch's mean loss.
    pub weight: F,
}

impl<F: Scalar> Share<F> {
    /// The whole batch.
    pub fn whole() -> Self {
        Share {
            first_row: 0,
            weight: F::one(),
        }
    }
}
