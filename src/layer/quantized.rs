//! Dense layers in reduced precision, for inference: what
//! [`Sequential::quantize`](crate::Sequential::quantize) puts in place of a trained [`Dense`]
//! layer. They compute `y = f(x·W + b)` as `Dense` does, with `W` in int8 or bf16
//! ([`crate::quant`]); training them is an error.

use super::{
    Build, Dense, DenseSpec, Layer, LayerConfig, LayerSpec, Mode, Param, Tensor, TensorData,
    declared_name_and_input,
};
use crate::quant::{Bf16Weights, Int8Weights, Precision, f32_to_bf16};
use crate::{Activation, Error, Result, Scalar};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

/// Describes an [`QuantizedDense`] layer in int8 (type `Int8Dense` in model files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Int8DenseSpec {
    /// The layer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Outputs.
    pub output_size: usize,
    /// The activation.
    #[serde(default)]
    pub activation_function: Activation,
    /// The calibrated range `[lo, hi]` of the inputs (static quantization,
    /// [`Sequential::quantize_static`](crate::Sequential::quantize_static)): every input row is
    /// quantized with the scale and zero point of this range. Without it (dynamic
    /// quantization), each row with its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_range: Option<[f32; 2]>,
}

/// Describes an [`QuantizedDense`] layer in bf16 (type `Bf16Dense` in model files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bf16DenseSpec {
    /// The layer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Outputs.
    pub output_size: usize,
    /// The activation.
    #[serde(default)]
    pub activation_function: Activation,
}

impl Int8DenseSpec {
    fn calibrated_range(&self) -> Option<[f32; 2]> {
        self.input_range
    }
}

impl Bf16DenseSpec {
    /// bf16 layers round their inputs; they have no range.
    fn calibrated_range(&self) -> Option<[f32; 2]> {
        None
    }
}

/// The parts both kinds' descriptions share.
macro_rules! quantized_config {
    ($spec:ty, $kind:literal, $tensors:expr, $precision:expr) => {
        impl LayerConfig for $spec {
            const KIND: &'static str = $kind;
            const TENSORS: &'static [&'static str] = $tensors;

            declared_name_and_input!();

            fn check(&self) -> std::result::Result<(), String> {
                crate::quant::check_input_range(self.calibrated_range())
            }

            fn output_size(&self, _input_size: usize) -> usize {
                self.output_size
            }

            fn tensor_shapes(&self, input_size: usize) -> Vec<(&'static str, Vec<usize>)> {
                Self::TENSORS
                    .iter()
                    .map(|&t| match t {
                        "codes" | "weights" => (t, vec![input_size, self.output_size]),
                        _ => (t, vec![self.output_size]),
                    })
                    .collect()
            }

            fn stored(&self, tensor: &str) -> Option<Precision> {
                matches!(tensor, "codes" | "weights").then_some($precision)
            }

            fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
                let Build {
                    index,
                    name,
                    input_size,
                    tensors,
                    ..
                } = build;
                let at = format!("layer {index} ({name})");
                let Some(tensors) = tensors else {
                    return Err(Error::spec(
                        at,
                        format!(
                            "a {} layer is made by quantizing a trained Dense layer \
                             (Sequential::quantize, `crank quantize`), not initialised",
                            $kind
                        ),
                    ));
                };
                let layer = QuantizedDense::from_tensors(
                    name,
                    $precision,
                    input_size,
                    self.output_size,
                    self.activation_function,
                    tensors,
                )
                .and_then(|layer| layer.with_input_range(self.calibrated_range()))
                .map_err(|reason| Error::spec(at, reason))?;
                Ok(Box::new(layer))
            }
        }
    };
}

quantized_config!(
    Int8DenseSpec,
    "Int8Dense",
    &["codes", "scales", "biases"],
    Precision::Int8
);
quantized_config!(
    Bf16DenseSpec,
    "Bf16Dense",
    &["weights", "biases"],
    Precision::Bf16
);

