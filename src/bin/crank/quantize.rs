//! `crank quantize`.

use crate::evaluate::{metrics, read_features};
use crate::files::{ModelArgs, save, to_stdout};
use crate::prepare::{prepare, preprocessing_of, read_prepared};
use crate::{Result, ctx};
use crank::io::Format;
use crank::quant::Precision;
use std::path::PathBuf;

/// Quantize a trained model for inference in int8 or bf16.
///
/// Every Dense layer becomes an int8 layer (weights quantized per output column, inputs per
/// row at every call, or with `--calibrate` with the ranges its inputs took on that data) or a
/// bf16 one; the other layers are kept. The result predicts, evaluates and inspects like any
/// model, and cannot be trained. With `--data`, prints the float and quantized models' metrics
/// side by side and their outputs' largest difference.
#[derive(clap::Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub input: ModelArgs,
    /// `int8` or `bf16`.
    #[arg(long, default_value = "int8")]
    pub precision: Precision,
    /// The quantized model: .crank/.bin or .json.
    #[arg(long)]
    pub out: PathBuf,
    /// Labelled data to compare the two models on.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data (like the training data, labels optional) whose inputs' ranges fix each int8
    /// layer's input scale: static quantization, instead of a scale per row at every call.
    #[arg(long, value_name = "DATA")]
    pub calibrate: Option<PathBuf>,
}

/// Quantizes a model and reports what changed.
pub(crate) fn quantize(args: QuantizeArgs) -> Result<()> {
    let QuantizeArgs {
        input,
        precision,
        out,
        data,
        calibrate,
    } = args;
    let (model, _) = input.load_noting()?;
    let q = match &calibrate {
        None => ctx(model.quantize(precision))?,
        Some(_) if precision != Precision::Int8 => {
            return Err(format!(
                "--calibrate: a {precision} model rounds its inputs and needs no calibration"
            ));
        }
        Some(path) => {
            let pre = preprocessing_of(&model);
            let table = read_features(path, pre.label.as_deref(), model.input_size())?;
            let x = prepare(&table, &pre, path, false)?.x;
            ctx(model.quantize_static(x.view()))?
        }
    };
    save(&q, &out)?;
    let (int8, bf16) = crank::quant::kernels();
    let kernel = if precision == Precision::Int8 {
        int8
    } else {
        bf16
    };
    let layers = q
        .layers()
        .iter()
        .filter(|l| l.kind().ends_with("Dense"))
        .count();
    let size = |m: &crank::Sequential<f32>| ctx(m.to_bytes(Format::Bincode)).map(|b| b.len());
    let activations = match &calibrate {
        Some(path) => format!("inputs calibrated on {}", path.display()),
        None if precision == Precision::Int8 => "inputs quantized per row".to_string(),
        None => "inputs rounded".to_string(),
    };
    let mut lines = vec![
        format!(
            "quantized {} to {precision}: {layers} Dense layers, {activations}, kernel {kernel}",
            input.model.display()
        ),
        format!(
            "wrote {} ({} bytes in bincode, the float model {})",
            out.display(),
            size(&q)?,
            size(&model)?
        ),
    ];
    if let Some(data) = data {
        let (before, after) = (metrics(&model, &data)?, metrics(&q, &data)?);
        lines.push(format!(
            "{:<16} {:>12} {:>12}",
            "metric",
            "f32",
            precision.name()
        ));
        for (name, v) in &before {
            let w = after.get(name).copied().unwrap_or(f64::NAN);
            lines.push(format!("{name:<16} {v:>12.6} {w:>12.6}"));
        }
        let pre = preprocessing_of(&model);
        let x = read_prepared(&data, pre.label.as_deref(), &pre)?.x;
        let (a, b) = (ctx(model.predict(x.view()))?, ctx(q.predict(x.view()))?);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(u, v)| (u - v).abs())
            .fold(0f32, f32::max);
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        lines.push(format!(
            "largest output difference: {worst:.6} (the f32 outputs' largest magnitude: {scale:.6})"
        ));
    }
    lines.push(String::new());
    to_stdout(&lines.join("\n"))
}
