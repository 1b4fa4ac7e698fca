//! Inference: predictions, evaluation and accuracy, with a caller-owned workspace.

use super::*;

impl<F: Scalar> Sequential<F> {
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
    pub(super) fn infer<'w>(
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