/// A Dense layer's weights in reduced precision.
#[derive(Debug)]
enum Weights<F> {
    /// int8 codes and per-column scales (kept in the model's type for saving, and in `f32`
    /// inside the codes' kernel form).
    Int8(Int8Weights, Vec<F>),
    /// bf16 weights.
    Bf16(Bf16Weights),
}

/// `y = f(x·W + b)` with `W` in int8 or bf16 and `b` in `f32`: a [`Dense`] layer quantized for
/// inference. Its [`forward`](Layer::forward) and [`backward`](Layer::backward) are errors:
/// train the float model and quantize it again.
#[derive(Debug)]
pub struct QuantizedDense<F: Scalar> {
    name: String,
    activation: Activation,
    weights: Weights<F>,
    /// The biases in the model's type (what files hold) and in `f32` (what the kernels add).
    biases: Vec<F>,
    biases_f32: Vec<f32>,
    /// `[input, output]`, for [`Tensor::shape`].
    weight_shape: [usize; 2],
    bias_shape: [usize; 1],
    /// An empty batch, for [`Layer::output`] and [`Layer::input_grad`].
    empty: Array2<F>,
}

impl<F: Scalar> QuantizedDense<F> {
    /// `dense` in `precision`: int8 codes per output column, or weights rounded to bf16.
    pub fn quantize(dense: &Dense<F>, precision: Precision) -> Result<Self> {
        let mut tensors = Vec::new();
        dense.visit_tensors(&mut |t| tensors.push(t.data.values().into_owned()));
        let [weights, biases] = <[Vec<F>; 2]>::try_from(tensors)
            .map_err(|_| Error::Config("a Dense layer holds weights and biases".into()))?;
        let (inputs, outputs) = (dense.input_size(), dense.output_size());
        let stored = quantized_tensors(precision, &weights, biases, outputs);
        Self::from_tensors(
            dense.name().to_string(),
            precision,
            inputs,
            outputs,
            dense.activation(),
            stored,
        )
        .map_err(|reason| Error::Config(format!("layer {}: {reason}", dense.name())))
    }

