//! Hostile and malformed ONNX files: each is an error that says what and where, never a panic,
//! an abort or an allocation beyond the file's size.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataLocation,
};
use crate::{Activation, Sequential};
use prost::Message;

/// A valid export to start each hostile file from: 3 -> 4 (ReLU) -> 2.
fn valid() -> ModelProto {
    let model = Sequential::<f32>::builder(3)
        .dense(4, Activation::Relu)
        .dense(2, Activation::Identity)
        .build()
        .unwrap();
    ModelProto::decode(model.to_onnx().unwrap().as_slice()).unwrap()
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        name: format!("{op}_{output}"),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// The import's error for `m`, in f32 and f64 alike.
fn error(m: &ModelProto) -> String {
    let bytes = m.encode_to_vec();
    let e32 = Sequential::<f32>::from_onnx(&bytes)
        .unwrap_err()
        .to_string();
    let e64 = Sequential::<f64>::from_onnx(&bytes)
        .unwrap_err()
        .to_string();
    assert_eq!(e32, e64);
    assert!(e32.starts_with("ONNX file, "), "{e32}");
    e32
}

fn assert_error(m: &ModelProto, want: &[&str]) {
    let e = error(m);
    for w in want {
        assert!(e.contains(w), "{e:?} lacks {w:?}");
    }
}

#[test]
fn bytes_that_are_not_a_model() {
    let bytes = valid().encode_to_vec();
    for cut in [1, bytes.len() / 3, bytes.len() - 1] {
        let e = Sequential::<f32>::from_onnx(&bytes[..cut])
            .unwrap_err()
            .to_string();
        assert!(e.contains("protobuf") || e.contains("graph"), "{cut}: {e}");
    }
    let e = Sequential::<f32>::from_onnx(b"hello, world")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("ONNX file, "), "{e}");
    let e = Sequential::<f32>::from_onnx(&[]).unwrap_err().to_string();
    assert!(e.contains("operator set"), "{e}");
}

#[test]
fn model_level_problems() {
    let mut m = valid();
    m.graph = None;
    assert_error(&m, &["has no graph"]);
    let mut m = valid();
    m.opset_import.clear();
    assert_error(&m, &["default operator set"]);
    let mut m = valid();
    graph(&mut m).input.clear();
    assert_error(&m, &["graph", "no input"]);
    let mut m = valid();
    let extra = graph(&mut m).input[0].clone();
    graph(&mut m).input.push(super::proto::ValueInfoProto {
        name: "second".into(),
        ..extra
    });
    assert_error(&m, &["inputs `input` and `second`"]);
}

#[test]
fn tensors_held_to_their_shapes_and_the_limits() {
    fn weights(m: &mut ModelProto) -> &mut TensorProto {
        graph(m)
            .initializer
            .iter_mut()
            .find(|t| t.name == "dense_0.weights")
            .unwrap()
    }
    // A shape of 2^40 elements with no data behind it: refused before anything is allocated.
    let mut m = valid();
    weights(&mut m).dims = vec![1 << 20, 1 << 20];
    assert_error(&m, &["tensor `dense_0.weights`", "exceeds the limit"]);
    let mut m = valid();
    weights(&mut m).dims = vec![i64::MAX, i64::MAX];
    assert_error(&m, &["exceeds the limit"]);
    let mut m = valid();
    weights(&mut m).dims = vec![-3, 4];
    assert_error(&m, &["negative dimension -3"]);
    let mut m = valid();
    weights(&mut m).raw_data.truncate(10);
    assert_error(&m, &["tensor `dense_0.weights`", "for shape [3, 4]"]);
    let mut m = valid();
    weights(&mut m).data_location = DataLocation::External as i32;
    assert_error(&m, &["tensor `dense_0.weights`", "external file"]);
    let mut m = valid();
    weights(&mut m).data_type = 16; // bfloat16
    assert_error(&m, &["data type BFLOAT16"]);
    let mut m = valid();
    weights(&mut m).data_type = 9999;
    assert_error(&m, &["unknown data type 9999"]);
    let mut m = valid();
    weights(&mut m).raw_data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_error(&m, &["not finite"]);
    let mut m = valid();
    let t = weights(&mut m).clone();
    graph(&mut m).initializer.push(t);
    assert_error(&m, &["tensor `dense_0.weights`", "defined twice"]);
}

