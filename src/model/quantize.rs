//! A trained model's copy for inference in int8 or bf16.

use super::*;
use crate::layer::{quantized_spec, quantized_tensors};
use crate::quant::Precision;

impl<F: Scalar> Sequential<F> {
    /// The reduced precision of the model's layers, if [`quantize`](Self::quantize) made it:
    /// `None` for a model that computes in `F` throughout.
    pub fn precision(&self) -> Option<Precision> {
        let mut found = None;
        for layer in &self.layers {
            layer.visit_tensors(&mut |t| found = found.or(t.data.precision()));
        }
        found
    }

    /// A copy of the model for inference in `precision`: every [`Dense`](crate::Dense) layer
    /// becomes a [`QuantizedDense`](crate::layer::QuantizedDense) (int8: weights quantized per
    /// output column; bf16: weights rounded), every other layer is copied as it is. The copy
    /// predicts, evaluates, saves and loads like any model; it cannot be trained. See
    /// [`crate::quant`].
    ///
    /// ```
    /// use crank::{Activation, Sequential, quant::Precision};
    /// use ndarray::array;
    ///
    /// let model = Sequential::<f32>::builder(2)
    ///     .dense(16, Activation::Relu)
    ///     .dense(1, Activation::Identity)
    ///     .build()?;
    /// let int8 = model.quantize(Precision::Int8)?;
    /// let x = array![[0.5f32, -1.0], [2.0, 0.25]];
    /// let (a, b) = (model.predict(x.view())?, int8.predict(x.view())?);
    /// assert!((a[[0, 0]] - b[[0, 0]]).abs() < 0.05 * (1.0 + a[[0, 0]].abs()));
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn quantize(&self, precision: Precision) -> Result<Sequential<F>> {
        let mut spec = self.to_spec();
        let mut tensors = self.tensors();
        for ((i, layer), values) in spec.layers.iter_mut().enumerate().zip(&mut tensors) {
            match layer {
                LayerSpec::Dense(d) => {
                    let biases = values.pop().unwrap_or_default();
                    let weights = values.pop().unwrap_or_default();
                    *values = quantized_tensors(precision, &weights, biases, d.output_size);
                    *layer = quantized_spec(d.clone(), precision);
                }
                LayerSpec::Int8Dense(_) | LayerSpec::Bf16Dense(_)
                    if layer.stored(layer_weights(layer)) != Some(precision) =>
                {
                    return Err(Error::Config(format!(
                        "layer {i} ({}) is {} already: quantize the float model instead",
                        self.layers[i].name(),
                        layer.kind()
                    )));
                }
                _ => {}
            }
        }
        Sequential::from_tensors(&spec, tensors)
    }
}

/// The name of a quantized layer's weight tensor.
fn layer_weights(layer: &LayerSpec) -> &'static str {
    match layer {
        LayerSpec::Int8Dense(_) => "codes",
        _ => "weights",
    }
}
