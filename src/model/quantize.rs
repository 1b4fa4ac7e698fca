//! A trained model's copy for inference in int8 or bf16.

use super::*;
use crate::layer::{Int8DenseSpec, LayerConfig, quantized_spec, quantized_tensors};
use crate::quant::{Histogram, Precision};
use crate::spec::DenseSpec;

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
        self.quantize_with(precision, &vec![None; self.layers.len()])
    }

    /// A copy of the model for inference in int8 with *static* activation quantization, as
    /// PyTorch's post-training static quantization: the float model runs on the `calibration`
    /// rows (a few hundred to a few thousand samples like those it will serve), and each Dense
    /// layer keeps the range of its inputs that loses least to quantization over them (the
    /// whole range, less extremes rare enough that clipping them costs less than the
    /// resolution they take from every other value; see [`crate::quant`]). Its inputs are
    /// quantized with that range's one scale and zero point from then on; values beyond it
    /// take the end codes. Weights are quantized as [`quantize`](Self::quantize) does. This
    /// saves each row's search for its own range at every call; dynamic quantization
    /// ([`quantize`](Self::quantize)), which fits every row and any input, is the more
    /// accurate of the two. An `Int8Dense` layer already in the model gets a calibrated range
    /// too.
    ///
    /// ```
    /// use crank::{Activation, Sequential};
    /// use ndarray::array;
    ///
    /// let model = Sequential::<f32>::builder(2)
    ///     .dense(16, Activation::Relu)
    ///     .dense(1, Activation::Identity)
    ///     .build()?;
    /// let calibration = array![[0.5f32, -1.0], [2.0, 0.25], [-1.5, 1.0]];
    /// let int8 = model.quantize_static(calibration.view())?;
    /// let (a, b) = (model.predict(calibration.view())?, int8.predict(calibration.view())?);
    /// assert!((a[[0, 0]] - b[[0, 0]]).abs() < 0.05 * (1.0 + a[[0, 0]].abs()));
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn quantize_static(&self, calibration: ArrayView2<'_, F>) -> Result<Sequential<F>> {
        let ranges = self.input_ranges(calibration)?;
        self.quantize_with(Precision::Int8, &ranges)
    }

    /// The calibrated range of each Dense and int8 layer's inputs over the rows of `x`, `None`
    /// for other layers: the whole range of the inputs first, then the part of it that loses
    /// least to quantization ([`Histogram::best_range`]).
    fn input_ranges(&self, x: ArrayView2<'_, F>) -> Result<Vec<Option<[f32; 2]>>> {
        self.check_input(&x, None)?;
        let mut whole = vec![[0f32; 2]; self.layers.len()];
        self.observe_inputs(x, |i, input| {
            let [lo, hi] = &mut whole[i];
            let mut finite = true;
            for &v in input {
                let v = v.as_f64() as f32;
                finite &= v.is_finite();
                (*lo, *hi) = (lo.min(v), hi.max(v));
            }
            finite
        })?;
        let mut histograms: Vec<Histogram> = whole
            .iter()
            .map(|&[lo, hi]| Histogram::new(lo, hi))
            .collect();
        self.observe_inputs(x, |i, input| {
            histograms[i].add(input.iter().map(|v| v.as_f64() as f32));
            true
        })?;
        Ok(self
            .layers
            .iter()
            .zip(histograms)
            .map(|(l, h)| observed(l.as_ref()).then(|| h.best_range(u8::MAX)))
            .collect())
    }

    /// Runs the model on the rows of `x` in blocks (so memory stays that of a block's
    /// activations) and hands each Dense and int8 layer's inputs to `f` with the layer's index;
    /// `f` returns whether they are all finite in `f32`.
    fn observe_inputs(
        &self,
        x: ArrayView2<'_, F>,
        mut f: impl FnMut(usize, &ArrayView2<'_, F>) -> bool,
    ) -> Result<()> {
        const BLOCK: usize = 4096;
        let (mut a, mut b) = (Buffer::default(), Buffer::default());
        for block in x.axis_chunks_iter(ndarray::Axis(0), BLOCK) {
            for (i, layer) in self.layers.iter().enumerate() {
                let input = if i == 0 { block } else { a.view() };
                if observed(layer.as_ref()) && !f(i, &input) {
                    return Err(Error::Config(format!(
                        "calibration: an input of layer {i} ({}) is not finite in f32",
                        layer.name()
                    )));
                }
                b.resize(block.nrows(), layer.output_size());
                layer.infer(input, b.view_mut())?;
                std::mem::swap(&mut a, &mut b);
            }
        }
        Ok(())
    }

    /// [`quantize`](Self::quantize), with a calibrated input range for each layer that has one.
    fn quantize_with(
        &self,
        precision: Precision,
        ranges: &[Option<[f32; 2]>],
    ) -> Result<Sequential<F>> {
        let mut spec = self.to_spec();
        let mut tensors = self.tensors();
        let layers = spec.layers.iter_mut().enumerate().zip(&mut tensors);
        for (((i, layer), values), &range) in layers.zip(ranges) {
            match layer {
                LayerSpec::Dense(d) => {
                    let biases = values.pop().unwrap_or_default();
                    let weights = values.pop().unwrap_or_default();
                    *values = quantized_tensors(precision, &weights, biases, d.output_size);
                    *layer = quantized_spec(d.clone(), precision, range);
                }
                LayerSpec::Int8Dense(d) if precision == Precision::Int8 && range.is_some() => {
                    d.input_range = range;
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

/// Whether calibration observes `layer`'s inputs: a Dense or int8 layer's.
fn observed<F: Scalar>(layer: &dyn Layer<F>) -> bool {
    let kind = layer.kind();
    kind == DenseSpec::KIND || kind == Int8DenseSpec::KIND
}
