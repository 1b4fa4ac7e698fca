//! The JSON dict format: the architecture, with each layer's tensors as nested arrays.

use super::FORMAT_VERSION;
use crate::spec::{LayerSpec, ModelSpec};
use crate::{Error, Result, Scalar, Sequential};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

const FORMAT: &str = "JSON model";

fn err(at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

/// A row-major tensor written as nested arrays of its shape.
struct Nested<'a, F> {
    shape: &'a [usize],
    data: &'a [F],
}

impl<F: Scalar> Serialize for Nested<'_, F> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.shape {
            [] | [_] => {
                let mut seq = s.serialize_seq(Some(self.data.len()))?;
                for v in self.data {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            [rows, inner @ ..] => {
                let step = self.data.len() / (*rows).max(1);
                let mut seq = s.serialize_seq(Some(*rows))?;
                for chunk in self.data.chunks(step.max(1)) {
                    seq.serialize_element(&Nested {
                        shape: inner,
                        data: chunk,
                    })?;
                }
                seq.end()
            }
        }
    }
}

/// One layer: its description's fields followed by its tensors.
struct LayerOut<'a, F> {
    spec: Map<String, Value>,
    tensors: Vec<(&'static str, Vec<usize>, &'a [F])>,
}

impl<F: Scalar> Serialize for LayerOut<'_, F> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.spec.len() + self.tensors.len()))?;
        for (k, v) in &self.spec {
            map.serialize_entry(k, v)?;
        }
        for (name, shape, data) in &self.tensors {
            map.serialize_entry(name, &Nested { shape, data })?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct ModelOut<'a, F: Scalar> {
    format: &'static str,
    version: u32,
    dtype: &'static str,
    layers: Vec<LayerOut<'a, F>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    preprocessing: Option<crate::spec::Preprocessing>,
}

pub(super) fn encode<F: Scalar>(model: &Sequential<F>) -> Result<Vec<u8>> {
    let spec = model.to_spec();
    let tensors = model.tensors();
    let resolved = spec.resolve()?;
    let mut layers = Vec::with_capacity(tensors.len());
    for (i, ((name, input, layer), values)) in resolved.layers.iter().zip(&tensors).enumerate() {
        let Value::Object(fields) = serde_json::to_value(layer).expect("a LayerSpec serializes")
        else {
            unreachable!("a LayerSpec serializes to an object");
        };
        let mut out = Vec::new();
        for ((tensor, shape), data) in layer.tensor_shapes(*input).into_iter().zip(values) {
            if let Some(p) = data.iter().position(|v| !v.is_finite()) {
                return Err(err(
                    format!("layer {i} ({name}) {tensor}"),
                    format!("value {p} is {}, which JSON cannot hold", data[p]),
                ));
            }
            out.push((tensor, shape, data.as_slice()));
        }
        layers.push(LayerOut {
            spec: fields,
            tensors: out,
        });
    }
    let doc = ModelOut {
        format: "crank",
        version: super::version_of(model),
        dtype: F::NAME,
        layers,
        preprocessing: spec.preprocessing.clone(),
    };
    serde_json::to_vec(&doc).map_err(|e| err("output", e.to_string()))
}

/// Reads nested arrays of exactly `shape` into `out`.
fn read_nested<F: Scalar>(
    v: &Value,
    shape: &[usize],
    path: &mut String,
    out: &mut Vec<F>,
) -> Result<()> {
    match shape {
        [] => {
            let x = v.as_f64().ok_or_else(|| {
                err(
                    path.clone(),
                    format!("expected a number, found {}", kind(v)),
                )
            })?;
            let x = F::of(x);
            if !x.is_finite() {
                return Err(err(
                    path.clone(),
                    format!("{v} is out of range for {}", F::NAME),
                ));
            }
            out.push(x);
        }
        [n, inner @ ..] => {
            let items = v.as_array().ok_or_else(|| {
                err(
                    path.clone(),
                    format!("expected an array of {n}, found {}", kind(v)),
                )
            })?;
            if items.len() != *n {
                return Err(err(
                    path.clone(),
                    format!("expected {n} entries, found {}", items.len()),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                read_nested(item, inner, path, out)?;
                path.truncate(len);
            }
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn decode<F: Scalar>(bytes: &[u8]) -> Result<Sequential<F>> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| err("document", e.to_string()))?;
    let Value::Object(mut top) = doc else {
        return Err(err(
            "document",
            format!("expected an object, found {}", kind(&doc)),
        ));
    };
    match top.remove("format") {
        Some(Value::String(f)) if f == "crank" => {}
        other => {
            return Err(err(
                "field `format`",
                format!("expected \"crank\", found {other:?}"),
            ));
        }
    }
    match top.remove("version").as_ref().and_then(Value::as_u64) {
        Some(v) if v >= 1 && v <= FORMAT_VERSION as u64 => {}
        Some(v) => {
            return Err(err(
                "field `version`",
                format!("version {v} is not one this crank reads (1 to {FORMAT_VERSION})"),
            ));
        }
        None => return Err(err("field `version`", "missing or not a whole number")),
    }
    match top.remove("dtype") {
        Some(Value::String(d)) if d == "f32" || d == "f64" => {}
        other => {
            return Err(err(
                "field `dtype`",
                format!("expected \"f32\" or \"f64\", found {other:?}"),
            ));
        }
    }
    let Some(Value::Array(raw_layers)) = top.remove("layers") else {
        return Err(err("field `layers`", "missing or not an array"));
    };
    let preprocessing = top.remove("preprocessing");
    if let Some(k) = top.keys().next() {
        return Err(err("document", format!("unknown field `{k}`")));
    }

    // Split each layer into its description and its tensors.
    let mut descriptions = Vec::with_capacity(raw_layers.len());
    let mut tensor_values = Vec::with_capacity(raw_layers.len());
    for (i, layer) in raw_layers.into_iter().enumerate() {
        let Value::Object(mut fields) = layer else {
            return Err(err(format!("layer {i}"), "expected an object"));
        };
        let kind = fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tensors: Vec<Option<Value>> = LayerSpec::tensor_names(&kind)
            .iter()
            .map(|t| fields.remove(*t))
            .collect();
        descriptions.push(Value::Object(fields));
        tensor_values.push(tensors);
    }
    let mut spec_doc = Map::new();
    spec_doc.insert("layers".into(), Value::Array(descriptions));
    if let Some(p) = preprocessing {
        spec_doc.insert("preprocessing".into(), p);
    }
    let spec = ModelSpec::from_value(Value::Object(spec_doc))?;
    let resolved = spec.resolve()?;

    let mut tensors = Vec::with_capacity(tensor_values.len());
    for (i, ((name, input, layer), values)) in resolved.layers.iter().zip(tensor_values).enumerate()
    {
        let mut layer_tensors = Vec::new();
        for ((tensor, shape), value) in layer.tensor_shapes(*input).into_iter().zip(values) {
            let mut path = format!("layer {i} ({name}) {tensor}");
            let value = value.ok_or_else(|| err(path.clone(), "missing"))?;
            let mut data = Vec::with_capacity(shape.iter().product::<usize>().min(bytes.len() / 2));
            read_nested(&value, &shape, &mut path, &mut data)?;
            layer_tensors.push(data);
        }
        tensors.push(layer_tensors);
    }
    Sequential::from_tensors(&spec, tensors)
}
