//! Normalisation layers: batch normalisation and layer normalisation.
//!
//! Both learn a scale `γ` (starting at 1) and a shift `β` (starting at 0): `y = γ ⊙ x̂ + β`,
//! with `x̂` the input normalised over the batch (BatchNorm, per feature) or over the features
//! (LayerNorm, per sample). Parameter gradients are batch means, as for [`Dense`](super::Dense).

// Per-feature loops read and write several arrays at the same index; indexing says so plainly.
#![allow(clippy::needless_range_loop)]

use super::{
    Build, Layer, LayerConfig, LayerSpec, Mode, Param, Tensor, check_width,
    declared_name_and_input, out_of_range,
};
use crate::buffer::Buffer;
use crate::{Error, Result, Scalar};
use ndarray::{Array1, ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

/// The description of a [`BatchNorm`] layer (PyTorch's `BatchNorm1d`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormSpec {
    /// The layer's name; `batchnorm_<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Features in (and out); checked against the previous layer when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Weight of each batch in the running statistics (PyTorch's default 0.1).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Added to the variance (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

/// The description of a [`LayerNorm`] layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNormSpec {
    /// The layer's name; `layernorm_<index>` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Features in (and out); checked against the previous layer when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_size: Option<usize>,
    /// Added to the variance (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

fn default_momentum() -> f64 {
    0.1
}

fn default_eps() -> f64 {
    1e-5
}

/// `eps` must be positive and finite.
fn check_eps(eps: f64) -> std::result::Result<(), String> {
    if eps > 0.0 && eps.is_finite() {
        Ok(())
    } else {
        out_of_range("eps", eps)
    }
}

impl LayerConfig for BatchNormSpec {
    const KIND: &'static str = "BatchNorm";
    const TENSORS: &'static [&'static str] = &["gamma", "beta", "running_mean", "running_var"];

    declared_name_and_input!();

    fn check(&self) -> std::result::Result<(), String> {
        if !(self.momentum > 0.0 && self.momentum <= 1.0) {
            return out_of_range("momentum", self.momentum);
        }
        check_eps(self.eps)
    }

    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
        let (name, size) = (build.name, build.input_size);
        Ok(Box::new(match build.tensors.map(<[Vec<F>; 4]>::try_from) {
            Some(Ok([g, b, m, v])) => BatchNorm::from_tensors(
                name,
                Array1::from_vec(g),
                Array1::from_vec(b),
                Array1::from_vec(m),
                Array1::from_vec(v),
                self.momentum,
                self.eps,
            ),
            _ => BatchNorm::new(name, size, self.momentum, self.eps),
        }))
    }
}

impl LayerConfig for LayerNormSpec {
    const KIND: &'static str = "LayerNorm";
    const TENSORS: &'static [&'static str] = &["gamma", "beta"];

    declared_name_and_input!();

    fn check(&self) -> std::result::Result<(), String> {
        check_eps(self.eps)
    }

    fn build<F: Scalar>(&self, build: Build<'_, F>) -> Result<Box<dyn Layer<F>>> {
        let (name, size) = (build.name, build.input_size);
        Ok(Box::new(match build.tensors.map(<[Vec<F>; 2]>::try_from) {
            Some(Ok([g, b])) => {
                LayerNorm::from_tensors(name, Array1::from_vec(g), Array1::from_vec(b), self.eps)
            }
            _ => LayerNorm::new(name, size, self.eps),
        }))
    }
}

/// The learnable scale and shift with their gradients.
#[derive(Debug, Clone)]
struct Affine<F> {
    gamma: Array1<F>,
    beta: Array1<F>,
    grad_gamma: Array1<F>,
    grad_beta: Array1<F>,
}

impl<F: Scalar> Affine<F> {
    fn new(gamma: Array1<F>, beta: Array1<F>) -> Self {
        let n = gamma.len();
        Affine {
            gamma,
            beta,
            grad_gamma: Array1::zeros(n),
            grad_beta: Array1::zeros(n),
        }
    }

