//! Model architecture as data: the numpy design's `to_dict` / `from_dict`, read from JSON or YAML.
//!
//! A model file lists its layers with the numpy design's keys:
//!
//! ```yaml
//! seed: 42            # optional: initialises the weights
//! layers:
//!   - type: Dense
//!     name: hidden
//!     input_size: 64
//!     output_size: 64
//!     activation_function: ReLU
//!   - type: Dense
//!     name: logits
//!     output_size: 10   # input_size may be left out after the first layer
//!     activation_function: Identity
//! ```
//!
//! Layer types form a closed set ([`LayerSpec`]). An unknown type, an unknown field, a missing
//! field, or a size that does not chain is an error naming the layer (index and name) and the
//! field. Trying another width is an edit to this file, not to code.

pub use crate::layer::{
    ActivationSpec, BatchNormSpec, Bf16DenseSpec, DenseSpec, DropoutSpec, Int8DenseSpec,
    LayerNormSpec, LayerSpec,
};
use crate::{Error, Loss, Result, Scalar};
use serde::{Deserialize, Serialize};

/// Limits that untrusted model files are held to. Every decoder checks them, and every length it
/// reads, before allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// Most layers in a model.
    pub max_layers: usize,
    /// Most elements in one tensor (a layer's weights).
    pub max_tensor_elements: u64,
    /// Most parameters in a whole model.
    pub max_params: u64,
    /// Deepest nesting of a JSON or YAML document.
    pub max_depth: usize,
}

impl Limits {
    /// The limits crank uses: 8 GiB files, 1,024 layers, 2³⁰ elements per tensor, 2³¹
    /// parameters, nesting depth 64.
    pub const DEFAULT: Limits = Limits {
        max_file_bytes: 8 << 30,
        max_layers: 1024,
        max_tensor_elements: 1 << 30,
        max_params: 1 << 31,
        max_depth: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A whole model's architecture: the document a model file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Seed for the weights' initialisation (default [`crate::model::DEFAULT_SEED`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
    /// How raw inputs are turned into the model's inputs and outputs into labels, kept with the
    /// model so that predictions apply the same as training did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocessing: Option<Preprocessing>,
}

/// What a model needs besides its layers to serve raw data: the standardisation fitted on the
/// training data, the names of the classes and the loss it was trained with.
///
/// What the model is for follows: with `classes`, a classifier, binary when it has one output
/// (the logit of the second class, as [`Loss::BinaryCrossEntropy`] trains) and multi-class
/// otherwise (one logit per class); without, a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Per-feature mean subtracted from the inputs.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation the centred inputs are divided by.
    pub std: Vec<f64>,
    /// The class names, in output order (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// The name of the label column the model was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The loss the model was trained with (evaluation reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
}

/// A checked model description: every layer with its name and input size resolved.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub input_size: usize,
    /// The values of every layer's tensors together (within [`Limits::max_params`]).
    pub params: u64,
    /// `(name, input_size, spec)` per layer.
    pub layers: Vec<(String, usize, LayerSpec)>,
}

fn layer_err(index: usize, name: &str, reason: impl std::fmt::Display) -> Error {
    Error::spec(format!("layer {index} ({name})"), reason)
}

impl ModelSpec {
    /// Parses a JSON document.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::spec("JSON", e))?;
        Self::from_value(value)
    }

