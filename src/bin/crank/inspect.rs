//! `crank inspect` and `crank convert`.

use crate::files::{ModelArgs, is_onnx, save, to_stdout};
use crate::prepare::Kind;
use crate::{Result, ctx};
use crank::io::{Checkpoint, Format};
use crank::train::FitState;
use std::path::PathBuf;

/// Describe a model file or a checkpoint.
#[derive(clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Convert a model between formats (by the output's extension).
#[derive(clap::Args)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input: ModelArgs,
    /// The output: .crank/.bin, .json, .safetensors or .onnx.
    pub output: PathBuf,
}

/// Describes a model file or a checkpoint.
pub(crate) fn inspect(args: InspectArgs) -> Result<()> {
    let path = args.model.model.as_path();
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = vec![format!("file: {} ({} bytes)", path.display(), bytes.len())];
    let m = if is_onnx(path) {
        let (m, notes) = args.model.load_noting()?;
        lines.push("format: ONNX".into());
        lines.extend(notes);
        m
    } else if bytes.starts_with(b"CRANKCKP") {
        let ckpt = ctx(Checkpoint::<f32>::from_bytes(&bytes))?;
        let o = &ckpt.optimizer;
        lines.push(format!(
            "checkpoint, version {}",
            crank::io::CHECKPOINT_VERSION
        ));
        lines.push(format!(
            "optimizer: {}, learning rate {}, step {}",
            o.optimizer, o.learning_rate, o.steps
        ));
        let ended = |fit: &FitState<f32>| {
            if fit.stopped() {
                " (early stopping ended the run)"
            } else {
                ""
            }
        };
        lines.push(match &ckpt.fit {
            Some(fit) => format!(
                "training: epoch {}, step {}{}",
                fit.epoch(),
                ckpt.model.steps(),
                ended(fit)
            ),
            None => format!("training: step {}", ckpt.model.steps()),
        });
        ckpt.model
    } else {
        let format = Format::detect(&bytes).ok_or_else(|| {
            format!(
                "{}: not a crank model file or checkpoint (JSON, bincode or safetensors)",
                path.display()
            )
        })?;
        let m = args.model.load()?;
        lines.push(match file_version(&bytes, format) {
            Some(v) => format!("format: {format:?}, version {v}"),
            None => format!("format: {format:?}"),
        });
        if let Some(p) = m.precision() {
            let (int8, bf16) = crank::quant::kernels();
            let kernel = if p == crank::quant::Precision::Int8 {
                int8
            } else {
                bf16
            };
            lines.push(format!(
                "precision: {p} (inference only), kernel on this CPU: {kernel}"
            ));
            if p == crank::quant::Precision::Int8 {
                lines.push(int8_inputs(&m));
            }
        }
        m
    };
    lines.push(m.to_string().trim_end().to_string());
    if let Some(p) = m.preprocessing() {
        lines.push(format!("standardised inputs: {}", p.mean.len()));
        let kind = match Kind::of(p, m.output_size()) {
            Kind::Regression => "regression",
            Kind::Binary => "binary classifier",
            Kind::Multiclass => "multi-class classifier",
        };
        lines.push(match &p.loss {
            Some(loss) => format!("task: {kind}, trained with {loss}"),
            None => format!("task: {kind}"),
        });
        if let Some(c) = &p.classes {
            lines.push(format!("classes: {}", c.join(", ")));
        }
    }
    lines.push(String::new());
    to_stdout(&lines.join("\n"))
}

/// The format version a model file says it has.
fn file_version(bytes: &[u8], format: Format) -> Option<u64> {
    match format {
        Format::Bincode => bytes
            .get(8..12)
            .map(|v| u64::from(u32::from_le_bytes(v.try_into().expect("4 bytes")))),
        Format::Json => serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()?
            .get("version")?
            .as_u64(),
        _ => None,
    }
}

/// Converts a model between formats.
pub(crate) fn convert(args: ConvertArgs) -> Result<()> {
    let ConvertArgs { input, output } = args;
    let (model, notes) = input.load_noting()?;
    save(&model, &output)?;
    let mut lines = vec![format!(
        "converted {} to {}",
        input.model.display(),
        output.display()
    )];
    lines.extend(notes);
    lines.push(String::new());
    to_stdout(&lines.join("\n"))
}

/// How an int8 model quantizes its layers' inputs: per row, or with calibrated ranges.
fn int8_inputs(m: &crank::Sequential<f32>) -> String {
    let ranges: Vec<String> = m
        .to_spec()
        .layers
        .iter()
        .filter_map(|l| match l {
            crank::spec::LayerSpec::Int8Dense(d) => Some(match d.input_range {
                Some([lo, hi]) => format!("{} [{lo}, {hi}]", d.name.as_deref().unwrap_or("?")),
                None => format!("{} per row", d.name.as_deref().unwrap_or("?")),
            }),
            _ => None,
        })
        .collect();
    let how = if ranges.iter().any(|r| r.ends_with("per row")) {
        "dynamic"
    } else {
        "static"
    };
    format!("int8 inputs ({how}): {}", ranges.join(", "))
}