    fn visit(&mut self, f: &mut dyn FnMut(Param<'_, F>)) {
        let c = "affine parameters are contiguous";
        f(Param {
            name: "gamma",
            value: self.gamma.as_slice_mut().expect(c),
            grad: self.grad_gamma.as_slice().expect(c),
        });
        f(Param {
            name: "beta",
            value: self.beta.as_slice_mut().expect(c),
            grad: self.grad_beta.as_slice().expect(c),
        });
    }

    /// `dγ = Σᵢ gᵢ ⊙ x̂ᵢ / B` and `dβ = Σᵢ gᵢ / B`.
    fn grads(&mut self, g: &ArrayView2<'_, F>, xhat: &Buffer<F>) {
        let (dg, db) = (&mut self.grad_gamma, &mut self.grad_beta);
        dg.fill(F::zero());
        db.fill(F::zero());
        for (g, x) in g.rows().into_iter().zip(xhat.view().rows()) {
            for j in 0..g.len() {
                dg[j] += g[j] * x[j];
                db[j] += g[j];
            }
        }
        let inv = F::one() / F::of(g.nrows() as f64);
        dg.mapv_inplace(|v| v * inv);
        db.mapv_inplace(|v| v * inv);
    }
}

fn tensor<'a, F>(name: &'static str, a: &'a Array1<F>) -> Tensor<'a, F> {
    Tensor {
        name,
        shape: a.shape(),
        data: super::TensorData::Float(a.as_slice().expect("contiguous")),
    }
}

fn check_grad<F>(name: &str, want: (usize, usize), g: &ArrayView2<'_, F>) -> Result<()> {
    if g.dim() != want {
        return Err(Error::shape(
            format!("layer {name} backward"),
            format!("{want:?}"),
            format!("{:?}", g.dim()),
        ));
    }
    Ok(())
}

/// Batch normalisation, as PyTorch's `BatchNorm1d`: in training each feature is normalised with
/// the batch's mean and (biased) variance, and running statistics are updated with `momentum`
/// (the running variance from the unbiased batch variance); in evaluation the running
/// statistics are used.
#[derive(Debug, Clone)]
pub struct BatchNorm<F: Scalar> {
    name: String,
    momentum: f64,
    eps: f64,
    affine: Affine<F>,
    running_mean: Array1<F>,
    running_var: Array1<F>,
    /// Statistics of the latest forward: the mean and `1/√(var + ε)` per feature.
    mean: Vec<F>,
    inv_std: Vec<F>,
    batch_stats: bool,
    xhat: Buffer<F>,
    y: Buffer<F>,
    dx: Buffer<F>,
}

impl<F: Scalar> BatchNorm<F> {
    /// A layer over `size` features with `γ = 1`, `β = 0`, running mean 0 and variance 1.
    pub fn new(name: impl Into<String>, size: usize, momentum: f64, eps: f64) -> Self {
        Self::from_tensors(
            name,
            Array1::ones(size),
            Array1::zeros(size),
            Array1::zeros(size),
            Array1::ones(size),
            momentum,
            eps,
        )
    }

    /// A layer with the given scale, shift and running statistics (all of one length).
    pub fn from_tensors(
        name: impl Into<String>,
        gamma: Array1<F>,
        beta: Array1<F>,
        running_mean: Array1<F>,
        running_var: Array1<F>,
        momentum: f64,
        eps: f64,
    ) -> Self {
        BatchNorm {
            name: name.into(),
            momentum,
            eps,
            affine: Affine::new(gamma, beta),
            running_mean,
            running_var,
            mean: Vec::new(),
            inv_std: Vec::new(),
            batch_stats: false,
            xhat: Buffer::default(),
            y: Buffer::default(),
            dx: Buffer::default(),
        }
    }

