//! The compact binary format: bincode framing behind a magic number and a version.
//!
//! Layout: `CRANKBIN` (8 bytes), the format version (u32, little-endian), then bincode
//! (fixed-width little-endian integers) of [`BinModelOut`] (read back as [`BinModelIn`]): the
//! dtype, the architecture as JSON, and each tensor's values as little-endian bytes, in the
//! order of [`LayerSpec::tensor_shapes`](crate::spec::LayerSpec::tensor_shapes).
//!
//! bincode is unmaintained (RUSTSEC-2025-0141); crank pins 1.3.3, the last release that takes a
//! runtime byte limit, and uses it only here, so it can be swapped without touching the format.
//! The limit is the number of bytes left in the file, and bincode checks every length it reads
//! against it before allocating.

use super::FORMAT_VERSION;
use crate::layer::TensorData;
use crate::quant::{Precision, bf16_to_f32};
use crate::spec::ModelSpec;
use crate::{Error, Result, Scalar, Sequential};
use bincode::Options;
use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;
use std::borrow::Cow;

pub(super) const MAGIC: &[u8; 8] = b"CRANKBIN";
const FORMAT: &str = "bincode model";

fn err(at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.into(),
    }
}

/// The body as written: tensors borrowed from the model's own buffers.
#[derive(Serialize)]
struct BinModelOut<'a> {
    dtype: &'static str,
    spec: String,
    tensors: Vec<&'a Bytes>,
}

/// The body as read: tensors borrowed from the file's bytes (the same layout as
/// [`BinModelOut`]).
#[derive(Deserialize)]
struct BinModelIn<'a> {
    dtype: String,
    spec: String,
    #[serde(borrow)]
    tensors: Vec<&'a Bytes>,
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

/// Little-endian bytes of a slice of values: the slice itself on a little-endian machine,
/// a converted copy otherwise.
pub(crate) fn le_bytes<F: Scalar>(values: &[F]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else if F::NAME == "f32" {
        Cow::Owned(
            values
                .iter()
                .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                .collect(),
        )
    } else {
        Cow::Owned(
            values
                .iter()
                .flat_map(|v| v.as_f64().to_le_bytes())
                .collect(),
        )
    }
}

/// A tensor's bytes as files hold them: little-endian values of the model's type, int8 codes,
/// or little-endian bfloat16 bits.
fn tensor_bytes<'a, F: Scalar>(data: &TensorData<'a, F>) -> Cow<'a, [u8]> {
    match *data {
        TensorData::Float(v) => le_bytes(v),
        TensorData::Int8(v) => Cow::Borrowed(bytemuck::cast_slice(v)),
        TensorData::Bf16(v) if cfg!(target_endian = "little") => {
            Cow::Borrowed(bytemuck::cast_slice(v))
        }
        TensorData::Bf16(v) => Cow::Owned(v.iter().flat_map(|b| b.to_le_bytes()).collect()),
    }
}

/// Values of type `F` from little-endian bytes of `dtype` (`"f32"`, `"f64"`, `"int8"` or
/// `"bf16"`); `None` when the length is not a whole number of values. Bytes of `F` itself are
/// copied in bulk.
pub(crate) fn from_le_bytes<F: Scalar>(bytes: &[u8], dtype: &str) -> Option<Vec<F>> {
    let width = match dtype {
        "int8" => return Some(bytes.iter().map(|&b| F::of(f64::from(b as i8))).collect()),
        "bf16" => {
            return bytes.len().is_multiple_of(2).then(|| {
                bytes
                    .chunks_exact(2)
                    .map(|c| F::of(f64::from(bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))))
                    .collect()
            });
        }
        "f32" => 4,
        "f64" => 8,
        _ => return None,
    };
    if !bytes.len().is_multiple_of(width) {
        return None;
    }
    if dtype == F::NAME && cfg!(target_endian = "little") {
        let mut out = vec![F::zero(); bytes.len() / width];
        bytemuck::cast_slice_mut::<F, u8>(&mut out).copy_from_slice(bytes);
        return Some(out);
    }
    Some(if width == 4 {
        bytes
            .chunks_exact(4)
            .map(|c| F::of(f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64))
            .collect()
    } else {
        bytes
            .chunks_exact(8)
            .map(|c| F::of(f64::from_le_bytes(c.try_into().expect("8 bytes"))))
            .collect()
    })
}