#[test]
fn graphs_crank_does_not_import() {
    // An operator with no crank layer, named with its node.
    let mut m = valid();
    graph(&mut m).node[0].op_type = "Conv".into();
    assert_error(&m, &["node 0 (`dense_0`, Conv)", "operator `Conv`"]);
    // A branch: two nodes read the input.
    let mut m = valid();
    let g = graph(&mut m);
    g.node.push(node("Relu", &["input"], "side"));
    g.output.push(super::proto::ValueInfoProto {
        name: "side".into(),
        ..Default::default()
    });
    assert_error(&m, &["value `input`", "not a branching graph"]);
    // A weight the graph computes.
    let mut m = valid();
    graph(&mut m).node[0].input[1] = "elsewhere".into();
    assert_error(&m, &["weight `elsewhere` is not a constant"]);
    // An Add after an activation.
    let mut m = valid();
    let bias = graph(&mut m).node[0].input.pop().unwrap();
    graph(&mut m).node[0].output[0] = "product".into();
    graph(&mut m)
        .node
        .insert(1, node("Relu", &["product"], "r"));
    let mut add = node("Add", &["r", &bias], "dense_0:out");
    add.name = "late_bias".into();
    graph(&mut m).node.insert(2, add);
    graph(&mut m).node[3].input[0] = "dense_0:out".into();
    assert_error(
        &m,
        &["node 2 (`late_bias`, Add)", "does not follow a product"],
    );
    // A Gemm that scales.
    let mut m = valid();
    graph(&mut m).node[0].attribute.push(AttributeProto {
        name: "alpha".into(),
        f: 2.0,
        r#type: 1,
        ..Default::default()
    });
    assert_error(&m, &["alpha"]);
    // A LogSoftmax is read only as a classifier's last node.
    let mut m = valid();
    let last = graph(&mut m).node.len() - 1;
    graph(&mut m).node[last].output[0] = "logits".into();
    graph(&mut m)
        .node
        .push(node("LogSoftmax", &["logits"], "log_p"));
    graph(&mut m)
        .node
        .push(node("Identity", &["log_p"], "output"));
    assert_error(
        &m,
        &[
            "(`Identity_output`, Identity)",
            "follows node",
            "LogSoftmax",
        ],
    );
    // Control flow.
    let mut m = valid();
    graph(&mut m).node[1].attribute.push(AttributeProto {
        name: "then_branch".into(),
        g: Some(GraphProto::default()),
        ..Default::default()
    });
    assert_error(&m, &["subgraphs"]);
    // A dangling chain: the last value is no output of the graph.
    let mut m = valid();
    graph(&mut m).output[0].name = "other".into();
    assert_error(
        &m,
        &["value `output`", "neither read by a node nor an output"],
    );
}

#[test]
fn cycles_deep_nesting_and_huge_graphs_fail_cleanly() {
    // Two nodes that read each other's output, after a product: the walk stops.
    let mut m = valid();
    let g = graph(&mut m);
    g.node.truncate(1);
    g.node[0].output = vec!["a".into()];
    g.node.push(node("Identity", &["a"], "b"));
    g.node.push(node("Identity", &["b"], "a"));
    assert!(error(&m).contains("cycle") || error(&m).contains("written twice"));
    // Attribute graphs nested 1,000 deep: the decoder's recursion limit, not the stack.
    let mut nested = GraphProto::default();
    for _ in 0..1_000 {
        nested = GraphProto {
            node: vec![NodeProto {
                attribute: vec![AttributeProto {
                    name: "body".into(),
                    g: Some(nested),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    let mut bytes = Vec::new();
    // Encoded on a thread with room for prost's recursive encoder; the decoder under test
    // stops at its depth limit.
    let model = ModelProto {
        graph: Some(nested),
        ..valid()
    };
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let out = model.encode_to_vec();
            drop(model);
            out
        })
        .unwrap()
        .join()
        .map(|out| bytes = out)
        .unwrap();
    let e = Sequential::<f32>::from_onnx(&bytes)
        .unwrap_err()
        .to_string();
    assert!(e.contains("protobuf") && e.contains("recursion"), "{e}");
    // More nodes than the limit.
    let mut m = valid();
    let g = graph(&mut m);
    let extra = super::MAX_NODES + 1 - g.node.len();
    g.node
        .extend((0..extra).map(|i| node("Identity", &["x"], &format!("v{i}"))));
    assert_error(&m, &["nodes is more than the limit"]);
}