    /// The running mean of each feature.
    pub fn running_mean(&self) -> &Array1<F> {
        &self.running_mean
    }

    /// The running variance of each feature.
    pub fn running_var(&self) -> &Array1<F> {
        &self.running_var
    }
}

impl<F: Scalar> Layer<F> for BatchNorm<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "BatchNorm"
    }

    fn input_size(&self) -> usize {
        self.affine.gamma.len()
    }

    fn output_size(&self) -> usize {
        self.affine.gamma.len()
    }

    fn num_params(&self) -> usize {
        2 * self.affine.gamma.len()
    }

    fn describe(&self) -> String {
        format!("momentum {}", self.momentum)
    }

    fn forward(&mut self, input: ArrayView2<'_, F>, mode: Mode) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        let (batch, n) = input.dim();
        self.batch_stats = mode == Mode::Train;
        self.mean.resize(n, F::zero());
        self.inv_std.resize(n, F::zero());
        let eps = F::of(self.eps);
        if self.batch_stats {
            if batch < Layer::<F>::min_train_batch(self) {
                return Err(Error::shape(
                    format!("layer {} (BatchNorm) training batch", self.name),
                    "at least 2 samples",
                    format!("{batch}"),
                ));
            }
            let inv_b = F::one() / F::of(batch as f64);
            self.mean.fill(F::zero());
            for row in input.rows() {
                self.mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x);
            }
            self.mean.iter_mut().for_each(|m| *m *= inv_b);
            let mut var = vec![F::zero(); n];
            for row in input.rows() {
                for ((v, &x), &m) in var.iter_mut().zip(row).zip(&self.mean) {
                    *v += (x - m) * (x - m);
                }
            }
            let (mom, unbias) = (
                F::of(self.momentum),
                F::of(batch as f64 / (batch as f64 - 1.0)),
            );
            for j in 0..n {
                let v = var[j] * inv_b;
                self.inv_std[j] = F::one() / (v + eps).sqrt();
                self.running_mean[j] = (F::one() - mom) * self.running_mean[j] + mom * self.mean[j];
                self.running_var[j] = (F::one() - mom) * self.running_var[j] + mom * v * unbias;
            }
        } else {
            for j in 0..n {
                self.mean[j] = self.running_mean[j];
                self.inv_std[j] = F::one() / (self.running_var[j] + eps).sqrt();
            }
        }
        self.xhat.resize(batch, n);
        self.y.resize(batch, n);
        let (g, b) = (&self.affine.gamma, &self.affine.beta);
        for ((row, mut xh), mut y) in input
            .rows()
            .into_iter()
            .zip(self.xhat.view_mut().rows_mut())
            .zip(self.y.view_mut().rows_mut())
        {
            for j in 0..n {
                xh[j] = (row[j] - self.mean[j]) * self.inv_std[j];
                y[j] = g[j] * xh[j] + b[j];
            }
        }
        Ok(())
    }

    fn output(&self) -> ArrayView2<'_, F> {
        self.y.view()
    }

    fn backward(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
    ) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        check_grad(&self.name, self.y.shape(), &grad_output)?;
        self.affine.grads(&grad_output, &self.xhat);
        if need_input_grad {
            let (batch, n) = grad_output.dim();
            self.dx.resize(batch, n);
            let (gamma, dg, db) = (
                &self.affine.gamma,
                &self.affine.grad_gamma,
                &self.affine.grad_beta,
            );
            let coupled = self.batch_stats;
            for ((g, xh), mut dx) in grad_output
                .rows()
                .into_iter()
                .zip(self.xhat.view().rows())
                .zip(self.dx.view_mut().rows_mut())
            {
                for j in 0..n {
                    let centred = if coupled {
                        g[j] - db[j] - xh[j] * dg[j]
                    } else {
                        g[j]
                    };
                    dx[j] = gamma[j] * self.inv_std[j] * centred;
                }
            }
        }
        Ok(())
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.dx.view()
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_, F>)) {
        self.affine.visit(f);
    }

    fn visit_grads_mut(&mut self, f: &mut dyn FnMut(&mut [F])) {
        f(self.affine.grad_gamma.as_slice_mut().expect("contiguous"));
        f(self.affine.grad_beta.as_slice_mut().expect("contiguous"));
    }

    fn min_train_batch(&self) -> usize {
        2
    }

    fn visit_statistics_mut(&mut self, f: &mut dyn FnMut(&mut [F])) {
        f(self.running_mean.as_slice_mut().expect("contiguous"));
        f(self.running_var.as_slice_mut().expect("contiguous"));
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::BatchNorm(BatchNormSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.input_size()),
            momentum: self.momentum,
            eps: self.eps,
        })
    }

    fn visit_tensors<'a>(&'a self, f: &mut dyn FnMut(Tensor<'a, F>)) {
        f(tensor("gamma", &self.affine.gamma));
        f(tensor("beta", &self.affine.beta));
        f(tensor("running_mean", &self.running_mean));
        f(tensor("running_var", &self.running_var));
    }

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        let eps = F::of(self.eps);
        let (g, b) = (&self.affine.gamma, &self.affine.beta);
        for (row, mut y) in input.rows().into_iter().zip(out.rows_mut()) {
            for j in 0..row.len() {
                let inv_std = F::one() / (self.running_var[j] + eps).sqrt();
                y[j] = g[j] * (row[j] - self.running_mean[j]) * inv_std + b[j];
            }
        }
        Ok(())
    }
}

