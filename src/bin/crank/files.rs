//! Reading models and writing results.

use crate::config::read_config;
use crate::prepare::preprocessing_of;
use crate::{Result, ctx};
use crank::io::Format;
use crank::spec::Preprocessing;
use crank::{Loss, Sequential};
use std::path::{Path, PathBuf};

/// A model file to read; a safetensors file without crank's architecture takes it from
/// `--spec`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// The model file.
    pub model: PathBuf,
    /// The architecture (a model file in YAML or JSON) of a safetensors file that lacks
    /// crank's, as PyTorch's `save_file(model.state_dict(), ...)` writes.
    #[arg(long)]
    pub spec: Option<PathBuf>,
}

impl ModelArgs {
    /// The model.
    pub(crate) fn load(&self) -> Result<Sequential<f32>> {
        Ok(self.load_noting()?.0)
    }

    /// The model, and for an ONNX file what it is and what the import passed over (one line
    /// each).
    pub(crate) fn load_noting(&self) -> Result<(Sequential<f32>, Vec<String>)> {
        if is_onnx(&self.model) {
            if self.spec.is_some() {
                return Err(format!(
                    "{}: --spec is for safetensors files without crank's architecture; an \
                     ONNX file carries its own",
                    self.model.display()
                ));
            }
            let path = &self.model;
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let import = ctx(crank::onnx::import::<f32>(&bytes))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut notes = vec![format!(
                "ONNX opset {}, IR version {}, written by {}",
                import.opset,
                import.ir_version,
                if import.producer.is_empty() {
                    "an unnamed producer"
                } else {
                    &import.producer
                }
            )];
            notes.extend(
                import
                    .notes
                    .into_iter()
                    .map(|n| format!("passed over: {n}")),
            );
            return Ok((import.model, notes));
        }
        Ok((load(&self.model, self.spec.as_deref())?, Vec::new()))
    }
}

/// Whether a path names an ONNX file (by its extension).
pub(crate) fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// A model file; a safetensors file without crank's architecture takes it from `spec`, a model
/// file whose `training.loss` (SoftmaxCrossEntropy unless it says otherwise, as for `train`)
/// tells what the model is for: a classifier's classes are named 0, 1, ... unless the file
/// has a `preprocessing` section.
pub(crate) fn load(path: &Path, spec: Option<&Path>) -> Result<Sequential<f32>> {
    let Some(spec_path) = spec else {
        return ctx(Sequential::<f32>::load(path));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if Format::detect(&bytes) != Some(Format::Safetensors) {
        return Err(format!(
            "{}: --spec is for safetensors files without crank's architecture; this file \
             carries its own",
            path.display()
        ));
    }
    let (spec, training) = read_config(spec_path)?;
    let mut model = ctx(Sequential::<f32>::from_safetensors(&bytes, Some(&spec)))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if model.preprocessing().is_none() {
        let outputs = model.output_size();
        let classes = match training.loss {
            Loss::SoftmaxCrossEntropy => Some((0..outputs).map(|i| i.to_string()).collect()),
            Loss::BinaryCrossEntropy if outputs == 1 => Some(vec!["0".into(), "1".into()]),
            _ => None,
        };
        let pre = Preprocessing {
            classes,
            loss: Some(training.loss),
            ..preprocessing_of(&model)
        };
        ctx(model.set_preprocessing(Some(pre)))
            .map_err(|e| format!("{}: {e}", spec_path.display()))?;
    }
    Ok(model)
}

pub(crate) fn save(model: &Sequential<f32>, path: &Path) -> Result<()> {
    if is_onnx(path) {
        return ctx(model.save_onnx(path));
    }
    let format = Format::from_path(path).ok_or_else(|| {
        format!(
            "{}: unknown model extension (use .crank, .bin, .json, .safetensors or .onnx)",
            path.display()
        )
    })?;
    ctx(model.save(path, format))
}

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes to standard output; a reader that closed the pipe early (`| head`) is not an error.
pub(crate) fn to_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(format!("standard output: {e}"))
        }
        _ => Ok(()),
    }
}