    /// Parses a YAML document. Aliases, nesting depth and document size are budgeted, so an
    /// alias bomb or a deeply nested file fails with an error instead of exhausting memory.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let value: serde_json::Value = parse_yaml(text)?;
        Self::from_value(value)
    }

    /// Builds the description from a parsed JSON or YAML value, with errors naming each layer.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            seed: Option<u64>,
            layers: Vec<serde_json::Value>,
            #[serde(default)]
            preprocessing: Option<Preprocessing>,
        }
        let raw: Raw = serde_json::from_value(value).map_err(|e| Error::spec("model", e))?;
        if raw.layers.len() > Limits::DEFAULT.max_layers {
            return Err(Error::spec(
                "model",
                format!(
                    "{} layers is more than the limit of {}",
                    raw.layers.len(),
                    Limits::DEFAULT.max_layers
                ),
            ));
        }
        let layers = raw
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let name = v
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| "unnamed".to_string(), str::to_string);
                serde_json::from_value::<LayerSpec>(v).map_err(|e| layer_err(i, &name, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = ModelSpec {
            seed: raw.seed,
            layers,
            preprocessing: raw.preprocessing,
        };
        spec.resolve()?;
        Ok(spec)
    }

    /// How many values the tensors of a model built from this description hold (every layer's
    /// weights and biases, and running statistics, as a saved file holds them), found without
    /// building it; an error where building would fail (sizes that do not chain, limits
    /// exceeded).
    ///
    /// ```
    /// let spec = crank::spec::ModelSpec::from_yaml(
    ///     "layers:\n  - {type: Dense, input_size: 4, output_size: 3, activation_function: ReLU}",
    /// )?;
    /// assert_eq!(spec.tensor_values()?, 4 * 3 + 3);
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn tensor_values(&self) -> Result<u64> {
        Ok(self.resolve()?.params)
    }

    /// The description as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a ModelSpec always serializes")
    }

    /// The description as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| Error::spec("YAML output", e))
    }

    /// Checks sizes, names and limits, and fills in names and input sizes.
    pub(crate) fn resolve(&self) -> Result<Resolved> {
        let limits = Limits::DEFAULT;
        let model_err = |reason: String| Error::spec("model", reason);
        if self.layers.is_empty() {
            return Err(model_err("a model needs at least one layer".into()));
        }
        if self.layers.len() > limits.max_layers {
            return Err(model_err(format!("more than {} layers", limits.max_layers)));
        }
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut width: Option<usize> = None;
        let mut params: u64 = 0;
        let mut names = std::collections::HashSet::new();
        for (i, spec) in self.layers.iter().enumerate() {
            let name = spec.name().map_or_else(
                || format!("{}_{i}", spec.kind().to_lowercase()),
                str::to_string,
            );
            let err = |reason: String| layer_err(i, &name, reason);
            let input = chained_input(spec, width).map_err(err)?;
            spec.check().map_err(err)?;
            params += tensor_values(spec, input, &limits).map_err(err)?;
            if params > limits.max_params {
                return Err(err(format!(
                    "the model exceeds the limit of {} parameters",
                    limits.max_params
                )));
            }
            if !names.insert(name.clone()) {
                return Err(err("field `name` repeats an earlier layer's name".into()));
            }
            width = Some(spec.output_size(input));
            layers.push((name, input, spec.clone()));
        }
        if let Some(p) = &self.preprocessing {
            p.check(layers[0].1, width.unwrap_or(0))
                .map_err(|reason| Error::spec("preprocessing", reason))?;
        }
        Ok(Resolved {
            input_size: layers[0].1,
            params,
            layers,
        })
    }
}

/// A layer's input size: the one it declares, which must match the previous layer's output
/// (`width`), or that output; and neither it nor the layer's output size may be 0.
fn chained_input(spec: &LayerSpec, width: Option<usize>) -> std::result::Result<usize, String> {
    let input = match (width, spec.input_size()) {
        (None, None) => return Err("field `input_size` is required on the first layer".into()),
        (Some(w), Some(given)) if given != w => {
            return Err(format!(
                "field `input_size` is {given}, but the previous layer's output_size is {w}"
            ));
        }
        (_, Some(given)) => given,
        (Some(w), None) => w,
    };
    for (field, v) in [
        ("input_size", input),
        ("output_size", spec.output_size(input)),
    ] {
        if v == 0 {
            return Err(format!("field `{field}` must be at least 1"));
        }
    }
    Ok(input)
}

/// The values a layer's tensors hold, each tensor within `limits`.
fn tensor_values(
    spec: &LayerSpec,
    input: usize,
    limits: &Limits,
) -> std::result::Result<u64, String> {
    let mut values = 0;
    for (tensor, shape) in spec.tensor_shapes(input) {
        let n = shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        match n {
            Some(n) if n <= limits.max_tensor_elements => values += n,
            _ => {
                return Err(format!(
                    "{tensor} of shape {shape:?} exceed the limit of {} elements",
                    limits.max_tensor_elements
                ));
            }
        }
    }
    Ok(values)
}