/// Layer normalisation: each sample is normalised over its features with its own mean and
/// (biased) variance, the same in training and evaluation (PyTorch's `LayerNorm` over the last
/// dimension).
#[derive(Debug, Clone)]
pub struct LayerNorm<F: Scalar> {
    name: String,
    eps: f64,
    affine: Affine<F>,
    /// `1/√(var + ε)` of each sample of the latest forward.
    inv_std: Vec<F>,
    xhat: Buffer<F>,
    y: Buffer<F>,
    dx: Buffer<F>,
}

impl<F: Scalar> LayerNorm<F> {
    /// A layer over `size` features with `γ = 1` and `β = 0`.
    pub fn new(name: impl Into<String>, size: usize, eps: f64) -> Self {
        Self::from_tensors(name, Array1::ones(size), Array1::zeros(size), eps)
    }

    /// A layer with the given scale and shift.
    pub fn from_tensors(
        name: impl Into<String>,
        gamma: Array1<F>,
        beta: Array1<F>,
        eps: f64,
    ) -> Self {
        LayerNorm {
            name: name.into(),
            eps,
            affine: Affine::new(gamma, beta),
            inv_std: Vec::new(),
            xhat: Buffer::default(),
            y: Buffer::default(),
            dx: Buffer::default(),
        }
    }

    /// Normalises one row into `xhat` and returns `1/√(var + ε)`.
    fn normalise(&self, row: ndarray::ArrayView1<'_, F>, xhat: &mut [F]) -> F {
        let n = F::of(row.len() as f64);
        let mean = row.sum() / n;
        let var = row.fold(F::zero(), |s, &x| s + (x - mean) * (x - mean)) / n;
        let inv_std = F::one() / (var + F::of(self.eps)).sqrt();
        xhat.iter_mut()
            .zip(row)
            .for_each(|(h, &x)| *h = (x - mean) * inv_std);
        inv_std
    }
}

