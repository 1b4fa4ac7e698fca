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
        matrix(self.as_slice(), self.rows, self.cols)
    }

    pub fn view_mut(&mut self) -> ArrayViewMut2<'_, F> {
        let (rows, cols) = (self.rows, self.cols);
        matrix_mut(self.as_mut_slice(), rows, cols)
    }
}

/// The row-major `(rows, cols)` matrix of `data`, which holds exactly its `rows · cols`
/// values. What `ArrayView2::from_shape` makes, with one comparison instead of its general
/// check of shape and strides, a cost that shows in one-sample inference and the tiny
/// network's step, which make a dozen views each.
///
/// # Panics
/// If `data.len() != rows · cols` (a bug in crank, never a user's input).
pub(crate) fn matrix<F>(data: &[F], rows: usize, cols: usize) -> ArrayView2<'_, F> {
    assert_eq!(
        Some(data.len()),
        rows.checked_mul(cols),
        "a matrix's values"
    );
    // SAFETY: `data` holds the `rows · cols` values of the row-major matrix and is borrowed
    // for the view's lifetime.
    unsafe { ArrayView2::from_shape_ptr((rows, cols), data.as_ptr()) }
}

/// [`matrix`], mutable.
///
/// # Panics
/// If `data.len() != rows · cols`.
pub(crate) fn matrix_mut<F>(data: &mut [F], rows: usize, cols: usize) -> ArrayViewMut2<'_, F> {
    assert_eq!(
        Some(data.len()),
        rows.checked_mul(cols),
        "a matrix's values"
    );
    // SAFETY: as in `matrix`, borrowed mutably for the view's lifetime.
    unsafe { ArrayViewMut2::from_shape_ptr((rows, cols), data.as_mut_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_the_row_major_matrix() {
        let mut b = Buffer::<f32>::default();
        b.resize(2, 3);
        b.as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32);
        b.view_mut()[(1, 0)] = 30.0;
        let v = b.view();
        assert_eq!(v.dim(), (2, 3));
        assert_eq!(v[(0, 2)], 2.0);
        assert_eq!(v[(1, 0)], 30.0);
        assert!(v.is_standard_layout());
        b.resize(3, 1);
        assert_eq!(b.view().dim(), (3, 1));
        assert_eq!(matrix::<f32>(&[], 0, 5).dim(), (0, 5));
    }

    #[test]
    #[should_panic(expected = "a matrix's values")]
    fn a_view_of_the_wrong_length_is_refused() {
        let _ = matrix(&[1.0_f32; 5], 2, 3);
    }
}
