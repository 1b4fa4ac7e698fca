//! A reusable row-major matrix buffer that only ever grows.

use crate::Scalar;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Storage for a `(rows, cols)` matrix whose shape changes with the batch size. Resizing to a
/// shape that fits the capacity already held allocates nothing, so alternating batch sizes (a
/// short last batch, say) costs one allocation per size ever seen, not one per step.
#[derive(Debug, Clone, Default)]
pub(crate) struct Buffer<F> {
    data: Vec<F>,
    rows: usize,
    cols: usize,
}

impl<F: Scalar> Buffer<F> {
    /// Sets the shape; the contents are unspecified afterwards.
    pub fn resize(&mut self, rows: usize, cols: usize) {
        let n = rows * cols;
        if self.data.len() < n {
            self.data.resize(n, F::zero());
        }
        self.rows = rows;
        self.cols = cols;
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    pub fn as_slice(&self) -> &[F] {
        &self.data[..self.rows * self.cols]
    }

    pub fn as_mut_slice(&mut self) -> &mut [F] {
        &mut self.data[..self.rows * self.cols]
    }

    pub fn view(&self) -> ArrayView2<'_, F> {
        ArrayView2::from_shape((self.rows, self.cols), self.as_slice())
            .expect("buffer length is rows * cols")
    }

    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, F> {
        let shape = (self.rows, self.cols);
        ArrayViewMut2::from_shape(shape, self.as_mut_slice()).expect("buffer length is rows * cols")
    }
}