impl<F: Scalar> Layer<F> for LayerNorm<F> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "LayerNorm"
    }

    fn input_size(&self) -> usize {
        self.affine.gamma.len()
    }

    fn output_size(&self) -> usize {
        self.affine.gamma.len()
    }

    fn num_params(&self) -> usize {
        2 * self.affine.gamma.len()
    }

    fn forward(&mut self, input: ArrayView2<'_, F>, _mode: Mode) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        let (batch, n) = input.dim();
        let mut xhat = std::mem::take(&mut self.xhat);
        xhat.resize(batch, n);
        self.inv_std.resize(batch, F::zero());
        for (i, (row, xh)) in input
            .rows()
            .into_iter()
            .zip(xhat.as_mut_slice().chunks_mut(n))
            .enumerate()
        {
            self.inv_std[i] = self.normalise(row, xh);
        }
        self.xhat = xhat;
        self.y.resize(batch, n);
        let (g, b) = (&self.affine.gamma, &self.affine.beta);
        for (xh, y) in self
            .xhat
            .as_slice()
            .chunks(n)
            .zip(self.y.as_mut_slice().chunks_mut(n))
        {
            for j in 0..n {
                y[j] = g[j] * xh[j] + b[j];
            }
        }
        Ok(())
    }

    fn output(&self) -> ArrayView2<'_, F> {
        self.y.view()
    }

    fn backward(
        &mut self,
        input: ArrayView2<'_, F>,
        grad_output: ArrayView2<'_, F>,
        need_input_grad: bool,
    ) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        check_grad(&self.name, self.y.shape(), &grad_output)?;
        self.affine.grads(&grad_output, &self.xhat);
        if need_input_grad {
            let (batch, n) = grad_output.dim();
            self.dx.resize(batch, n);
            let inv_n = F::one() / F::of(n as f64);
            let gamma = &self.affine.gamma;
            for (((g, xh), dx), &inv_std) in grad_output
                .rows()
                .into_iter()
                .zip(self.xhat.as_slice().chunks(n))
                .zip(self.dx.as_mut_slice().chunks_mut(n))
                .zip(&self.inv_std)
            {
                // h = g ⊙ γ; dx = (h − mean(h) − x̂ · mean(h ⊙ x̂)) / σ
                let (mut mh, mut mhx) = (F::zero(), F::zero());
                for j in 0..n {
                    let h = g[j] * gamma[j];
                    mh += h;
                    mhx += h * xh[j];
                }
                let (mh, mhx) = (mh * inv_n, mhx * inv_n);
                for j in 0..n {
                    dx[j] = inv_std * (g[j] * gamma[j] - mh - xh[j] * mhx);
                }
            }
        }
        Ok(())
    }

    fn input_grad(&self) -> ArrayView2<'_, F> {
        self.dx.view()
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(Param<'_, F>)) {
        self.affine.visit(f);
    }

    fn visit_grads_mut(&mut self, f: &mut dyn FnMut(&mut [F])) {
        f(self.affine.grad_gamma.as_slice_mut().expect("contiguous"));
        f(self.affine.grad_beta.as_slice_mut().expect("contiguous"));
    }

    fn to_spec(&self) -> LayerSpec {
        LayerSpec::LayerNorm(LayerNormSpec {
            name: Some(self.name.clone()),
            input_size: Some(self.input_size()),
            eps: self.eps,
        })
    }

    fn visit_tensors<'a>(&'a self, f: &mut dyn FnMut(Tensor<'a, F>)) {
        f(tensor("gamma", &self.affine.gamma));
        f(tensor("beta", &self.affine.beta));
    }

    fn infer(&self, input: ArrayView2<'_, F>, mut out: ArrayViewMut2<'_, F>) -> Result<()> {
        check_width(&self.name, "input", self.input_size(), &input)?;
        let (g, b) = (&self.affine.gamma, &self.affine.beta);
        for (row, mut y) in input.rows().into_iter().zip(out.rows_mut()) {
            let y = y.as_slice_mut().ok_or_else(|| {
                Error::shape(
                    format!("layer {} output buffer", self.name),
                    "contiguous rows",
                    "strided",
                )
            })?;
            self.normalise(row, y);
            for j in 0..y.len() {
                y[j] = g[j] * y[j] + b[j];
            }
        }
        Ok(())
    }
}
