//! Inference: predictions, evaluation and accuracy, with a caller-owned workspace.

use super::*;
use crate::buffer::{matrix, matrix_mut};

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
        if let Some(block) = self.row_blocks(x.nrows()) {
            let parallel = block < x.nrows() && rayon::current_num_threads() > 1;
            return threads::on_pool(parallel, || self.infer_blocks(x, workspace, block));
        }
        let parallel = self.forks(x.nrows());
        threads::on_pool(parallel, || self.infer(x, workspace))
    }

    /// How many rows each thread takes through all the layers, or `None` to run layer by layer,
    /// each layer splitting its own product. A block through all layers joins the threads once
    /// instead of at every layer, and each thread's activations stay in its own cache (every
    /// layer works row by row in inference, so the outputs are the same).
    ///
    /// - A float model: one block per thread where layer by layer the activation passes would
    ///   be split over the threads too (a layer's output of at least
    ///   [`PAR_THRESHOLD`](crate::kernels::PAR_THRESHOLD) values; a smaller batch gained
    ///   nothing from blocks), and once every layer's product of a block is still one the
    ///   backend runs (more than [`SMALL_GEMM`](crate::gemm::SMALL_GEMM) multiply-adds, as the
    ///   whole batch's are), so that the blocks' products sum each element as the whole
    ///   batch's do and the predictions are bitwise those of one thread.
    /// - A quantized model: for a batch of at most 64 rows per thread, one block per thread (a
    ///   quantized layer's weights are packed once, so a block costs it nothing extra). Larger
    ///   batches go layer by layer: its blocks of 64 rows through all layers would take turns
    ///   evicting each other's weights from the cache.
    fn row_blocks(&self, batch: usize) -> Option<usize> {
        const MOST: usize = 64;
        const LEAST: usize = 8;
        if batch < 2 * LEAST {
            return None;
        }
        let threads = rayon::current_num_threads();
        if threads == 1 {
            return None;
        }
        if self.precision().is_none() {
            if batch * self.widest() < crate::kernels::PAR_THRESHOLD {
                return None;
            }
            let block = batch.div_ceil(threads);
            let large = self
                .layers
                .iter()
                .all(|l| !gemm::is_small(block, l.input_size(), l.output_size()));
            return large.then_some(block);
        }
        if batch > threads * MOST {
            return None;
        }
        Some(batch.div_ceil(threads).max(LEAST))
    }

    /// [`infer`](Self::infer) in blocks of `block` rows, each through every layer, on rayon's
    /// threads, each block's products and kernels unsplit ([`threads::alone`]). The output goes
    /// to workspace buffer `a`; `b` holds each block's two intermediate results.
    fn infer_blocks<'w>(
        &self,
        x: ArrayView2<'_, F>,
        workspace: &'w mut Workspace<F>,
        block: usize,
    ) -> Result<ArrayView2<'w, F>> {
        use rayon::prelude::*;
        let batch = x.nrows();
        let (outputs, widest) = (self.output_size(), self.widest());
        let done = {
            let Workspace { a, b } = &mut *workspace;
            a.resize(batch, outputs);
            b.resize(2 * batch, widest);
            let run = |(i, (out, scratch)): (usize, (&mut [F], &mut [F]))| {
                let rows = x.slice(ndarray::s![i * block..(i * block + block).min(batch), ..]);
                threads::alone(|| self.infer_block(rows, scratch, out))
            };
            a.as_mut_slice()
                .par_chunks_mut(block * outputs)
                .zip(b.as_mut_slice().par_chunks_mut(2 * block * widest))
                .enumerate()
                .try_for_each(run)
        };
        if let Err(e) = done {
            // A block names rows from its own start: the whole batch, layer by layer, fails at
            // the same place and names the row in the batch.
            self.infer(x, &mut *workspace)?;
            return Err(e);
        }
        let Workspace { a, .. } = workspace;
        let out: &'w Buffer<F> = a;
        Ok(out.view())
    }

    /// One block of rows `x` through every layer, the last one's output into `out`, the others'
    /// into the two halves of `scratch`.
    fn infer_block(&self, x: ArrayView2<'_, F>, scratch: &mut [F], out: &mut [F]) -> Result<()> {
        let rows = x.nrows();
        let widest = self.widest();
        let (mut src, mut dst) = scratch.split_at_mut(rows * widest);
        let mut width = self.input_size;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let w = layer.output_size();
            let target = if i == last {
                &mut *out
            } else {
                &mut dst[..rows * w]
            };
            let target = matrix_mut(target, rows, w);
            if i == 0 {
                if layer.infer_first(x, target)? != Some(true) {
                    self.check_input(&x, None)?;
                }
            } else {
                layer.infer(matrix(&src[..rows * width], rows, width), target)?;
            }
            std::mem::swap(&mut src, &mut dst);
            width = w;
        }
        Ok(())
    }

    /// The widest output of any layer.
    fn widest(&self) -> usize {
        self.layers
            .iter()
            .map(|l| l.output_size())
            .max()
            .unwrap_or(0)
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