pub(super) fn encode<F: Scalar>(model: &Sequential<F>) -> Result<Vec<u8>> {
    let views = model.tensor_views();
    let bytes: Vec<Cow<'_, [u8]>> = views
        .iter()
        .flatten()
        .map(|t| tensor_bytes(&t.data))
        .collect();
    let doc = BinModelOut {
        dtype: F::NAME,
        spec: model.to_spec().to_json(),
        tensors: bytes.iter().map(|b| Bytes::new(b)).collect(),
    };
    framed(MAGIC, super::version_of(model), &doc).map_err(|e| err("output", e.to_string()))
}

/// `magic`, `version` (u32 LE), then the bincode of `doc`.
pub(super) fn framed<T: Serialize>(
    magic: &[u8; 8],
    version: u32,
    doc: &T,
) -> bincode::Result<Vec<u8>> {
    let size = options(u64::MAX).serialized_size(doc)?;
    let mut out = Vec::with_capacity(12 + usize::try_from(size).unwrap_or(0));
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    options(u64::MAX).serialize_into(&mut out, doc)?;
    Ok(out)
}

/// Checks the magic number and version of a framed file and decodes its body.
pub(super) fn unframe<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
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
        .map_err(|e| match *e {
            bincode::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                err("body", ends_early(bytes.len()))
            }
            bincode::ErrorKind::SizeLimit => err("body", ends_early(bytes.len())),
            other => err("body", other.to_string()),
        })
}

fn ends_early(len: usize) -> String {
    format!("the file ends early, after {len} bytes: it is truncated")
}

/// Where a truncated model body runs out: the first length-prefixed field whose bytes go past
/// the end of the file, with its offset (from the start of the file).
fn truncated_at(bytes: &[u8]) -> String {
    let len = bytes.len();
    let mut at = 12;
    let field = |what: &str, at: &mut usize| -> std::result::Result<u64, String> {
        let Some(prefix) = bytes.get(*at..*at + 8) else {
            return Err(format!(
                "the file ends early, after {len} bytes: the length of the {what} at byte {at} is cut off"
            ));
        };
        *at += 8;
        Ok(u64::from_le_bytes(prefix.try_into().expect("8 bytes")))
    };
    let skip = |what: &str, at: &mut usize| -> std::result::Result<usize, String> {
        let n = field(what, at)?;
        let end = u64::try_from(*at).unwrap_or(u64::MAX).saturating_add(n);
        if end > len as u64 {
            return Err(format!(
                "the file ends early, after {len} bytes: the {what} at byte {at} needs {n} bytes, up to byte {end}"
            ));
        }
        let start = *at;
        *at = end as usize;
        Ok(start)
    };
    let walk = |at: &mut usize| -> std::result::Result<(), String> {
        skip("dtype", at)?;
        let spec_at = skip("architecture", at)?;
        let names: Vec<String> = std::str::from_utf8(&bytes[spec_at..*at])
            .ok()
            .and_then(|json| ModelSpec::from_json(json).ok())
            .and_then(|spec| spec.resolve().ok())
            .map(|r| {
                r.layers
                    .iter()
                    .enumerate()
                    .flat_map(|(i, (name, input, layer))| {
                        layer
                            .tensor_shapes(*input)
                            .into_iter()
                            .map(move |(t, _)| format!("layer {i} ({name}) {t}"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let count = field("tensor count", at)?;
        for k in 0..count {
            let name = names
                .get(k as usize)
                .cloned()
                .unwrap_or(format!("tensor {k}"));
            skip(&format!("tensor {name}"), at)?;
        }
        Ok(())
    };
    walk(&mut at).err().unwrap_or_else(|| ends_early(len))
}

pub(super) fn decode<F: Scalar>(bytes: &[u8]) -> Result<Sequential<F>> {
    let doc: BinModelIn<'_> =
        unframe(bytes, MAGIC, FORMAT_VERSION, FORMAT).map_err(|e| match e {
            Error::File { reason, .. } if reason == ends_early(bytes.len()) => {
                err("body", truncated_at(bytes))
            }
            other => other,
        })?;
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
            let (dtype, width) = match layer.stored(tensor) {
                Some(Precision::Int8) => ("int8", 1),
                Some(Precision::Bf16) => ("bf16", 2),
                None => (doc.dtype.as_str(), width),
            };
            if raw.len() != want * width {
                return Err(err(
                    &at,
                    format!(
                        "{} bytes, but shape {shape:?} of {dtype} needs {}",
                        raw.len(),
                        want * width
                    ),
                ));
            }
            layer_tensors.push(from_le_bytes(raw, dtype).ok_or_else(|| err(&at, "bad length"))?);
        }
        tensors.push(layer_tensors);
    }
    if stored.next().is_some() {
        return Err(err("body", "more tensors than the architecture holds"));
    }
    Sequential::from_tensors(&spec, tensors)
}
