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
    /// Appends a [`Dense`](crate::Dense) layer with `units` outputs, named `dense_<index>`.
    pub fn dense(self, units: usize, activation: Activation) -> Self {
        self.layer(LayerSpec::Dense(DenseSpec {
            name: None,
            input_size: None,
            output_size: units,
            activation_function: activation,
        }))
    }

    /// Appends a [`Dense`](crate::Dense) layer with a name of your choosing.
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

    /// Appends inverted [`Dropout`](crate::layer::Dropout) with probability `rate`.
    pub fn dropout(self, rate: f64) -> Self {
        self.layer(LayerSpec::Dropout(DropoutSpec {
            name: None,
            input_size: None,
            rate,
            seed: None,
        }))
    }

    /// Appends [`BatchNorm`](crate::layer::BatchNorm) with PyTorch's defaults (momentum 0.1, ε = 1e-5).
    pub fn batch_norm(self) -> Self {
        self.layer(LayerSpec::BatchNorm(BatchNormSpec {
            name: None,
            input_size: None,
            momentum: 0.1,
            eps: 1e-5,
        }))
    }

    /// Appends [`LayerNorm`](crate::layer::LayerNorm) with ε = 1e-5.
    pub fn layer_norm(self) -> Self {
        self.layer(LayerSpec::LayerNorm(LayerNormSpec {
            name: None,
            input_size: None,
            eps: 1e-5,
        }))
    }

    /// Appends an activation as a layer of its own
    /// ([`ActivationLayer`](crate::layer::ActivationLayer)), for one that follows a layer other
    /// than Dense (Dense layers carry their own).
    pub fn activation(self, activation: Activation) -> Self {
        self.layer(LayerSpec::Activation(ActivationSpec {
            name: None,
            input_size: None,
            activation_function: activation,
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
            first.set_input_size(self.input_size);
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