    /// The layer from its saved tensors, in the order of its kind's `TENSORS`: what is wrong
    /// with them otherwise.
    fn from_tensors(
        name: String,
        precision: Precision,
        inputs: usize,
        outputs: usize,
        activation: Activation,
        tensors: Vec<Vec<F>>,
    ) -> std::result::Result<Self, String> {
        // Files are checked before this; a `Dense` quantized directly may hold weights past
        // what the precision can hold (an f64 beyond f32's range).
        for (t, values) in tensors.iter().enumerate() {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(format!("tensor {t} value {i} is not finite in {precision}"));
            }
        }
        let count = tensors.len();
        let (weights, biases) = match (precision, <[Vec<F>; 3]>::try_from(tensors)) {
            (Precision::Int8, Ok([codes, scales, biases])) => {
                let codes = codes
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let v = c.as_f64();
                        if v.fract() == 0.0 && v.abs() <= 127.0 {
                            Ok(v as i8)
                        } else {
                            Err(format!(
                                "codes value {i} = {v} is not an int8 code (-127 to 127)"
                            ))
                        }
                    })
                    .collect::<std::result::Result<Vec<i8>, String>>()?;
                if let Some(i) = scales.iter().position(|s| s.as_f64() <= 0.0) {
                    return Err(format!("scales value {i} is not positive"));
                }
                let scales_f32 = scales.iter().map(|s| s.as_f64() as f32).collect();
                let w = Int8Weights::new(inputs, outputs, codes, scales_f32)
                    .map_err(|e| e.to_string())?;
                (Weights::Int8(w, scales), biases)
            }
            (Precision::Bf16, Err(t)) if t.len() == 2 => {
                let [weights, biases] = <[Vec<F>; 2]>::try_from(t).map_err(|_| "2 tensors")?;
                let bits = weights
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| {
                        let v = w.as_f64();
                        let b = f32_to_bf16(v as f32);
                        if f64::from(crate::quant::bf16_to_f32(b)) == v {
                            Ok(b)
                        } else {
                            Err(format!("weights value {i} = {v} is not a bfloat16 value"))
                        }
                    })
                    .collect::<std::result::Result<Vec<u16>, String>>()?;
                (
                    Weights::Bf16(Bf16Weights::new(inputs, outputs, bits)),
                    biases,
                )
            }
            _ => {
                let want = if precision == Precision::Int8 { 3 } else { 2 };
                return Err(format!("{count} tensors given, {want} expected"));
            }
        };
        Ok(QuantizedDense {
            name,
            activation,
            weights,
            biases_f32: biases.iter().map(|b| b.as_f64() as f32).collect(),
            biases,
            weight_shape: [inputs, outputs],
            bias_shape: [outputs],
            empty: Array2::zeros((0, outputs)),
        })
    }

    /// Quantizes every input row with the scale and zero point of `range` (a calibrated range
    /// of the inputs, `[lo, hi]` with finite ends that hold 0) instead of each row's own; int8
    /// only.
    fn with_input_range(mut self, range: Option<[f32; 2]>) -> std::result::Result<Self, String> {
        self.weights = match self.weights {
            Weights::Int8(w, scales) => Weights::Int8(
                w.with_input_range(range).map_err(|e| e.to_string())?,
                scales,
            ),
            Weights::Bf16(_) if range.is_some() => {
                return Err("a bf16 layer has no input range".into());
            }
            bf16 => bf16,
        };
        Ok(self)
    }

    /// The calibrated range of the inputs that every input row is quantized with, if the layer
    /// was quantized statically; `None` if each row is quantized with its own range.
    pub fn input_range(&self) -> Option<[f32; 2]> {
        match &self.weights {
            Weights::Int8(w, _) => w.input_range(),
            Weights::Bf16(_) => None,
        }
    }

    /// The precision of the weights.
    pub fn precision(&self) -> Precision {
        match self.weights {
            Weights::Int8(..) => Precision::Int8,
            Weights::Bf16(_) => Precision::Bf16,
        }
    }

    /// The layer's activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    fn training_error(&self) -> Error {
        Error::Config(format!(
            "layer {} is {}, for inference only: train the float model, then quantize it",
            self.name,
            self.precision()
        ))
    }

    /// `x·W + b` into `out`, then the activation.
    fn run(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        super::check_width(&self.name, "input", self.input_size(), &input)?;
        let n = self.output_size();
        if out.dim() != (input.nrows(), n) {
            return Err(Error::shape(
                format!("layer {} output", self.name),
                format!("({}, {n})", input.nrows()),
                format!("{:?}", out.dim()),
            ));
        }
        let x = input.as_standard_layout();
        let x = x.as_slice().expect("standard layout is contiguous");
        if let Some(y) = out.as_slice_mut() {
            return self.product(x, y);
        }
        // A caller's view that is not contiguous: through a copy.
        let mut y = Array2::zeros(out.dim());
        self.product(x, y.as_slice_mut().expect("a new array is contiguous"))?;
        out.assign(&y);
        Ok(())
    }

    fn product(&self, x: &[F], y: &mut [F]) -> Result<()> {
        let relu = self.activation == Activation::Relu;
        let fused = match &self.weights {
            Weights::Int8(w, _) => w.product(&self.name, x, &self.biases_f32, y, relu)?,
            Weights::Bf16(w) => w.product(&self.name, x, &self.biases_f32, y, relu)?,
        };
        if !fused {
            self.activation.forward_inplace(y, self.output_size(), None);
        }
        Ok(())
    }
}

/// The description of `dense` quantized to `precision`: the same fields, the other type, and
/// the inputs' calibrated range if any (int8).
pub(crate) fn quantized_spec(
    dense: DenseSpec,
    precision: Precision,
    input_range: Option<[f32; 2]>,
) -> LayerSpec {
    let DenseSpec {
        name,
        input_size,
        output_size,
        activation_function,
    } = dense;
    match precision {
        Precision::Int8 => LayerSpec::Int8Dense(Int8DenseSpec {
            name,
            input_size,
            output_size,
            activation_function,
            input_range,
        }),
        Precision::Bf16 => LayerSpec::Bf16Dense(Bf16DenseSpec {
            name,
            input_size,
            output_size,
            activation_function,
        }),
    }
}

