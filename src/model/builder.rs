//! Building a model layer by layer.

use super::*;

impl<F: Scalar> Sequential<F> {
    /// Starts a model whose input has `input_size` features.
    pub fn builder(input_size: usize) -> SequentialBuilder<F> {
        SequentialBuilder {
            input_size,
            layers: Vec::new(),
            seed: DEFAULT_SEED,
            scalar: PhantomData,
        }
    }
}

/// Builds a [`Sequential`] model layer by layer; see [`Sequential::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SequentialBuilder<F> {
    input_size: usize,
    layers: Vec<LayerSpec>,
    seed: u64,
    scalar: PhantomData<F>,
}

impl<F: Scalar> SequentialBuilder<F> {
    /// Appends a [`Dense`] layer with `units` outputs, named `dense_<index>`.
    pub fn dense(self, units: usize, activation: Activation) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            name: None,
            input_size: None,
            output_size: units,
            activation_function: activation,
        }))
    }

    /// Appends a [`Dense`] layer with a name of your choosing.
    pub fn dense_named(
        self,
        name: impl Into<String>,
        units: usize,
        activation: Activation,
    ) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            name: Some(name.into()),
            input_size: None,
            output_size: units,
            activation_function: activation,
        }))
    }

    /// Appends inverted [`Dropout`] with probability `rate`.
    pub fn dropout(self, rate: f64) -> Self {
        self.layer(LayerSpec::Dropout(DropoutSpec {
            name: None,
            input_size: None,
            rate,
            seed: None,
        }))
    }

    /// Appends [`BatchNorm`] with PyTorch's defaults (momentum 0.1, ε = 1e-5).
    pub fn batch_norm(self) -> Self {
        self.layer(LayerSpec::BatchNorm(BatchNormSpec {
            name: None,
            input_size: None,
            momentum: 0.1,
            eps: 1e-5,
        }))
    }

    /// Appends [`LayerNorm`] with ε = 1e-5.
    pub fn layer_norm(self) -> Self {
        self.layer(LayerSpec::LayerNorm(LayerNormSpec {
            name: None,
            input_size: None,
            eps: 1e-5,
        }))
    }

    /// Appends any layer by its description.
    pub fn layer(mut self, spec: LayerSpec) -> Self {
        self.layers.push(spec);
        self
    }

    /// The seed of the `Xoshiro256PlusPlus` generator that initialises the weights
    /// (default [`DEFAULT_SEED`]).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The description of the model this builder makes.
    pub fn to_spec(&self) -> ModelSpec {
        let mut layers = self.layers.clone();
        if let Some(first) = layers.first_mut() {
            let input = Some(self.input_size);
            match first {
                LayerSpec::Dense(d) => d.input_size = input,
                LayerSpec::Dropout(d) => d.input_size = input,
                LayerSpec::BatchNorm(d) => d.input_size = input,
                LayerSpec::LayerNorm(d) => d.input_size = input,
            }
        }
        ModelSpec {
            seed: Some(self.seed),
            layers,
            preprocessing: None,
        }
    }

    /// Builds the model, initialising the layers in order from the seeded generator.
    pub fn build(self) -> Result<Sequential<F>> {
        Sequential::from_spec(&self.to_spec())
    }
}

/// Makes one layer from its checked description: fresh (`tensors` is `None`, weights drawn from
/// `rng`) or from saved tensors in the order of [`LayerSpec::tensor_shapes`].
pub(super) fn build_layer<F: Scalar>(
    index: usize,
    name: String,
    input: usize,
    spec: LayerSpec,
    model_seed: u64,
    rng: &mut Xoshiro256PlusPlus,
    tensors: Option<Vec<Vec<F>>>,
) -> Result<Box<dyn Layer<F>>> {
    let mut tensors = tensors.map(|t| t.into_iter().map(Array1::from_vec));
    let mut next = || tensors.as_mut().and_then(|t| t.next());
    Ok(match spec {
        LayerSpec::Dense(d) => {
            let dense = match (next(), next()) {
                (Some(w), Some(b)) => {
                    let w = w
                        .into_shape_with_order((input, d.output_size))
                        .map_err(|e| {
                            Error::Config(format!("layer {index} ({name}) weights: {e}"))
                        })?;
                    Dense::from_weights(name, w, b, d.activation_function)?
                }
                _ => {
                    let dense = Dense::new(input, d.output_size, d.activation_function, rng)?
                        .with_name(name);
                    log::info!(
                        "initialised {} (Dense): {input} -> {}, {}, He normal, seed {model_seed}",
                        dense.name(),
                        d.output_size,
                        d.activation_function
                    );
                    dense
                }
            };
            Box::new(dense)
        }
        LayerSpec::Dropout(d) => {
            let seed = d.seed.unwrap_or_else(|| {
                model_seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
            });
            Box::new(Dropout::new(name, input, d.rate, seed)?)
        }
        LayerSpec::BatchNorm(b) => Box::new(match (next(), next(), next(), next()) {
            (Some(g), Some(be), Some(m), Some(v)) => {
                BatchNorm::from_tensors(name, g, be, m, v, b.momentum, b.eps)
            }
            _ => BatchNorm::new(name, input, b.momentum, b.eps),
        }),
        LayerSpec::LayerNorm(l) => Box::new(match (next(), next()) {
            (Some(g), Some(be)) => LayerNorm::from_tensors(name, g, be, l.eps),
            _ => LayerNorm::new(name, input, l.eps),
        }),
    })
}
