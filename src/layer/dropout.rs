//! Inverted dropout.

use super::{
    Build, Layer, LayerConfig, LayerSpec, Mode, Param, Tensor, check_width,
    declared_name_and_input, out_of_range,
};
use crate::buffer::Buffer;
use crate::{Error, Result, Scalar, kernels};
use ndarray::{ArrayView2, ArrayViewMut2};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

/// The description of a [`Dropout`] layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropoutSpec {
    /// The layer's name; `dropout_<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Features in (and out); checked against the previous layer when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// The probability of zeroing an element, in `[0, 1)`.
    pub rate: f64,
    /// Seed of the masks; derived from the model's seed and the layer's index when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl LayerConfig for DropoutSpec {
    const KIND: &'static str = "Dropout";
    const TENSORS: &'static [&'static str] = &[];

    declared_name_and_input!();

    fn check(&self) -> std::result::Result<(), String> {
        if (0.0..1.0).contains(&self.rate) {
            Ok(())
        } else {
            out_of_range("rate", self.rate)
        }
    }

    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
        // Without a seed of its own, the layer's masks come from the model's seed and its place.
        let seed = self.seed.unwrap_or_else(|| {
            build.model_seed ^ (build.index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
        });
        Ok(Box::new(Dropout::new(
            build.name,
            build.input_size,
            self.rate,
            seed,
        )?))
    }
}

/// Inverted dropout: in training each element is zeroed with probability `rate` and the rest are
/// scaled by `1 / (1 − rate)`; in evaluation it is the identity.
///
/// Each row's mask comes from a `Xoshiro256PlusPlus` seeded with the layer's seed, the model's
/// step count and the row's place in the step's batch, so masks are reproducible, a resumed
/// checkpoint draws the same ones, and a data-parallel run draws for each sample the mask one
/// process would have drawn for it, however many ranks share the batch.
#[derive(Debug, Clone)]
pub struct Dropout<F: Scalar> {
    name: String,
    size: usize,
    rate: f64,
    seed: u64,
    step: u64,
    /// The place of the batch's first row in the step's global batch.
    first_row: u64,
    /// `0` or `1 / (1 − rate)` per element of the latest training batch.
    mask: Buffer<F>,
    y: Buffer<F>,
    dx: Buffer<F>,
    /// Whether the latest forward applied a mask (training) or passed the input through.
    masked: bool,
}

impl<F: Scalar> Dropout<F> {
    /// Dropout over `size` features with probability `rate` in `[0, 1)`.
    pub fn new(name: impl Into<String>, size: usize, rate: f64, seed: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::Config(format!(
                "dropout rate {rate} is not in [0, 1)"
            )));
        }
        Ok(Dropout {
            name: name.into(),
            size,
            rate,
            seed,
            step: 0,
            first_row: 0,
            mask: Buffer::default(),
            y: Buffer::default(),
            dx: Buffer::default(),
            masked: false,
        })
    }
}

impl<F: Scalar> Layer<F> for Dropout<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "Dropout"
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
        format!("rate {}", self.rate)
    }

    fn set_step(&mut self, step: u64, first_row: u64) {
        self.step = step;
        self.first_row = first_row;
    }

    fn forward(&mut self, input: ArrayView2<'_, F>, mode: Mode) -> Result<()> {
        check_width(&self.name, "input", self.size, &input)?;
        let (batch, n) = input.dim();
        self.y.resize(batch, n);
        self.y.view_mut().assign(&input);
        self.masked = mode == Mode::Train && self.rate > 0.0;
        if self.masked {
            let step_seed = self.seed ^ self.step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (keep, scale) = (1.0 - self.rate, F::of(1.0 / (1.0 - self.rate)));
            self.mask.resize(batch, n);
            for (i, row) in self
                .mask
                .as_mut_slice()
                .chunks_exact_mut(n.max(1))
                .enumerate()
            {
                let place = self.first_row.wrapping_add(i as u64);
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                    step_seed ^ place.wrapping_mul(0xD6E8_FEB8_6659_FD93),
                );
                for m in row {
                    *m = if rng.random::<f64>() < keep {
                        scale
                    } else {
                        F::zero()
                    };
                }
            }
            kernels::zip_inplace(self.y.as_mut_slice(), self.mask.as_slice(), |y, m| y * m);
        }
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
        if grad_output.dim() != self.y.shape() {
            return Err(Error::shape(
                format!("layer {} backward", self.name),
                format!("{:?}", self.y.shape()),
                format!("{:?}", grad_output.dim()),
            ));
        }
        if need_input_grad {
            let (batch, n) = grad_output.dim();
            self.dx.resize(batch, n);
            self.dx.view_mut().assign(&grad_output);
            if self.masked {
                kernels::zip_inplace(self.dx.as_mut_slice(), self.mask.as_slice(), |g, m| g * m);
            }
        }
        Ok(())
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.dx.view()
    }

    fn visit_params(&mut self, _f: &mut dyn FnMut(Param<'_, F>)) {}

    fn visit_grads_mut(&mut self, _f: &mut dyn FnMut(&mut [F])) {}

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::Dropout(DropoutSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.size),
            rate: self.rate,
            seed: Some(self.seed),
        })
    }

    fn visit_tensors<'a>(&'a self, _f: &mut dyn FnMut(Tensor<'a, F>)) {}

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        check_width(&self.name, "input", self.size, &input)?;
        out.assign(&input);
        Ok(())
    }
}