/// A Dense layer's tensors (weights `[inputs, outputs]`, biases) as a quantized layer of
/// `precision` holds them, in its kind's `TENSORS` order, as values of the model's type.
pub(crate) fn quantized_tensors<F: Scalar>(
    precision: Precision,
    weights: &[F],
    biases: Vec<F>,
    outputs: usize,
) -> Vec<Vec<F>> {
    match precision {
        Precision::Int8 => {
            let (codes, scales) = crate::quant::quantize_weights(weights, outputs);
            vec![
                codes.iter().map(|&c| F::of(f64::from(c))).collect(),
                scales.iter().map(|&s| F::of(f64::from(s))).collect(),
                biases,
            ]
        }
        Precision::Bf16 => vec![
            weights
                .iter()
                .map(|&w| F::of(f64::from(bf16_value(w))))
                .collect(),
            biases,
        ],
    }
}

/// The bf16 value nearest `w`, in `f32`.
fn bf16_value<F: Scalar>(w: F) -> f32 {
    crate::quant::bf16_to_f32(f32_to_bf16(w.as_f64() as f32))
}

impl<F: Scalar> Layer<F> for QuantizedDense<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        match self.precision() {
            Precision::Int8 => Int8DenseSpec::KIND,
            Precision::Bf16 => Bf16DenseSpec::KIND,
        }
    }

    fn input_size(&self) -> usize {
        self.weight_shape[0]
    }

    fn output_size(&self) -> usize {
        self.weight_shape[1]
    }

    fn num_params(&self) -> usize {
        self.weight_shape[0] * self.weight_shape[1] + self.weight_shape[1]
    }

    fn describe(&self) -> String {
        self.activation.to_string()
    }

    fn forward(&mut self, _input: ArrayView2<'_, F>, _mode: Mode) -> Result<()> {
        Err(self.training_error())
    }

    fn output(&self) -> ArrayView2<'_, F> {
        self.empty.view()
    }

    fn backward(
        &mut self,
        _input: ArrayView2<'_, F>,
        _grad_output: ArrayView2<'_, F>,
        _need_input_grad: bool,
    ) -> Result<()> {
        Err(self.training_error())
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.empty.view()
    }

    fn visit_params(&mut self, _f: &mut dyn FnMut(Param<'_, F>)) {}

    fn visit_grads_mut(&mut self, _f: &mut dyn FnMut(&mut [F])) {}

    fn to_spec(&self) -> LayerSpec {
        let dense = DenseSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.input_size()),
            output_size: self.output_size(),
            activation_function: self.activation,
        };
        quantized_spec(dense, self.precision(), self.input_range())
    }

    fn visit_tensors<'a>(&'a self, f: &mut dyn FnMut(Tensor<'a, F>)) {
        match &self.weights {
            Weights::Int8(w, scales) => {
                f(Tensor {
                    name: "codes",
                    shape: &self.weight_shape,
                    data: TensorData::Int8(&w.codes),
                });
                f(Tensor {
                    name: "scales",
                    shape: &self.bias_shape,
                    data: TensorData::Float(scales),
                });
            }
            Weights::Bf16(w) => f(Tensor {
                name: "weights",
                shape: &self.weight_shape,
                data: TensorData::Bf16(&w.bits),
            }),
        }
        f(Tensor {
            name: "biases",
            shape: &self.bias_shape,
            data: TensorData::Float(&self.biases),
        });
    }

    fn infer(&self, input: ArrayView2<'_, F>, out: ArrayViewMut2<'_, F>) -> Result<()> {
        self.run(input, out)
    }

    /// The input is quantized value by value, which finds a value that is not finite.
    fn infer_first(
        &self,
        input: ArrayView2<'_, F>,
        out: ArrayViewMut2<'_, F>,
    ) -> Result<Option<bool>> {
        self.run(input, out)?;
        Ok(Some(true))
    }
}
