//! safetensors with PyTorch's names and layouts.
//!
//! A crank model of Dense layers is saved as the `state_dict` of the `torch.nn.Sequential` that
//! interleaves `Linear` layers with activation modules: `N.weight` of shape `[out, in]` and
//! `N.bias` of shape `[out]`, where `N` counts modules (a Dense layer with an activation other
//! than Identity takes two places: `Linear`, then e.g. `ReLU`). crank's own description goes in
//! the metadata under `"crank_spec"`, so crank reads its files back without help; a file saved
//! by PyTorch needs the architecture passed in.

use super::binary::{from_le_bytes, le_bytes};
use crate::spec::{LayerSpec, ModelSpec};
use crate::{Activation, Error, Result, Scalar, Sequential};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

const FORMAT: &str = "safetensors";

fn err(at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

/// The PyTorch module index of each layer in the equivalent `torch.nn.Sequential`: the names of
/// its tensors are `"{index}.weight"`, `"{index}.bias"` (and for batch normalisation
/// `"{index}.running_mean"`, `"{index}.running_var"`, `"{index}.num_batches_tracked"`).
pub fn torch_names(spec: &ModelSpec) -> Vec<usize> {
    let mut next = 0;
    spec.layers
        .iter()
        .map(|layer| {
            let index = next;
            next += match layer {
                LayerSpec::Dense(d) if d.activation_function != Activation::Identity => 2,
                _ => 1,
            };
            index
        })
        .collect()
}

/// PyTorch's name for each of a layer's tensors, in crank's order, and whether PyTorch stores
/// it transposed (`Linear.weight` is `[out, in]`).
fn torch_tensors(layer: &LayerSpec) -> &'static [(&'static str, bool)] {
    match layer {
        LayerSpec::Dense(_) => &[("weight", true), ("bias", false)],
        LayerSpec::BatchNorm(_) => &[
            ("weight", false),
            ("bias", false),
            ("running_mean", false),
            ("running_var", false),
        ],
        LayerSpec::LayerNorm(_) => &[("weight", false), ("bias", false)],
        // Refused before naming (a state dict has no int8 or bf16 Linear).
        LayerSpec::Dropout(_)
        | LayerSpec::Activation(_)
        | LayerSpec::Int8Dense(_)
        | LayerSpec::Bf16Dense(_) => &[],
    }
}

/// `[rows, cols]` row-major to `[cols, rows]` row-major, in square tiles so that reads and
/// writes both stay within a few cache lines.
fn transpose<F: Scalar>(data: &[F], rows: usize, cols: usize) -> Vec<F> {
    const TILE: usize = 16;
    debug_assert_eq!(data.len(), rows * cols);
    let mut out = vec![F::zero(); data.len()];
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let src = &data[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(src) {
                    out[c * rows + r] = v;
                }
            }
        }
    }
    out
}

