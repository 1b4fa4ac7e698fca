//! The compact binary format: bincode framing behind a magic number and a version.
//!
//! Layout: `CRANKBIN` (8 bytes), the format version (u32, little-endian), then bincode
//! (fixed-width little-endian integers) of [`BinModel`]: the dtype, the architecture as JSON,
//! and each tensor's values as little-endian bytes, in the order of
//! [`LayerSpec::tensor_shapes`](crate::spec::LayerSpec::tensor_shapes).
//!
//! bincode is unmaintained (RUSTSEC-2025-0141); crank pins 1.3.3, the last release that takes a
//! runtime byte limit, and uses it only here, so it can be swapped without touching the format.
//! The limit is the number of bytes left in the file, and bincode checks every length it reads
//! against it before allocating.

use super::FORMAT_VERSION;
use crate::spec::ModelSpec;
use crate::{Error, Result, Scalar, Sequential};
use bincode::Options;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

pub(super) const MAGIC: &[u8; 8] = b"CRANKBIN";
const FORMAT: &str = "bincode model";

fn err(at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

#[derive(Serialize, Deserialize)]
struct BinModel {
    dtype: String,
    spec: String,
    tensors: Vec<ByteBuf>,
}

/// bincode's settings for every crank file: fixed-width little-endian integers, at most
/// `limit` bytes read, no trailing bytes.
pub(super) fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit)
        .reject_trailing_bytes()
}

/// Little-endian bytes of a slice of values.
pub(crate) fn to_le_bytes<F: Scalar>(values: &[F]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    if F::NAME == "f32" {
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&(v.as_f64() as f32).to_le_bytes()));
    } else {
        values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.as_f64().to_le_bytes()));
    }
    out
}

/// Values of type `F` from little-endian bytes of `dtype` (`"f32"` or `"f64"`); `None` when
/// the length is not a whole number of values.
pub(crate) fn from_le_bytes<F: Scalar>(bytes: &[u8], dtype: &str) -> Option<Vec<F>> {
    match dtype {
        "f32" if bytes.len().is_multiple_of(4) => Some(
            bytes
                .chunks_exact(4)
                .map(|c| F::of(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64))
                .collect(),
        ),
        "f64" if bytes.len().is_multiple_of(8) => Some(
            bytes
                .chunks_exact(8)
                .map(|c| F::of(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
                .collect(),
        ),
        _ => None,
    }
}

pub(super) fn encode<F: Scalar>(model: &Sequential<F>) -> Result<Vec<u8>> {
    let doc = BinModel {
        dtype: F::NAME.to_string(),
        spec: model.to_spec().to_json(),
        tensors: model
            .tensors()
            .iter()
            .flatten()
            .map(|t| ByteBuf::from(to_le_bytes(t)))
            .collect(),
    };
    framed(MAGIC, FORMAT_VERSION, &doc).map_err(|e| err("output", e.to_string()))
}

/// `magic`, `version` (u32 LE), then the bincode of `doc`.
pub(super) fn framed<T: Serialize>(
    magic: &[u8; 8],
    version: u32,
    doc: &T,
) -> bincode::Result<Vec<u8>> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    options(u64::MAX).serialize_into(&mut out, doc)?;
    Ok(out)
}

/// Checks the magic number and version of a framed file and decodes its body.
pub(super) fn unframe<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    magic: &[u8; 8],
    newest: u32,
    format: &'static str,
) -> Result<T> {
    let err = |at: &str, reason: String| Error::File {
        format,
        at: at.into(),
        reason,
    };
    if !bytes.starts_with(magic) {
        return Err(err(
            "header",
            format!(
                "missing the magic number {}",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = bytes
        .get(8..12)
        .map(|v| u32::from_le_bytes(v.try_into().expect("4 bytes")))
        .ok_or_else(|| err("header", "truncated before the version".into()))?;
    if version == 0 || version > newest {
        return Err(err(
            "header",
            format!("version {version} is not one this crank reads (1 to {newest})"),
        ));
    }
    let body = &bytes[12..];
    options(body.len() as u64)
        .deserialize(body)
        .map_err(|e| err("body", e.to_string()))
}

pub(super) fn decode<F: Scalar>(bytes: &[u8]) -> Result<Sequential<F>> {
    let doc: BinModel = unframe(bytes, MAGIC, FORMAT_VERSION, FORMAT)?;
    let spec = ModelSpec::from_json(&doc.spec)?;
    let resolved = spec.resolve()?;
    let width = match doc.dtype.as_str() {
        "f32" => 4,
        "f64" => 8,
        other => {
            return Err(err(
                "dtype",
                format!("expected \"f32\" or \"f64\", found {other:?}"),
            ));
        }
    };
    let mut stored = doc.tensors.into_iter();
    let mut tensors = Vec::with_capacity(resolved.layers.len());
    for (i, (name, input, layer)) in resolved.layers.iter().enumerate() {
        let mut layer_tensors = Vec::new();
        for (tensor, shape) in layer.tensor_shapes(*input) {
            let at = format!("layer {i} ({name}) {tensor}");
            let raw = stored.next().ok_or_else(|| err(&at, "missing"))?;
            let want = shape.iter().product::<usize>();
            if raw.len() != want * width {
                return Err(err(
                    &at,
                    format!(
                        "{} bytes, but shape {shape:?} of {} needs {}",
                        raw.len(),
                        doc.dtype,
                        want * width
                    ),
                ));
            }
            layer_tensors
                .push(from_le_bytes(&raw, &doc.dtype).ok_or_else(|| err(&at, "bad length"))?);
        }
        tensors.push(layer_tensors);
    }
    if stored.next().is_some() {
        return Err(err("body", "more tensors than the architecture holds"));
    }
    Sequential::from_tensors(&spec, tensors)
}