impl Preprocessing {
    /// Standardises raw inputs in place as the model's training data was: `(x − mean) / std`
    /// per feature, computed in f64 and rounded once to `F`, as `crank predict` does. An error
    /// if `x` does not have one column per feature.
    ///
    /// ```
    /// use crank::spec::Preprocessing;
    /// let p = Preprocessing { mean: vec![1.0, 10.0], std: vec![2.0, 5.0], classes: None, label: None, loss: None };
    /// let mut x = ndarray::array![[3.0f32, 0.0]];
    /// p.standardize(&mut x)?;
    /// assert_eq!(x, ndarray::array![[1.0f32, -2.0]]);
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn standardize<F: Scalar>(&self, x: &mut ndarray::Array2<F>) -> Result<()> {
        if x.ncols() != self.mean.len() {
            return Err(Error::shape(
                "standardisation input",
                format!("(samples, {})", self.mean.len()),
                format!("{:?}", x.dim()),
            ));
        }
        for mut row in x.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = F::of((v.as_f64() - m) / s);
            }
        }
        Ok(())
    }

    /// Checks the standardisation against the model's `inputs` and the class names against
    /// its `outputs` (one logit per class, or a binary classifier's one logit for two).
    fn check(&self, inputs: usize, outputs: usize) -> std::result::Result<(), String> {
        if self.mean.len() != inputs || self.std.len() != inputs {
            return Err(format!(
                "{} means and {} deviations for {inputs} inputs",
                self.mean.len(),
                self.std.len()
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err("means must be finite and deviations finite and positive".into());
        }
        if let Some(c) = &self.classes
            && c.len() != outputs
            && !(c.len() == 2 && outputs == 1)
        {
            return Err(format!("{} class names for {outputs} outputs", c.len()));
        }
        Ok(())
    }
}

/// Reads a JSON or YAML document (by the file's extension: `.json` is JSON, anything else YAML,
/// which also reads JSON) under crank's limits.
pub fn read_document(path: &std::path::Path) -> Result<serde_json::Value> {
    let io = Error::io(path);
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > 64 << 20 {
        return Err(Error::spec(
            path.display().to_string(),
            format!("{len} bytes is more than a description may hold (64 MiB)"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let in_file = |e: Error| match e {
        Error::Spec { at, reason } => Error::Spec {
            at: format!("{} ({at})", path.display()),
            reason,
        },
        other => other,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(&text).map_err(|e| in_file(Error::spec("JSON", e)))
    } else {
        parse_yaml(&text).map_err(in_file)
    }
}

/// Parses YAML into any deserializable type under crank's budget.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = Limits::DEFAULT.max_depth;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_events = 1_000_000;
    budget.max_nodes = 250_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    serde_saphyr::from_str_with_options(text, options).map_err(|e| Error::Spec {
        at: "YAML".into(),
        // The first line says what and where; the rest is a drawn snippet of the input.
        reason: e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "
seed: 7
layers:
  - type: Dense
    name: hidden
    input_size: 64
    output_size: 32
    activation_function: ReLU
  - type: Dense
    output_size: 10
";

    #[test]
    fn yaml_and_json_give_the_same_spec() {
        let from_yaml = ModelSpec::from_yaml(YAML).unwrap();
        let from_json = ModelSpec::from_json(&from_yaml.to_json()).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(
            ModelSpec::from_yaml(&from_yaml.to_yaml().unwrap()).unwrap(),
            from_yaml
        );
        let r = from_yaml.resolve().unwrap();
        assert_eq!(r.input_size, 64);
        assert_eq!(r.layers[1].0, "dense_1");
        assert_eq!(r.layers[1].1, 32);
    }

    fn err(json: &str) -> String {
        ModelSpec::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_layer_and_field() {
        let e = err(r#"{"layers": [{"type": "Conv", "name": "c", "output_size": 3}]}"#);
        assert!(e.contains("layer 0 (c)") && e.contains("Conv"), "{e}");
        let e = err(
            r#"{"layers": [{"type": "Dense", "name": "a", "input_size": 2, "output_size": 3, "units": 4}]}"#,
        );
        assert!(e.contains("layer 0 (a)") && e.contains("units"), "{e}");
        let e = err(r#"{"layers": [{"type": "Dense", "name": "a", "input_size": 2}]}"#);
        assert!(
            e.contains("layer 0 (a)") && e.contains("output_size"),
            "{e}"
        );
        let e = err(
            r#"{"layers": [{"type": "Dense", "input_size": 2, "output_size": 3},
                           {"type": "Dense", "name": "b", "input_size": 4, "output_size": 1}]}"#,
        );
        assert!(
            e.contains("layer 1 (b)")
                && e.contains("input_size")
                && e.contains("is 4")
                && e.contains("is 3"),
            "{e}"
        );
        let e = err(r#"{"layers": [{"type": "Dense", "name": "a", "output_size": 3}]}"#);
        assert!(e.contains("layer 0 (a)") && e.contains("input_size"), "{e}");
        let e = err(
            r#"{"layers": [{"type": "Dense", "name": "a", "input_size": 1000000, "output_size": 1000000}]}"#,
        );
        assert!(e.contains("layer 0 (a)") && e.contains("limit"), "{e}");
        let e = err(r#"{"layers": [], "widht": 3}"#);
        assert!(e.contains("widht"), "{e}");
        let e = err(r#"{"layers": []}"#);
        assert!(e.contains("at least one layer"), "{e}");
        let e = err(
            r#"{"layers": [{"type": "Dense", "name": "a", "input_size": 2, "output_size": 3, "activation_function": "Swish"}]}"#,
        );
        assert!(e.contains("layer 0 (a)") && e.contains("Swish"), "{e}");
    }

    #[test]
    fn yaml_alias_bomb_and_deep_nesting_fail_cleanly() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        bomb.push_str("layers: []\n");
        let e = ModelSpec::from_yaml(&bomb).unwrap_err().to_string();
        assert!(e.contains("YAML") && e.contains("budget"), "{e}");
        let deep = format!("layers: {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = ModelSpec::from_yaml(&deep).unwrap_err().to_string();
        assert!(e.contains("YAML"), "{e}");
        let deep = format!(
            "{{\"layers\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(ModelSpec::from_json(&deep).is_err());
    }
}
