//! An activation as a layer of its own.

use super::{
    Build, Layer, LayerConfig, LayerSpec, Mode, Param, Tensor, check_width, declared_name_and_input,
};
use crate::buffer::Buffer;
use crate::{Activation, Error, Result, Scalar};
use ndarray::{ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

/// The description of an [`ActivationLayer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationSpec {
    /// The layer's name; `activation_<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Features in (and out); checked against the previous layer when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// The function applied.
    pub activation_function: Activation,
}

impl LayerConfig for ActivationSpec {
    const KIND: &'static str = "Activation";
    const TENSORS: &'static [&'static str] = &[];

    declared_name_and_input!();

    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
        Ok(Box::new(ActivationLayer::new(
            build.name,
            build.input_size,
            self.activation_function,
        )))
    }
}

/// An activation applied to the previous layer's output, as a layer of its own (Keras's
/// `Activation`, PyTorch's `nn.ReLU` and the like as modules). A [`Dense`](crate::Dense)
/// layer carries its own activation; this layer is for one that follows another kind of layer,
/// as in `Dense → BatchNorm → ReLU`.
#[derive(Debug, Clone)]
pub struct ActivationLayer<F: Scalar> {
    name: String,
    size: usize,
    activation: Activation,
    y: Buffer<F>,
    dx: Buffer<F>,
}

impl<F: Scalar> ActivationLayer<F> {
    /// `activation` over `size` features.
    pub fn new(name: impl Into<String>, size: usize, activation: Activation) -> Self {
        ActivationLayer {
            name: name.into(),
            size,
            activation,
            y: Buffer::default(),
            dx: Buffer::default(),
        }
    }

    /// The function the layer applies.
    pub fn activation(&self) -> Activation {
        self.activation
    }
}

impl<F: Scalar> Layer<F> for ActivationLayer<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        ActivationSpec::KIND
    }

    fn input_size(&self) -> usize {
        self.size
    }

    fn output_size(&self) -> usize {
        self.size
    }

    fn num_params(&self) -> usize {
        0
    }

    fn describe(&self) -> String {
        self.activation.to_string()
    }

    fn forward(&mut self, input: ArrayView2<'_, F>, _mode: Mode) -> Result<()> {
        check_width(&self.name, "input", self.size, &input)?;
        let (batch, n) = input.dim();
        self.y.resize(batch, n);
        self.y.view_mut().assign(&input);
        self.activation
            .forward_inplace(self.y.as_mut_slice(), n, None);
        Ok(())
    }

    fn output(&self) -> ArrayView2<'_, F> {
        self.y.view()
    }

    fn backward(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
    ) -> Result<()> {
        check_width(&self.name, "input", self.size, &input)?;
        if grad_output.dim() != self.y.shape() || input.dim() != self.y.shape() {
            return Err(Error::shape(
                format!("layer {} backward", self.name),
                format!("{:?}", self.y.shape()),
                format!("{:?} and {:?}", input.dim(), grad_output.dim()),
            ));
        }
        if need_input_grad {
            let (batch, n) = grad_output.dim();
            self.dx.resize(batch, n);
            // Views of a model's own buffers are contiguous; a caller's other views are copied.
            let (z, g) = (input.as_standard_layout(), grad_output.as_standard_layout());
            let (z, g) = (z.as_slice(), g.as_slice());
            let (z, g) = z.zip(g).expect("standard layout is contiguous");
            self.activation
                .backward(z, self.y.as_slice(), g, self.dx.as_mut_slice(), n);
        }
        Ok(())
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.dx.view()
    }

    fn visit_params(&mut self, _f: &mut dyn FnMut(Param<'_, F>)) {}

    fn visit_grads_mut(&mut self, _f: &mut dyn FnMut(&mut [F])) {}

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Activation(ActivationSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.size),
            activation_function: self.activation,
        })
    }

    fn visit_tensors<'a>(&'a self, _f: &mut dyn FnMut(Tensor<'a, F>)) {}

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        check_width(&self.name, "input", self.size, &input)?;
        let n = out.ncols();
        out.assign(&input);
        match out.as_slice_mut() {
            Some(y) => self.activation.forward_inplace(y, n, None),
            None => {
                for mut row in out.rows_mut() {
                    let mut r = row.to_vec();
                    self.activation.forward_inplace(&mut r, n, None);
                    row.assign(&ndarray::ArrayView1::from(&r));
                }
            }
        }
        Ok(())
    }
}
