//! A crank model as an ONNX inference graph.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType,
    tensor_proto::DataType,
    tensor_shape_proto::{Dimension, dimension},
    type_proto,
};
use super::{INPUT, META_CLASSES, META_LABEL, META_LOSS, META_STANDARDIZATION, OUTPUT};
use crate::io::le_bytes;
use crate::spec::LayerSpec;
use crate::{Activation, Error, Result, Scalar, Sequential};
use prost::Message;

/// The ONNX element type of `F`.
fn elem_type<F: Scalar>() -> DataType {
    if F::NAME == "f32" {
        DataType::Float
    } else {
        DataType::Double
    }
}

/// The graph being written: nodes, initializers, and the name of the value the next node reads.
struct Writer {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    current: String,
    /// The highest operator set version a node needs.
    opset: i64,
}

impl Writer {
    fn initializer<F: Scalar>(&mut self, name: String, shape: &[usize], values: &[F]) -> String {
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: shape.iter().map(|&d| d as i64).collect(),
            data_type: elem_type::<F>() as i32,
            raw_data: le_bytes(values).into_owned(),
            ..Default::default()
        });
        name
    }

    /// Appends a node reading the current value (and `inputs`) and writing `<name>:out`, the
    /// new current value; `opset` is the version of the operator set that has the operator as
    /// written.
    fn node(
        &mut self,
        name: String,
        op: &str,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
        opset: i64,
    ) {
        let output = format!("{name}:out");
        let mut all = vec![std::mem::replace(&mut self.current, output.clone())];
        all.extend(inputs);
        self.nodes.push(NodeProto {
            name,
            op_type: op.into(),
            input: all,
            output: vec![output],
            attribute: attributes,
            ..Default::default()
        });
        self.opset = self.opset.max(opset);
    }
}

