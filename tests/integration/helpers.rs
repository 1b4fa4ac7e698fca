//! Helpers the integration tests share.

use crank::{Scalar, Sequential};

/// Every parameter's values, layer by layer, in `visit_params` order.
pub fn params<F: Scalar>(model: &mut Sequential<F>) -> Vec<Vec<F>> {
    let mut out = Vec::new();
    model.visit_params(|_, p| out.push(p.value.to_vec()));
    out
}

/// Every parameter's bits (widened to `f64`, which keeps them apart), for bitwise comparisons:
/// unlike `==` on the values, `-0.0` and `0.0` differ.
pub fn param_bits<F: Scalar>(model: &mut Sequential<F>) -> Vec<Vec<u64>> {
    params(model)
        .into_iter()
        .map(|p| p.into_iter().map(|v| v.as_f64().to_bits()).collect())
        .collect()
}
