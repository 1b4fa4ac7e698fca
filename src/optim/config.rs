//! Optimizers described as data, for training files.

use super::{AdagradConfig, AdamConfig, AdamWConfig, Optimizer, RmsPropConfig, SgdConfig};
use crate::Result;
use serde::{Deserialize, Serialize};

/// An optimizer and its settings, with PyTorch's names and defaults (each optimizer's
/// `*Config`). Serialized with a `"type"` tag and the config's fields: `{type: Adam, lr: 0.001}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OptimizerSpec {
    /// [`Sgd`](super::Sgd).
    #[serde(rename = "SGD", alias = "sgd")]
    Sgd(SgdConfig),
    /// [`Adam`](super::Adam).
    #[serde(alias = "adam")]
    Adam(AdamConfig),
    /// [`Adam::adamw`](super::Adam::adamw).
    #[serde(alias = "adamw")]
    AdamW(AdamWConfig),
    /// [`RmsProp`](super::RmsProp).
    #[serde(rename = "RMSprop", alias = "rmsprop")]
    RmsProp(RmsPropConfig),
    /// [`Adagrad`](super::Adagrad).
    #[serde(alias = "adagrad")]
    Adagrad(AdagradConfig),
}

impl Default for OptimizerSpec {
    /// Adam with PyTorch's defaults.
    fn default() -> Self {
        OptimizerSpec::Adam(AdamConfig::default())
    }
}

impl OptimizerSpec {
    /// Sets the learning rate (a command line's `--lr`).
    pub fn set_lr(&mut self, value: f64) {
        match self {
            OptimizerSpec::Sgd(c) => c.lr = value,
            OptimizerSpec::Adam(c) => c.lr = value,
            OptimizerSpec::AdamW(c) => c.lr = value,
            OptimizerSpec::RmsProp(c) => c.lr = value,
            OptimizerSpec::Adagrad(c) => c.lr = value,
        }
    }

    /// The optimizer, with every setting checked.
    pub fn build(&self) -> Result<Box<dyn Optimizer>> {
        Ok(match self {
            OptimizerSpec::Sgd(c) => Box::new(c.build()?),
            OptimizerSpec::Adam(c) => Box::new(c.build()?),
            OptimizerSpec::AdamW(c) => Box::new(c.build()?),
            OptimizerSpec::RmsProp(c) => Box::new(c.build()?),
            OptimizerSpec::Adagrad(c) => Box::new(c.build()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> std::result::Result<OptimizerSpec, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    /// The error building `spec` gives.
    fn build_error(spec: OptimizerSpec) -> String {
        match spec.build() {
            Ok(_) => panic!("{spec:?} built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn model_file_settings_take_the_configs_defaults_and_checks() {
        // Defaults come from each config's Default: PyTorch's.
        assert_eq!(
            spec(r#"{"type": "RMSprop"}"#).unwrap(),
            OptimizerSpec::RmsProp(RmsPropConfig::default())
        );
        assert_eq!(
            spec(r#"{"type": "AdamW", "lr": 0.01}"#).unwrap(),
            OptimizerSpec::AdamW(AdamWConfig {
                lr: 0.01,
                ..Default::default()
            })
        );
        assert_eq!(AdamWConfig::default().weight_decay, 0.01);
        // Settings are checked together, in any order.
        let nesterov = spec(r#"{"type": "SGD", "nesterov": true, "momentum": 0.9}"#).unwrap();
        assert!(nesterov.build().is_ok());
        let err = build_error(spec(r#"{"type": "SGD", "nesterov": true}"#).unwrap());
        assert!(err.contains("Nesterov"), "{err}");
        // Dampening without momentum would do nothing: an error, not silence.
        let err = build_error(spec(r#"{"type": "sgd", "lr": 0.1, "dampening": 0.5}"#).unwrap());
        assert!(err.contains("dampening"), "{err}");
        let err = spec(r#"{"type": "Adam", "beta": [0.9, 0.99]}"#).unwrap_err();
        assert!(err.contains("unknown field `beta`"), "{err}");
        let err = build_error(spec(r#"{"type": "Adam", "betas": [0.9, 1.0]}"#).unwrap());
        assert!(err.contains("beta2"), "{err}");
        // And back to the same document.
        let adam = OptimizerSpec::Adam(AdamConfig {
            lr: 0.5,
            ..Default::default()
        });
        assert_eq!(spec(&serde_json::to_string(&adam).unwrap()).unwrap(), adam);
    }
}