fn float_attribute(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value as f32,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// The ONNX operator of an activation, its attributes and the operator set version that holds
/// it as crank computes it; `None` for the identity.
fn activation(activation: Activation) -> Option<(&'static str, Vec<AttributeProto>, i64)> {
    Some(match activation {
        Activation::Identity => return None,
        Activation::Relu => ("Relu", vec![], super::BASE_OPSET),
        Activation::LeakyRelu { alpha } => (
            "LeakyRelu",
            vec![float_attribute("alpha", alpha)],
            super::BASE_OPSET,
        ),
        Activation::Sigmoid => ("Sigmoid", vec![], super::BASE_OPSET),
        Activation::Tanh => ("Tanh", vec![], super::BASE_OPSET),
        Activation::Softplus => ("Softplus", vec![], super::BASE_OPSET),
        // The exact GELU (`approximate = "none"`, the default), added in opset 20.
        Activation::Gelu => ("Gelu", vec![], 20),
        // Opset 13's Softmax normalises along one axis, the last by default.
        Activation::Softmax => (
            "Softmax",
            vec![int_attribute("axis", -1)],
            super::BASE_OPSET,
        ),
    })
}

fn tensor_type(elem: DataType, width: usize) -> Option<TypeProto> {
    let dims = [
        dimension::Value::DimParam("batch".into()),
        dimension::Value::DimValue(width as i64),
    ];
    Some(TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: elem as i32,
            shape: Some(TensorShapeProto {
                dim: dims
                    .into_iter()
                    .map(|v| Dimension {
                        value: Some(v),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    })
}

/// The oldest IR version that can hold operator set `opset` of the default domain.
fn ir_version(opset: i64) -> i64 {
    match opset {
        ..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

pub(super) fn encode<F: Scalar>(model: &Sequential<F>) -> Result<Vec<u8>> {
    let spec = model.to_spec();
    let resolved = spec.resolve()?;
    if let Some(p) = model.precision() {
        return Err(crate::Error::Config(format!(
            "ONNX export takes f32 and f64 models; this one has {p} layers: export the float \
             model it was quantized from"
        )));
    }
    let mut w = Writer {
        nodes: Vec::new(),
        initializers: Vec::new(),
        current: INPUT.into(),
        opset: super::BASE_OPSET,
    };
    let mut metadata = Vec::new();
    if let Some(p) = model.preprocessing() {
        let values = |v: &[f64]| v.iter().map(|&x| F::of(x)).collect::<Vec<F>>();
        let mean = w.initializer("standardize.mean".into(), &[p.mean.len()], &values(&p.mean));
        w.node("standardize.sub".into(), "Sub", vec![mean], vec![], 1);
        let std = w.initializer("standardize.std".into(), &[p.std.len()], &values(&p.std));
        w.node("standardize.div".into(), "Div", vec![std], vec![], 1);
        // The graph holds the standardisation in the model's precision; `crank predict`
        // standardises in f64, so the exact values go beside it for the way back into crank.
        let exact = serde_json::json!({"mean": p.mean, "std": p.std});
        metadata.push((META_STANDARDIZATION, exact.to_string()));
        if let Some(classes) = &p.classes {
            metadata.push((META_CLASSES, json(classes)));
        }
        if let Some(label) = &p.label {
            metadata.push((META_LABEL, label.clone()));
        }
        if let Some(loss) = &p.loss {
            metadata.push((META_LOSS, json(loss)));
        }
    }
    for ((name, _, layer), tensors) in resolved.layers.iter().zip(model.tensor_views()) {
        let mut inputs = Vec::with_capacity(tensors.len());
        for t in &tensors {
            inputs.push(w.initializer(format!("{name}.{}", t.name), t.shape, &t.data.values()));
        }
        match layer {
            LayerSpec::Dense(d) => {
                // crank's weights are [input, output]: Gemm's B without transposing.
                w.node(name.clone(), "Gemm", inputs, vec![], super::BASE_OPSET);
                if let Some((op, attributes, opset)) = activation(d.activation_function) {
                    w.node(format!("{name}.{op}"), op, vec![], attributes, opset);
                }
            }
            LayerSpec::BatchNorm(b) => {
                // ONNX's momentum weighs the running statistics, PyTorch's and crank's the batch.
                let attributes = vec![
                    float_attribute("epsilon", b.eps),
                    float_attribute("momentum", 1.0 - b.momentum),
                ];
                let op = "BatchNormalization";
                w.node(name.clone(), op, inputs, attributes, super::BASE_OPSET);
            }
            LayerSpec::LayerNorm(l) => {
                let attributes = vec![int_attribute("axis", -1), float_attribute("epsilon", l.eps)];
                w.node(name.clone(), "LayerNormalization", inputs, attributes, 17);
            }
            LayerSpec::Activation(a) => {
                if let Some((op, attributes, opset)) = activation(a.activation_function) {
                    w.node(name.clone(), op, vec![], attributes, opset);
                }
            }
            // An inference graph: dropout is the identity.
            LayerSpec::Dropout(_) => {}
            // Refused above.
            LayerSpec::Int8Dense(_) | LayerSpec::Bf16Dense(_) => {}
        }
    }
    // The graph's output is named `output`: rename the last node's (or pass the input through).
    if w.nodes.is_empty() {
        w.node("output".into(), "Identity", vec![], vec![], 1);
    }
    if let Some(last) = w.nodes.last_mut() {
        last.output = vec![OUTPUT.into()];
    }
    let elem = elem_type::<F>();
    let graph = GraphProto {
        name: "crank".into(),
        node: w.nodes,
        initializer: w.initializers,
        input: vec![ValueInfoProto {
            name: INPUT.into(),
            r#type: tensor_type(elem, model.input_size()),
            ..Default::default()
        }],
        output: vec![ValueInfoProto {
            name: OUTPUT.into(),
            r#type: tensor_type(elem, model.output_size()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let onnx = ModelProto {
        ir_version: ir_version(w.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: w.opset,
        }],
        producer_name: "crank".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.into(),
                value,
            })
            .collect(),
        ..Default::default()
    };
    let len = onnx.encoded_len();
    if len as u64 > super::MAX_BYTES {
        return Err(Error::File {
            format: super::FORMAT,
            at: "output".into(),
            reason: format!(
                "{len} bytes is more than a protobuf message may hold ({} bytes)",
                super::MAX_BYTES
            ),
        });
    }
    Ok(onnx.encode_to_vec())
}

/// A metadata value as JSON text.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("class names and losses serialize")
}
