//! ONNX export and import: crank models out to ONNX Runtime, tract or Triton, and the MLPs that
//! PyTorch and scikit-learn export in.
//!
//! **Export** ([`Sequential::to_onnx`], [`Sequential::save_onnx`]) writes an inference graph
//! that takes the same raw features as [`Sequential::predict`] on a model with stored
//! standardisation: `Sub` and `Div` by the stored mean and deviation, then per layer
//!
//! | crank | ONNX |
//! |---|---|
//! | `Dense` | `Gemm` (weights as `B`, `[input, output]`), then the activation's operator: `Relu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Softplus`, `Gelu`, `Softmax` (last axis) |
//! | `BatchNorm` | `BatchNormalization` with the running statistics |
//! | `LayerNorm` | `LayerNormalization` over the last axis |
//! | `Activation` | the activation's operator |
//! | `Dropout` | nothing (the identity at inference) |
//!
//! The input is `input` `[batch, features]` and the output `output` `[batch, outputs]`, in the
//! model's element type (`f32` as FLOAT, `f64` as DOUBLE), with a symbolic batch dimension.
//! The operator set is the lowest that holds every operator used: 13, or 17 with `LayerNorm`,
//! or 20 with GELU; the IR version the lowest for that set (7, 8 or 9). Class names, the label
//! column, the loss and the standardisation's exact (f64) values go into the model's metadata
//! (`crank.classes`, `crank.label`, `crank.loss`, `crank.standardization`), so that an export
//! imports back as the same model. The graph standardises in the model's precision, where
//! `crank predict` does so in f64: an f32 graph's outputs agree with it to f32 rounding.
//!
//! **Import** ([`Sequential::from_onnx`], [`Sequential::load_onnx`], [`import()`]) reads a graph
//! that is a chain from one input, as `torch.onnx.export` writes for an `nn.Sequential` MLP
//! (`Gemm` with `transB = 1`, or `MatMul` + `Add`; `Flatten`, `Identity`, `Dropout`) and
//! skl2onnx for `MLPClassifier` and `MLPRegressor`, alone or after a `StandardScaler` (ONNX-ML's
//! `Scaler`, which becomes the model's standardisation; apply it with
//! [`Preprocessing::standardize`](crate::spec::Preprocessing::standardize) before
//! [`Sequential::predict`], as `crank predict` does) (`Cast`, `MatMul` + `Add`; a classifier's
//! label post-processing, `ArgMax`, `ArrayFeatureExtractor`, `ZipMap`, becomes the model's class
//! names: crank's classifier then outputs logits, as one trained by crank does, and
//! [`Import::notes`] says so). An activation right after a product becomes its Dense layer's;
//! after a normalisation, a layer of its own. A final `LogSoftmax` (a classifier for `NLLLoss`)
//! makes the model a classifier that outputs the logits. A branch, an operator with no crank
//! layer, or a weight computed by the graph is an error naming the node, its operator and why.
//!
//! ONNX files are untrusted input like every model file: at most 2 GiB (a protobuf message's
//! limit), [`MAX_NODES`] nodes, each tensor within [`Limits`](crate::spec::Limits), its data
//! matching its shape, no external data files (refused, so no path is ever opened), no
//! subgraphs; the message decoder nests at most 100 deep.

mod export;
mod import;
mod proto;

pub use import::Import;

use crate::{Error, Result, Scalar, Sequential};
use std::path::Path;

/// The format's name in errors.
const FORMAT: &str = "ONNX";
/// The name of the graph's input.
const INPUT: &str = "input";
/// The name of the graph's output.
const OUTPUT: &str = "output";
/// Metadata keys of what crank keeps beside the graph.
const META_CLASSES: &str = "crank.classes";
const META_LABEL: &str = "crank.label";
const META_LOSS: &str = "crank.loss";
const META_STANDARDIZATION: &str = "crank.standardization";
/// The operator set a graph of Dense, BatchNorm and the activations but GELU needs.
const BASE_OPSET: i64 = 13;
/// The largest ONNX file read or written: a protobuf message holds at most 2 GiB.
pub const MAX_BYTES: u64 = (2 << 30) - 1;
/// The most nodes an imported graph may hold.
pub const MAX_NODES: usize = 100_000;

/// A model from the bytes of an ONNX file, with what the import passed over.
pub fn import<F: Scalar>(bytes: &[u8]) -> Result<Import<F>> {
    import::decode(bytes)
}

impl<F: Scalar> Sequential<F> {
    /// The model as the bytes of an ONNX file (see [`crate::onnx`]).
    pub fn to_onnx(&self) -> Result<Vec<u8>> {
        export::encode(self)
    }

    /// Saves the model as an ONNX file, through a temporary file renamed over the target.
    pub fn save_onnx(&self, path: impl AsRef<Path>) -> Result<()> {
        let bytes = self.to_onnx()?;
        crate::io::atomic_write(path.as_ref(), |w| w.write_all(&bytes))
    }

    /// A model from the bytes of an ONNX file (see [`crate::onnx`]).
    ///
    /// ```
    /// use crank::{Activation, Sequential};
    ///
    /// let model = Sequential::<f32>::builder(4).dense(8, Activation::Relu).dense(3, Activation::Softmax).build()?;
    /// let back = Sequential::<f32>::from_onnx(&model.to_onnx()?)?;
    /// assert_eq!(back.to_spec().layers.len(), 2);
    /// # Ok::<(), crank::Error>(())
    /// ```
    pub fn from_onnx(bytes: &[u8]) -> Result<Self> {
        Ok(import::decode(bytes)?.model)
    }

    /// Loads an ONNX file.
    pub fn load_onnx(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
        if len > MAX_BYTES {
            return Err(Error::File {
                format: FORMAT,
                at: path.display().to_string(),
                reason: format!("{len} bytes is more than a protobuf message may hold"),
            });
        }
        Self::from_onnx(&std::fs::read(path).map_err(Error::io(path))?)
    }
}

#[cfg(test)]
mod tests;
