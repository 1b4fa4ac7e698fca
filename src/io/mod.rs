//! Saving and loading models: JSON dicts, compact bincode, safetensors, and checkpoints.
//!
//! | format | file | holds |
//! |---|---|---|
//! | [`Format::Json`] | `.json` | `{"format": "crank", "version": 1, "dtype", "layers": [...]}`: each layer's description plus `weights` `[input_size][output_size]` and `biases` `[output_size]` |
//! | [`Format::Bincode`] | `.bin`, `.crank` | magic `CRANKBIN`, version (u32 LE), then bincode of the dtype, the description as JSON and each tensor's little-endian bytes |
//! | [`Format::Safetensors`] | `.safetensors` | PyTorch's names and layouts (`N.weight` `[out, in]`, `N.bias`), the description in the metadata |
//!
//! Files are untrusted input: every decoder checks the [`Limits`], checks
//! each length it reads against the architecture and the bytes that remain, and reports what is
//! wrong as an [`Error`] naming the place; memory stays bounded by the file's size.
//!
//! Saving writes a temporary file beside the target and renames it over the target, so a save
//! that fails half way leaves the previous file as it was.

mod binary;
mod checkpoint;
mod json;
mod safetensors;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint};
pub use safetensors::torch_names;

pub(crate) use binary::le_bytes;

use crate::spec::{Limits, ModelSpec};
use crate::{Error, Result, Scalar, Sequential};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The newest version of the JSON and bincode model formats, the one this crank reads up to.
/// Version 2 added int8 and bf16 layers; a model without them is written as version 1, which
/// older cranks read too.
pub const FORMAT_VERSION: u32 = 2;

/// The version a file of `model` is written with: the oldest that holds its layers.
pub(crate) fn version_of<F: Scalar>(model: &Sequential<F>) -> u32 {
    if model.precision().is_some() { 2 } else { 1 }
}

/// A model file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON dict: the architecture with the weights as nested arrays.
    Json,
    /// Compact binary: bincode framing behind a magic number and a version.
    Bincode,
    /// safetensors, with PyTorch's names and layouts.
    Safetensors,
}

impl Format {
    /// The format a path's extension names: `.json`, `.bin` or `.crank`, `.safetensors`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "bin" | "crank" => Some(Format::Bincode),
            "safetensors" => Some(Format::Safetensors),
            _ => None,
        }
    }

    /// The format of a file's contents, from its first bytes.
    pub fn detect(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(binary::MAGIC) {
            Some(Format::Bincode)
        } else if matches!(
            bytes.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        ) {
            Some(Format::Json)
        } else if bytes.len() >= 9 && bytes[8] == b'{' {
            Some(Format::Safetensors)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON model",
            Format::Bincode => "bincode model",
            Format::Safetensors => "safetensors",
        }
    }
}

impl<F: Scalar> Sequential<F> {
    /// The model (architecture and weights) in `format`.
    pub fn to_bytes(&self, format: Format) -> Result<Vec<u8>> {
        match format {
            Format::Json => json::encode(self),
            Format::Bincode => binary::encode(self),
            Format::Safetensors => safetensors::encode(self),
        }
    }

    /// A model from bytes in `format`. A safetensors file needs crank's description in its
    /// metadata; for one saved by PyTorch use [`from_safetensors`](Self::from_safetensors).
    pub fn from_bytes(bytes: &[u8], format: Format) -> Result<Self> {
        check_size(bytes.len() as u64, format.name())?;
        match format {
            Format::Json => json::decode(bytes),
            Format::Bincode => binary::decode(bytes),
            Format::Safetensors => safetensors::decode(bytes, None),
        }
    }

    /// A model from a safetensors file with PyTorch's names (`N.weight` `[out, in]`, `N.bias`),
    /// such as `torch.save_file(model.state_dict())` of a `torch.nn.Sequential` of `Linear`
    /// layers and activations. `spec` gives the architecture when the file carries none.
    pub fn from_safetensors(bytes: &[u8], spec: Option<&ModelSpec>) -> Result<Self> {
        check_size(bytes.len() as u64, Format::Safetensors.name())?;
        safetensors::decode(bytes, spec)
    }

    /// Saves the model to `path` in `format`, through a temporary file renamed over the target.
    pub fn save(&self, path: impl AsRef<Path>, format: Format) -> Result<()> {
        let bytes = self.to_bytes(format)?;
        atomic_write(path.as_ref(), |w| w.write_all(&bytes))
    }

    /// Loads a model saved by [`save`](Self::save), in the format its first bytes show.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_limited(path)?;
        let format = Format::detect(&bytes).ok_or_else(|| Error::File {
            format: "model",
            at: path.display().to_string(),
            reason: "not a crank JSON, bincode or safetensors file".into(),
        })?;
        Self::from_bytes(&bytes, format)
    }
}

fn check_size(len: u64, format: &'static str) -> Result<()> {
    if len > Limits::DEFAULT.max_file_bytes {
        return Err(Error::File {
            format,
            at: "file".into(),
            reason: format!(
                "{len} bytes is more than the limit of {}",
                Limits::DEFAULT.max_file_bytes
            ),
        });
    }
    Ok(())
}

/// Reads a whole file after checking its size against the limit.
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let io = Error::io(path);
    let len = std::fs::metadata(path).map_err(io)?.len();
    check_size(len, "model")?;
    std::fs::read(path).map_err(io)
}

/// Writes a file through a temporary file in the same folder, synced and then renamed over
/// `path`: readers see the old file or the new one, never a part. On any error the temporary
/// file is removed and `path` is untouched.
pub(crate) fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io = Error::io(path);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".crank-save-");
    // The permissions a file created in place would have (the umask applies), or the
    // replaced file's: not the temporary file's owner-only default.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(match std::fs::metadata(path) {
            Ok(m) => m.permissions(),
            Err(_) => std::fs::Permissions::from_mode(0o666),
        });
    }
    let mut tmp = builder.tempfile_in(&dir).map_err(io)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut w).map_err(io)?;
        w.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_failing_half_way_leaves_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        atomic_write(&path, |w| w.write_all(b"good")).unwrap();
        let err = atomic_write(&path, |w| {
            w.write_all(b"half a new fi")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_saved_file_has_the_permissions_of_a_file_created_in_place() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let saved = dir.path().join("model.bin");
        atomic_write(&saved, |w| w.write_all(b"new")).unwrap();
        assert_eq!(mode(&saved), mode(&plain));
        // Replacing a file keeps its permissions.
        std::fs::set_permissions(&saved, std::fs::Permissions::from_mode(0o640)).unwrap();
        atomic_write(&saved, |w| w.write_all(b"newer")).unwrap();
        assert_eq!(mode(&saved), 0o640);
    }

    #[test]
    fn formats_from_paths_and_bytes() {
        assert_eq!(Format::from_path(Path::new("m.JSON")), Some(Format::Json));
        assert_eq!(
            Format::from_path(Path::new("m.crank")),
            Some(Format::Bincode)
        );
        assert_eq!(
            Format::from_path(Path::new("m.safetensors")),
            Some(Format::Safetensors)
        );
        assert_eq!(Format::from_path(Path::new("m.txt")), None);
        assert_eq!(Format::detect(b"  {\"format\""), Some(Format::Json));
        assert_eq!(Format::detect(b"CRANKBIN\x01\0\0\0"), Some(Format::Bincode));
        assert_eq!(
            Format::detect(b"\x10\0\0\0\0\0\0\0{\"a\""),
            Some(Format::Safetensors)
        );
        assert_eq!(Format::detect(b"hello"), None);
    }
}