pub(super) fn encode<F: Scalar>(model: &Sequential<F>) -> Result<Vec<u8>> {
    let spec = model.to_spec();
    let dtype = if F::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    };
    let resolved = spec.resolve()?;
    if let Some(p) = model.precision() {
        return Err(err(
            "output",
            format!(
                "a safetensors file holds a PyTorch state dict of f32 or f64 tensors; save this \
                 {p} model as .crank or .json"
            ),
        ));
    }
    let steps = model.steps().to_le_bytes();
    // Transposed weights are the only copies; everything else is borrowed from the layers.
    let mut floats: Vec<(String, Vec<usize>, Cow<'_, [F]>)> = Vec::new();
    let mut counters = Vec::new();
    for ((index, (_, _, layer)), values) in torch_names(&spec)
        .into_iter()
        .zip(&resolved.layers)
        .zip(model.tensor_views())
    {
        for ((suffix, transposed), tensor) in torch_tensors(layer).iter().zip(values) {
            let name = format!("{index}.{suffix}");
            floats.push(match (*transposed, tensor.shape) {
                (true, &[rows, cols]) => (
                    name,
                    vec![cols, rows],
                    Cow::Owned(transpose(&tensor.data.values(), rows, cols)),
                ),
                _ => (name, tensor.shape.to_vec(), tensor.data.values()),
            });
        }
        if let LayerSpec::BatchNorm(_) = layer {
            // PyTorch's BatchNorm1d carries a batch counter (int64, shape []); crank does not
            // use it, but load_state_dict(strict=True) expects it.
            counters.push(format!("{index}.num_batches_tracked"));
        }
    }
    let floats: Vec<_> = floats
        .iter()
        .map(|(name, shape, data)| (name, dtype, shape.clone(), le_bytes(data)))
        .collect();
    let views = floats
        .iter()
        .map(|(name, dtype, shape, bytes)| (*name, *dtype, shape.clone(), &bytes[..]))
        .chain(
            counters
                .iter()
                .map(|name| (name, Dtype::I64, vec![], &steps[..])),
        )
        .map(|(name, dtype, shape, bytes)| {
            let view =
                TensorView::new(dtype, shape, bytes).map_err(|e| err(name, e.to_string()))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), "crank".to_string()),
        ("version".to_string(), super::FORMAT_VERSION.to_string()),
        ("crank_spec".to_string(), spec.to_json()),
    ]);
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| err("output", e.to_string()))?;
    metadata_in_name_order(bytes)
}

