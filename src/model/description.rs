//! A model as data: its description and its tensors, out and back in.

use super::*;
use crate::layer::Build;
use crate::spec::Resolved;

impl<F: Scalar> Sequential<F> {
    /// A model from its description, with fresh weights drawn from a `Xoshiro256PlusPlus`
    /// seeded with the description's seed (or [`DEFAULT_SEED`]): the numpy design's `from_dict`.
    pub fn from_spec(spec: &ModelSpec) -> Result<Self> {
        let resolved = spec.resolve()?;
        let seed = spec.seed.unwrap_or(DEFAULT_SEED);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let layers = resolved
            .layers
            .into_iter()
            .enumerate()
            .map(|(index, (name, input_size, layer))| {
                layer.build(Build {
                    index,
                    name,
                    input_size,
                    model_seed: seed,
                    rng: &mut rng,
                    tensors: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Sequential::from_layers(resolved.input_size, layers)?;
        model.preprocessing = spec.preprocessing.clone();
        Ok(model)
    }

    /// A model from its description and saved tensors: `tensors[layer][k]` holds the values of
    /// the `k`-th tensor of [`LayerSpec::tensor_shapes`], row-major. Lengths are checked
    /// against the description before any layer is made.
    pub(crate) fn from_tensors(spec: &ModelSpec, tensors: LayerTensors<F>) -> Result<Self> {
        let resolved = check_tensors(spec, &tensors)?;
        let seed = spec.seed.unwrap_or(DEFAULT_SEED);
        let mut layers: Vec<Box<dyn Layer<F>>> = Vec::with_capacity(tensors.len());
        for (i, ((name, input, layer), values)) in
            resolved.layers.into_iter().zip(tensors).enumerate()
        {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            layers.push(layer.build(Build {
                index: i,
                name,
                input_size: input,
                model_seed: seed,
                rng: &mut rng,
                tensors: Some(values),
            })?);
        }
        let mut model = Sequential::from_layers(resolved.input_size, layers)?;
        model.preprocessing = spec.preprocessing.clone();
        Ok(model)
    }

    /// The model's description (the numpy design's `to_dict`); [`from_spec`](Self::from_spec) of it
    /// gives a model of the same architecture with fresh weights.
    pub fn to_spec(&self) -> ModelSpec {
        ModelSpec {
            seed: None,
            layers: self.layers.iter().map(|l| l.to_spec()).collect(),
            preprocessing: self.preprocessing.clone(),
        }
    }

    /// The preprocessing kept with the model (standardisation, class names), if any.
    pub fn preprocessing(&self) -> Option<&Preprocessing> {
        self.preprocessing.as_ref()
    }

    /// Keeps `preprocessing` with the model; it is saved in every format.
    pub fn set_preprocessing(&mut self, preprocessing: Option<Preprocessing>) -> Result<()> {
        let mut spec = self.to_spec();
        spec.preprocessing = preprocessing;
        spec.resolve()?;
        self.preprocessing = spec.preprocessing;
        Ok(())
    }

    /// Replaces every layer's tensors with `tensors` (as [`tensors`](Self::tensors) gave them),
    /// keeping the step count.
    pub(crate) fn restore_tensors(&mut self, tensors: LayerTensors<F>) -> Result<()> {
        let steps = self.steps;
        *self = Sequential::from_tensors(&self.to_spec(), tensors)?;
        self.steps = steps;
        Ok(())
    }

    /// Every layer's tensors, copied, in the order of [`LayerSpec::tensor_shapes`].
    pub(crate) fn tensors(&self) -> LayerTensors<F> {
        self.tensor_views()
            .into_iter()
            .map(|layer| {
                layer
                    .into_iter()
                    .map(|t| t.data.values().into_owned())
                    .collect()
            })
            .collect()
    }

    /// Every layer's tensors, borrowed: `[layer][tensor]` in the order of
    /// [`LayerSpec::tensor_shapes`]. Savers write from these without copying.
    pub(crate) fn tensor_views(&self) -> Vec<Vec<Tensor<'_, F>>> {
        self.layers
            .iter()
            .map(|l| {
                let mut out = Vec::new();
                l.visit_tensors(&mut |t| out.push(t));
                out
            })
            .collect()
    }
}

/// Checks saved tensors against a description, as [`Sequential::from_tensors`] needs them: one
/// list per layer, each tensor the length its shape needs and every value finite. Returns the
/// resolved description.
pub(crate) fn check_tensors<F: Scalar>(
    spec: &ModelSpec,
    tensors: &LayerTensors<F>,
) -> Result<Resolved> {
    let resolved = spec.resolve()?;
    if tensors.len() != resolved.layers.len() {
        return Err(Error::spec(
            "model",
            format!(
                "{} layers described but tensors for {}",
                resolved.layers.len(),
                tensors.len()
            ),
        ));
    }
    for (i, ((name, input, layer), values)) in resolved.layers.iter().zip(tensors).enumerate() {
        let shapes = layer.tensor_shapes(*input);
        let bad = |reason: String| Error::spec(format!("layer {i} ({name})"), reason);
        if values.len() != shapes.len() {
            return Err(bad(format!(
                "{} tensors given, {} expected",
                values.len(),
                shapes.len()
            )));
        }
        for ((tensor, shape), v) in shapes.iter().zip(values) {
            let want: usize = shape.iter().product();
            if v.len() != want {
                return Err(bad(format!(
                    "{tensor} hold {} values, shape {shape:?} needs {want}",
                    v.len()
                )));
            }
            if !kernels::all_finite(v) {
                let p = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
                return Err(bad(format!("{tensor} value {p} is not finite")));
            }
        }
    }
    Ok(resolved)
}