/// The same file with its header's `__metadata__` entries in name order. The safetensors crate
/// takes them as a `HashMap` and writes them in its iteration order, which differs from one map
/// to the next: without this, saving the same model twice could give two different files.
/// (serde_json's map sorts its keys already, unless some dependency turns on its
/// `preserve_order` feature, which keeps the order read; the sort makes that not matter.)
/// The header is rewritten in place when its length does not change (the same entries, the
/// same length, as serde_json writes them); the tensors' bytes move only otherwise.
fn metadata_in_name_order(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    const LEN: usize = std::mem::size_of::<u64>();
    let bad = |reason: String| err("output header", reason);
    let (n, _) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let end = LEN + n;
    let mut header: serde_json::Value =
        serde_json::from_slice(&bytes[LEN..end]).map_err(|e| bad(e.to_string()))?;
    if let Some(serde_json::Value::Object(meta)) = header.get_mut("__metadata__") {
        let mut entries: Vec<_> = std::mem::take(meta).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        meta.extend(entries);
    }
    let mut text = serde_json::to_vec(&header).map_err(|e| bad(e.to_string()))?;
    // Padded with spaces to a multiple of 8 bytes, as the crate pads it, so the data stays aligned.
    text.resize(text.len().next_multiple_of(LEN), b' ');
    if text.len() == n {
        bytes[LEN..end].copy_from_slice(&text);
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(LEN + text.len() + bytes.len() - end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

pub(super) fn decode<F: Scalar>(bytes: &[u8], spec: Option<&ModelSpec>) -> Result<Sequential<F>> {
    let (_, metadata) =
        SafeTensors::read_metadata(bytes).map_err(|e| err("header", e.to_string()))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| err("header", e.to_string()))?;
    let from_file;
    let spec = match spec {
        Some(s) => s,
        None => {
            let text = metadata
                .metadata()
                .as_ref()
                .and_then(|m| m.get("crank_spec"))
                .ok_or_else(|| {
                    err(
                        "metadata",
                        "no crank architecture (`crank_spec`); pass the model's description",
                    )
                })?;
            from_file = ModelSpec::from_json(text)?;
            &from_file
        }
    };
    let resolved = spec.resolve()?;
    let mut expected = HashSet::new();
    let mut tensors = Vec::with_capacity(resolved.layers.len());
    for (index, (name, input, layer)) in torch_names(spec).into_iter().zip(&resolved.layers) {
        let mut values = Vec::new();
        for ((suffix, transposed), (_, shape)) in
            torch_tensors(layer).iter().zip(layer.tensor_shapes(*input))
        {
            let key = format!("{index}.{suffix}");
            let at = format!("tensor `{key}` (layer {name})");
            let stored_shape = if *transposed {
                vec![shape[1], shape[0]]
            } else {
                shape.clone()
            };
            let view = file.tensor(&key).map_err(|_| err(&at, "missing"))?;
            if view.shape() != stored_shape.as_slice() {
                return Err(err(
                    &at,
                    format!("shape {:?}, expected {stored_shape:?}", view.shape()),
                ));
            }
            let dtype = match view.dtype() {
                Dtype::F32 => "f32",
                Dtype::F64 => "f64",
                other => {
                    return Err(err(
                        &at,
                        format!("dtype {other:?}; crank reads F32 and F64"),
                    ));
                }
            };
            // The file's own bytes when they are already aligned values of `F`; a copy otherwise.
            let data: Cow<'_, [F]> = match bytemuck::try_cast_slice::<u8, F>(view.data()) {
                Ok(values) if dtype == F::NAME && cfg!(target_endian = "little") => {
                    Cow::Borrowed(values)
                }
                _ => Cow::Owned(
                    from_le_bytes(view.data(), dtype)
                        .ok_or_else(|| err(&at, "data length does not match its shape"))?,
                ),
            };
            values.push(if *transposed {
                transpose(&data, shape[1], shape[0])
            } else {
                data.into_owned()
            });
            expected.insert(key);
        }
        if let LayerSpec::BatchNorm(_) = layer {
            expected.insert(format!("{index}.num_batches_tracked"));
        }
        tensors.push(values);
    }
    if let Some(extra) = file.names().into_iter().find(|n| !expected.contains(*n)) {
        return Err(err(
            format!("tensor `{extra}`"),
            "not part of the architecture",
        ));
    }
    Sequential::from_tensors(spec, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_transpose_matches_the_definition() {
        // Sizes around and across the tile edge.
        for (rows, cols) in [(1, 1), (3, 40), (17, 16), (33, 47)] {
            let data: Vec<f64> = (0..rows * cols).map(|i| i as f64).collect();
            let t = transpose(&data, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        data[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
            assert_eq!(transpose(&t, cols, rows), data);
        }
    }

    /// A header whose entries come out shorter than they went in (here, spaces inside it) is
    /// rewritten with the tensors moved after it: the file reads back the same, metadata sorted.
    #[test]
    fn a_header_that_changes_length_moves_the_tensors() {
        let values = [1.5f32, -2.0, 0.25];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let json = r#"{ "__metadata__": {"b": "2", "a": "1"},
            "t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]} }"#;
        let mut header = json.as_bytes().to_vec();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(&header);
        file.extend_from_slice(&data);

        let out = metadata_in_name_order(file.clone()).unwrap();
        assert!(out.len() < file.len());
        let back = SafeTensors::deserialize(&out).unwrap();
        assert_eq!(back.tensor("t").unwrap().data(), &data[..]);
        let (n, meta) = SafeTensors::read_metadata(&out).unwrap();
        assert_eq!(n % 8, 0);
        let text = std::str::from_utf8(&out[8..8 + n]).unwrap();
        assert!(text.find(r#""a""#).unwrap() < text.find(r#""b""#).unwrap());
        assert_eq!(meta.metadata().as_ref().unwrap().len(), 2);
    }

    #[test]
    fn misaligned_and_other_dtype_bytes_are_converted() {
        let values = [1.5f32, -2.25, 3.0e-7];
        let mut bytes = vec![0u8];
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        // One byte in: not aligned for f32, so the copy path runs.
        assert_eq!(from_le_bytes::<f32>(&bytes[1..], "f32").unwrap(), values);
        let wide: Vec<f64> = from_le_bytes(&bytes[1..], "f32").unwrap();
        assert_eq!(wide, values.map(f64::from));
        assert!(from_le_bytes::<f32>(&bytes[1..11], "f32").is_none());
        assert!(from_le_bytes::<f32>(&bytes[1..], "f16").is_none());
    }
}
