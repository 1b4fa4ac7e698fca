//! An ONNX graph of a sequential network as a crank model.
//!
//! The graph is read as a chain from its one input: each node reads the value the previous one
//! wrote (and constants), and maps to a crank layer or a part of one. A node that fits no layer,
//! a branch, or a weight that is not a constant stops the import with an error naming the node.

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataLocation,
    tensor_proto::DataType, type_proto,
};
use super::{FORMAT, MAX_NODES, META_CLASSES, META_LABEL, META_LOSS, META_STANDARDIZATION};
use crate::spec::{
    ActivationSpec, BatchNormSpec, DenseSpec, LayerNormSpec, LayerSpec, Limits, ModelSpec,
    Preprocessing,
};
use crate::{Activation, Error, Loss, Result, Scalar, Sequential};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// A model read from an ONNX file, with what the import left out.
#[derive(Debug)]
pub struct Import<F: Scalar> {
    /// The model.
    pub model: Sequential<F>,
    /// The nodes the import passed over and why, one line each: inference no-ops (`Dropout`,
    /// `Identity`, `Flatten`, casts), and a classifier's label post-processing (`ArgMax`,
    /// `ZipMap`, ...), which crank's classifiers do themselves from the class names.
    pub notes: Vec<String>,
    /// The file's version of the default operator set.
    pub opset: i64,
    /// The file's IR version.
    pub ir_version: i64,
    /// The program that wrote the file, and its version, as the file says.
    pub producer: String,
}

fn err(at: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::File {
        format: FORMAT,
        at: at.into(),
        reason: reason.to_string(),
    }
}

/// A constant's values.
#[derive(Debug)]
enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Text(Vec<String>),
}

/// A constant tensor: an initializer, or the output of a `Constant` node.
#[derive(Debug)]
struct Const {
    dims: Vec<usize>,
    values: Values,
}

impl Const {
    fn floats(&self, at: &str) -> Result<&[f64]> {
        match &self.values {
            Values::Float(v) => Ok(v),
            _ => Err(err(at, "expected floating-point values")),
        }
    }
}

/// Reads a tensor's values, holding its size to the limits and its data to its shape.
fn constant(t: &TensorProto) -> Result<Const> {
    let at = format!("tensor `{}`", t.name);
    if t.data_location == DataLocation::External as i32 || !t.external_data.is_empty() {
        return Err(err(
            &at,
            "its data is in an external file; crank reads models whose weights are inside \
             the .onnx file (onnx.save_model(..., save_as_external_data=False))",
        ));
    }
    if t.segment.is_some() {
        return Err(err(&at, "segmented tensors are not supported"));
    }
    let mut n: u64 = 1;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = u64::try_from(d).map_err(|_| err(&at, format!("negative dimension {d}")))?;
        n = n.saturating_mul(d);
        dims.push(d as usize);
    }
    if n > Limits::DEFAULT.max_tensor_elements {
        return Err(err(
            &at,
            format!(
                "shape {dims:?} exceeds the limit of {} elements",
                Limits::DEFAULT.max_tensor_elements
            ),
        ));
    }
    let n = n as usize;
    let raw = &t.raw_data;
    let length = |found: usize| err(&at, format!("{found} values for shape {dims:?}"));
    let from_raw = |size: usize| -> Result<std::slice::ChunksExact<'_, u8>> {
        if raw.len() != n * size {
            return Err(length(raw.len() / size));
        }
        Ok(raw.chunks_exact(size))
    };
    let values = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) if !raw.is_empty() => Values::Float(
            from_raw(4)?
                .map(|b| f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))))
                .collect(),
        ),
        Ok(DataType::Float) => Values::Float(t.float_data.iter().map(|&v| f64::from(v)).collect()),
        Ok(DataType::Double) if !raw.is_empty() => Values::Float(
            from_raw(8)?
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        Ok(DataType::Double) => Values::Float(t.double_data.clone()),
        Ok(DataType::Int64) if !raw.is_empty() => Values::Int(
            from_raw(8)?
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
        ),
        Ok(DataType::Int64) => Values::Int(t.int64_data.clone()),
        Ok(DataType::Int32) if raw.is_empty() => {
            Values::Int(t.int32_data.iter().map(|&v| i64::from(v)).collect())
        }
        Ok(DataType::String) => Values::Text(
            t.string_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        Ok(other) => {
            return Err(err(
                &at,
                format!(
                    "data type {}; crank reads FLOAT, DOUBLE, INT64 and STRING tensors",
                    other.as_str_name()
                ),
            ));
        }
        Err(_) => return Err(err(&at, format!("unknown data type {}", t.data_type))),
    };
    let found = match &values {
        Values::Float(v) => v.len(),
        Values::Int(v) => v.len(),
        Values::Text(v) => v.len(),
    };
    if found != n {
        return Err(length(found));
    }
    Ok(Const { dims, values })
}

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn float_attribute(node: &NodeProto, name: &str, default: f64) -> f64 {
    attribute(node, name).map_or(default, |a| f64::from(a.f))
}

fn int_attribute(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

/// How a node is named in errors: `node 3 (`/1/Gemm`, Gemm)`.
fn node_at(index: usize, node: &NodeProto) -> String {
    format!("node {index} (`{}`, {})", node.name, node.op_type)
}

/// The operators of a classifier's label post-processing, as skl2onnx writes it after the
/// probabilities: crank's classifiers turn outputs into labels themselves.
const POST_PROCESSING: &[&str] = &[
    "ArgMax",
    "ZipMap",
    "ArrayFeatureExtractor",
    "Reshape",
    "Cast",
    "Identity",
    "Sub",
    "Concat",
    "Squeeze",
    "Unsqueeze",
];

/// What the import has built so far.
struct Chain {
    layers: Vec<LayerSpec>,
    tensors: Vec<Vec<Vec<f64>>>,
    /// The width of the current value, once known.
    width: Option<usize>,
    /// The last layer is a Dense layer that an activation may still follow.
    open_dense: bool,
    mean: Option<Vec<f64>>,
    std: Option<Vec<f64>>,
    names: HashSet<String>,
    notes: Vec<String>,
    /// The `LogSoftmax` node the network ended in, if any: a classifier's log-probabilities.
    log_softmax: Option<String>,
}

impl Chain {
    fn check_width(&mut self, at: &str, width: usize) -> Result<()> {
        match self.width {
            Some(w) if w != width => Err(err(
                at,
                format!("takes {width} features, but the value it reads has {w}"),
            )),
            _ => {
                self.width = Some(width);
                Ok(())
            }
        }
    }

    /// A layer name from the node's, unless it is empty or taken.
    fn name(&mut self, node: &NodeProto) -> Option<String> {
        let name = node.name.trim();
        (!name.is_empty() && self.names.insert(name.to_string())).then(|| name.to_string())
    }

    /// A per-feature vector: `[n]` or `[1, n]`, or one value repeated.
    fn vector(&self, at: &str, c: &Const, what: &str) -> Result<Vec<f64>> {
        let v = c.floats(at)?;
        let n = self.width;
        match (v.len(), n) {
            (1, Some(n)) => Ok(vec![v[0]; n]),
            (len, Some(n)) if len == n && c.dims.iter().filter(|&&d| d != 1).count() <= 1 => {
                Ok(v.to_vec())
            }
            (len, _) => Err(err(
                at,
                format!(
                    "{what} of shape {:?} ({len} values) for {} features",
                    c.dims,
                    n.map_or("an unknown number of".into(), |n| n.to_string())
                ),
            )),
        }
    }

    fn push(&mut self, layer: LayerSpec, tensors: Vec<Vec<f64>>) {
        self.open_dense = matches!(layer, LayerSpec::Dense(_));
        self.layers.push(layer);
        self.tensors.push(tensors);
    }

    fn dense(&mut self, node: &NodeProto, weights: Vec<f64>, out: usize) {
        let input = self.width.expect("checked before");
        let spec = DenseSpec {
            name: self.name(node),
            input_size: Some(input),
            output_size: out,
            activation_function: Activation::Identity,
        };
        self.push(LayerSpec::Dense(spec), vec![weights, vec![0.0; out]]);
        self.width = Some(out);
    }

    /// The last layer's Dense description and biases, if the last layer is Dense and open.
    fn open_dense(&mut self) -> Option<(&mut DenseSpec, &mut Vec<f64>)> {
        if !self.open_dense {
            return None;
        }
        match (self.layers.last_mut(), self.tensors.last_mut()) {
            (Some(LayerSpec::Dense(d)), Some(t)) => Some((d, &mut t[1])),
            _ => None,
        }
    }
}

/// `[rows, cols]` row-major to `[cols, rows]` row-major.
fn transpose(v: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Where a constant's values are: an initializer, or a `Constant` node's attribute.
#[derive(Clone, Copy)]
enum Source<'g> {
    Tensor(&'g TensorProto),
    Node(&'g NodeProto),
}

/// The graph's constants, the nodes that compute, and for each value the nodes that read it.
struct Graph<'g> {
    /// Where each constant comes from; read when a layer needs it, so that a file's unused
    /// tensors cost no copies.
    consts: HashMap<&'g str, Source<'g>>,
    nodes: Vec<(usize, &'g NodeProto)>,
    readers: HashMap<&'g str, Vec<usize>>,
}

impl<'g> Graph<'g> {
    fn new(graph: &'g GraphProto) -> Result<Self> {
        let mut consts = HashMap::new();
        for t in &graph.initializer {
            if consts.insert(t.name.as_str(), Source::Tensor(t)).is_some() {
                return Err(err(format!("tensor `{}`", t.name), "defined twice"));
            }
        }
        let mut nodes = Vec::new();
        for (i, node) in graph.node.iter().enumerate() {
            let at = || node_at(i, node);
            if !node
                .attribute
                .iter()
                .all(|a| a.g.is_none() && a.graphs.is_empty())
            {
                return Err(err(at(), "subgraphs (control flow) are not supported"));
            }
            let folded = match (node.op_type.as_str(), node.input.first()) {
                ("Constant", _) => Some(Source::Node(node)),
                ("Identity", Some(input)) => consts.get(input.as_str()).copied(),
                _ => None,
            };
            match (folded, node.output.first()) {
                (Some(c), Some(out)) => {
                    if consts.insert(out.as_str(), c).is_some() {
                        return Err(err(at(), format!("value `{out}` is written twice")));
                    }
                }
                _ => nodes.push((i, node)),
            }
        }
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (k, (_, node)) in nodes.iter().enumerate() {
            for input in node.input.iter().filter(|n| !n.is_empty()) {
                if !consts.contains_key(input.as_str()) {
                    let list = readers.entry(input.as_str()).or_default();
                    if list.last() != Some(&k) {
                        list.push(k);
                    }
                }
            }
        }
        Ok(Graph {
            consts,
            nodes,
            readers,
        })
    }

    fn readers(&self, value: &str) -> &[usize] {
        self.readers.get(value).map_or(&[], Vec::as_slice)
    }

    /// A constant's values, if `name` is a constant.
    fn constant(&self, name: &str) -> Option<Result<Const>> {
        self.consts.get(name).map(|source| match source {
            Source::Tensor(t) => constant(t),
            Source::Node(node) => constant_node(node)
                .map_err(|reason| err(format!("Constant `{}`", node.name), reason)),
        })
    }

    /// A constant input of a node, by position.
    fn input(&self, at: &str, node: &NodeProto, k: usize, what: &str) -> Result<Const> {
        let name = node.input.get(k).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| err(at, format!("has no {what} input")))?;
        self.constant(name).unwrap_or_else(|| {
            Err(err(
                at,
                format!(
                    "its {what} `{name}` is not a constant; crank imports weights that are \
                     initializers or Constant nodes"
                ),
            ))
        })
    }

    /// Every compute node reachable from `value`.
    fn downstream(&self, value: &str) -> Vec<usize> {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self.readers(value).to_vec();
        while let Some(k) = stack.pop() {
            if seen.insert(k) {
                for out in &self.nodes[k].1.output {
                    stack.extend_from_slice(self.readers(out));
                }
            }
        }
        let mut all: Vec<usize> = seen.into_iter().collect();
        all.sort_unstable();
        all
    }
}

/// The value of a `Constant` node.
fn constant_node(node: &NodeProto) -> std::result::Result<Const, String> {
    let a = node
        .attribute
        .first()
        .ok_or_else(|| "a Constant without a value".to_string())?;
    let scalar = |values| Const {
        dims: vec![],
        values,
    };
    Ok(match a.name.as_str() {
        "value" => {
            constant(a.t.as_ref().ok_or("`value` holds no tensor")?).map_err(|e| e.to_string())?
        }
        "value_float" => scalar(Values::Float(vec![f64::from(a.f)])),
        "value_int" => scalar(Values::Int(vec![a.i])),
        "value_floats" => Const {
            dims: vec![a.floats.len()],
            values: Values::Float(a.floats.iter().map(|&v| f64::from(v)).collect()),
        },
        "value_ints" => Const {
            dims: vec![a.ints.len()],
            values: Values::Int(a.ints.clone()),
        },
        other => return Err(format!("a Constant with `{other}` is not supported")),
    })
}

pub(super) fn decode<F: Scalar>(bytes: &[u8]) -> Result<Import<F>> {
    if bytes.len() as u64 > super::MAX_BYTES {
        return Err(err(
            "file",
            format!(
                "{} bytes is more than a protobuf message may hold ({} bytes)",
                bytes.len(),
                super::MAX_BYTES
            ),
        ));
    }
    let model = ModelProto::decode(bytes).map_err(|e| err("protobuf", e))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| err("model", "imports no version of the default operator set"))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| err("model", "has no graph"))?;
    if graph.node.len() > MAX_NODES {
        return Err(err(
            "graph",
            format!(
                "{} nodes is more than the limit of {MAX_NODES}",
                graph.node.len()
            ),
        ));
    }
    let g = Graph::new(graph)?;
    let metadata: HashMap<&str, &str> = model
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();

    // The one input that is not a constant (IR versions before 4 list initializers as inputs).
    let mut inputs = graph
        .input
        .iter()
        .filter(|i| !g.consts.contains_key(i.name.as_str()));
    let input = inputs.next().ok_or_else(|| err("graph", "has no input"))?;
    if let Some(second) = inputs.next() {
        return Err(err(
            "graph",
            format!(
                "has inputs `{}` and `{}`; crank models take one",
                input.name, second.name
            ),
        ));
    }
    let mut chain = Chain {
        layers: Vec::new(),
        tensors: Vec::new(),
        width: input_width(input.r#type.as_ref())
            .map_err(|r| err(format!("input `{}`", input.name), r))?,
        open_dense: false,
        mean: None,
        std: None,
        names: HashSet::new(),
        notes: Vec::new(),
        log_softmax: None,
    };
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut classes: Option<Vec<String>> = None;
    let mut value = input.name.as_str();
    let mut steps = 0;
    loop {
        let readers = g.readers(value);
        let ends = outputs.contains(value);
        if readers.is_empty() {
            if ends {
                break;
            }
            return Err(err(
                format!("value `{value}`"),
                "is neither read by a node nor an output of the graph",
            ));
        }
        let (index, node) = g.nodes[readers[0]];
        // The default domain's operators, and scikit-learn's standardisation (`Scaler`, of
        // the ONNX-ML domain, as skl2onnx writes a `StandardScaler`).
        let known_domain = node.domain.is_empty()
            || node.domain == "ai.onnx"
            || (node.domain == "ai.onnx.ml" && node.op_type == "Scaler");
        let chained = readers.len() == 1
            && !ends
            && known_domain
            && !POST_PROCESSING[..3].contains(&node.op_type.as_str());
        if !chained {
            if let Some(found) = label_post_processing(&g, value, &mut chain)? {
                classes = found;
                break;
            }
            let at = format!("value `{value}`");
            return Err(if readers.len() > 1 {
                let list: Vec<String> = readers
                    .iter()
                    .map(|&k| node_at(g.nodes[k].0, g.nodes[k].1))
                    .collect();
                err(
                    at,
                    format!(
                        "is read by {}; crank imports a chain of layers, not a branching graph",
                        list.join(" and ")
                    ),
                )
            } else if ends {
                err(
                    at,
                    format!(
                        "is an output of the graph and read by {}",
                        node_at(index, node)
                    ),
                )
            } else {
                err(
                    node_at(index, node),
                    format!("operator of domain `{}` has no crank layer", node.domain),
                )
            });
        }
        if let Some(last) = &chain.log_softmax {
            return Err(err(
                node_at(index, node),
                format!(
                    "follows {last}; crank reads a LogSoftmax only as a classifier's last node"
                ),
            ));
        }
        steps += 1;
        if steps > g.nodes.len() {
            return Err(err("graph", "has a cycle"));
        }
        step(&g, index, node, value, opset, &mut chain)?;
        for extra in node.output.iter().skip(1).filter(|o| !o.is_empty()) {
            if !g.readers(extra).is_empty() || outputs.contains(extra.as_str()) {
                return Err(err(
                    node_at(index, node),
                    format!("its output `{extra}` is used; crank computes only the first"),
                ));
            }
        }
        value = node
            .output
            .first()
            .ok_or_else(|| err(node_at(index, node), "has no output"))?;
    }
    let (built, notes) = finish(chain, classes, &metadata)?;
    Ok(Import {
        model: built,
        notes,
        opset,
        ir_version: model.ir_version,
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
    })
}

/// The feature count of the graph input's type, `[batch, features...]`, when it is known.
fn input_width(t: Option<&super::proto::TypeProto>) -> std::result::Result<Option<usize>, String> {
    let Some(type_proto::Value::TensorType(t)) = t.and_then(|t| t.value.as_ref()) else {
        return Err("is not a tensor".into());
    };
    match DataType::try_from(t.elem_type) {
        Ok(DataType::Float | DataType::Double) => {}
        _ => {
            return Err(format!(
                "has element type {}; crank reads FLOAT and DOUBLE",
                t.elem_type
            ));
        }
    }
    let Some(shape) = &t.shape else {
        return Ok(None);
    };
    use super::proto::tensor_shape_proto::dimension::Value;
    let mut width: u64 = 1;
    for d in shape.dim.iter().skip(1) {
        match d.value {
            Some(Value::DimValue(v)) if v > 0 => width = width.saturating_mul(v as u64),
            _ => return Ok(None),
        }
    }
    if shape.dim.is_empty() {
        return Err("is a scalar; crank models take a batch of feature rows".into());
    }
    Ok(usize::try_from(width).ok())
}

/// One node of the chain, reading `value`.
fn step(
    g: &Graph<'_>,
    index: usize,
    node: &NodeProto,
    value: &str,
    opset: i64,
    chain: &mut Chain,
) -> Result<()> {
    let at = node_at(index, node);
    let at = at.as_str();
    let reads = |k: usize| node.input.get(k).map(String::as_str) == Some(value);
    if !(reads(0) || (node.op_type == "Add" && reads(1))) {
        return Err(err(
            at,
            format!("reads `{value}` in an unexpected position"),
        ));
    }
    match node.op_type.as_str() {
        "Identity" | "Dropout" | "Flatten" | "Cast" | "Reshape" => {
            let note = pass_through(g, at, node, chain.width)?;
            chain.notes.push(format!("{at}: {note}"));
            Ok(())
        }
        "Sub" | "Div" if chain.layers.is_empty() => standardization(g, at, node, chain),
        "Scaler" if chain.layers.is_empty() => scaler(at, node, chain),
        "Gemm" | "MatMul" => product(g, at, node, chain),
        "Add" => bias(g, at, node, usize::from(reads(0)), chain),
        "BatchNormalization" => batch_norm(g, at, node, chain),
        "LayerNormalization" => layer_norm(g, at, node, chain),
        "LogSoftmax" => {
            // Before opset 13, the axis defaulted to 1 (of rows flattened to 2-D).
            let axis = int_attribute(node, "axis", if opset >= 13 { -1 } else { 1 });
            if !matches!(axis, -1 | 1) {
                return Err(err(at, format!("a LogSoftmax over axis {axis}")));
            }
            chain.log_softmax = Some(at.to_string());
            Ok(())
        }
        _ => {
            let activation = activation(at, node, opset)?;
            match chain.open_dense() {
                // After a product: the Dense layer's own activation.
                Some((d, _)) if d.activation_function == Activation::Identity => {
                    d.activation_function = activation;
                    chain.open_dense = false;
                }
                // After anything else: a layer of its own.
                _ => {
                    let spec = ActivationSpec {
                        name: chain.name(node),
                        input_size: chain.width,
                        activation_function: activation,
                    };
                    chain.push(LayerSpec::Activation(spec), Vec::new());
                }
            }
            Ok(())
        }
    }
}

/// A node that is the identity on a chain of rows at inference, and why; an error for the
/// forms that are not (a Dropout in training mode, a Flatten or Reshape that changes rows, a
/// Cast to another kind of value).
fn pass_through(
    g: &Graph<'_>,
    at: &str,
    node: &NodeProto,
    width: Option<usize>,
) -> Result<&'static str> {
    match node.op_type.as_str() {
        "Dropout" if node.input.get(2).is_some_and(|n| !n.is_empty()) => {
            let mode = g.input(at, node, 2, "training_mode")?;
            if !matches!(&mode.values, Values::Int(v) if v.iter().all(|&x| x == 0)) {
                return Err(err(at, "a Dropout in training mode"));
            }
            Ok("the identity at inference")
        }
        "Identity" | "Dropout" => Ok("the identity at inference"),
        "Flatten" if int_attribute(node, "axis", 1) != 1 => {
            Err(err(at, "flattens at an axis other than 1"))
        }
        "Flatten" => Ok("rows are already flat"),
        "Cast" => match DataType::try_from(int_attribute(node, "to", 0) as i32) {
            Ok(DataType::Float | DataType::Double) => Ok("crank computes in the model's own type"),
            _ => Err(err(at, "casts to a type other than FLOAT or DOUBLE")),
        },
        _ => {
            let shape = g.input(at, node, 1, "shape")?;
            let keeps_rows = match (&shape.values, width) {
                (Values::Int(v), Some(w)) => {
                    v.len() == 2 && matches!(v[0], -1 | 0) && (v[1] == w as i64 || v[1] == -1)
                }
                _ => false,
            };
            if !keeps_rows {
                return Err(err(at, "a Reshape that changes the rows' shape"));
            }
            Ok("keeps the rows' shape")
        }
    }
}

/// `Sub` by the means, then `Div` by the deviations, before any layer: the standardisation.
fn standardization(g: &Graph<'_>, at: &str, node: &NodeProto, chain: &mut Chain) -> Result<()> {
    let c = g.input(at, node, 1, "operand")?;
    let v = chain.vector(at, &c, "a constant")?;
    if node.op_type == "Sub" && chain.mean.is_none() && chain.std.is_none() {
        chain.mean = Some(v);
    } else if node.op_type == "Div" && chain.std.is_none() {
        if v.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(err(
                at,
                "divides by a value that is not finite and positive",
            ));
        }
        chain.std = Some(v);
    } else {
        return Err(err(
            at,
            "crank standardises inputs once: subtract, then divide",
        ));
    }
    Ok(())
}

/// ONNX-ML's `Scaler`, `y = (x − offset) · scale`, before any layer: the standardisation, with
/// the deviations `1 / scale`.
fn scaler(at: &str, node: &NodeProto, chain: &mut Chain) -> Result<()> {
    if chain.mean.is_some() || chain.std.is_some() {
        return Err(err(at, "crank standardises inputs once"));
    }
    let floats = |name: &str| {
        let values: Vec<f64> = attribute(node, name)
            .map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
            .unwrap_or_default();
        Const {
            dims: vec![values.len()],
            values: Values::Float(values),
        }
    };
    let offset = chain.vector(at, &floats("offset"), "an offset")?;
    let scale = chain.vector(at, &floats("scale"), "a scale")?;
    if scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(err(at, "scales by a value that is not finite and positive"));
    }
    chain.mean = Some(offset);
    chain.std = Some(scale.iter().map(|s| 1.0 / s).collect());
    Ok(())
}

/// `Gemm` (`B` as `[in, out]`, or `[out, in]` with `transB`, and an optional bias `C`) or
/// `MatMul`: a Dense layer.
fn product(g: &Graph<'_>, at: &str, node: &NodeProto, chain: &mut Chain) -> Result<()> {
    let b = g.input(at, node, 1, "weight")?;
    let w = b.floats(at)?;
    let &[rows, cols] = b.dims.as_slice() else {
        return Err(err(
            at,
            format!("a weight of shape {:?}; crank's are 2-D", b.dims),
        ));
    };
    let gemm = node.op_type == "Gemm";
    let has_bias = gemm && node.input.get(2).is_some_and(|n| !n.is_empty());
    if gemm
        && (int_attribute(node, "transA", 0) != 0
            || float_attribute(node, "alpha", 1.0) != 1.0
            || (has_bias && float_attribute(node, "beta", 1.0) != 1.0))
    {
        return Err(err(
            at,
            "a Gemm with transA, alpha or beta other than 0, 1, 1",
        ));
    }
    let transposed = gemm && int_attribute(node, "transB", 0) != 0;
    let (input, out) = if transposed {
        (cols, rows)
    } else {
        (rows, cols)
    };
    chain.check_width(at, input)?;
    let weights = if transposed {
        transpose(w, rows, cols)
    } else {
        w.to_vec()
    };
    chain.dense(node, weights, out);
    if has_bias {
        bias(g, at, node, 2, chain)?;
    }
    Ok(())
}

/// A constant added to a product's output (input `k` of the node): the Dense layer's bias.
fn bias(g: &Graph<'_>, at: &str, node: &NodeProto, k: usize, chain: &mut Chain) -> Result<()> {
    let c = g.input(at, node, k, "bias")?;
    let bias = chain.vector(at, &c, "a bias")?;
    match chain.open_dense() {
        Some((d, biases)) if d.activation_function == Activation::Identity => {
            biases.iter_mut().zip(&bias).for_each(|(b, c)| *b += c);
            Ok(())
        }
        _ => Err(err(
            at,
            "an Add that does not follow a product has no crank layer",
        )),
    }
}

fn batch_norm(g: &Graph<'_>, at: &str, node: &NodeProto, chain: &mut Chain) -> Result<()> {
    if int_attribute(node, "training_mode", 0) != 0 {
        return Err(err(at, "a BatchNormalization in training mode"));
    }
    let mut tensors = Vec::with_capacity(4);
    for (k, what) in ["scale", "bias", "mean", "variance"]
        .into_iter()
        .enumerate()
    {
        let c = g.input(at, node, k + 1, what)?;
        tensors.push(chain.vector(at, &c, what)?);
    }
    let spec = BatchNormSpec {
        name: chain.name(node),
        input_size: chain.width,
        // ONNX's momentum weighs the running statistics, crank's (as PyTorch's) the batch.
        momentum: 1.0 - float_attribute(node, "momentum", 0.9),
        eps: float_attribute(node, "epsilon", 1e-5),
    };
    chain.push(LayerSpec::BatchNorm(spec), tensors);
    Ok(())
}

fn layer_norm(g: &Graph<'_>, at: &str, node: &NodeProto, chain: &mut Chain) -> Result<()> {
    if !matches!(int_attribute(node, "axis", -1), -1 | 1) {
        return Err(err(at, "normalises over more than the last axis"));
    }
    let scale = chain.vector(at, &g.input(at, node, 1, "scale")?, "scale")?;
    let bias = match node.input.get(2).filter(|n| !n.is_empty()) {
        Some(_) => chain.vector(at, &g.input(at, node, 2, "bias")?, "bias")?,
        None => vec![0.0; scale.len()],
    };
    let spec = LayerNormSpec {
        name: chain.name(node),
        input_size: chain.width,
        eps: float_attribute(node, "epsilon", 1e-5),
    };
    chain.push(LayerSpec::LayerNorm(spec), vec![scale, bias]);
    Ok(())
}

/// The crank activation of an activation node; an error for any other operator.
fn activation(at: &str, node: &NodeProto, opset: i64) -> Result<Activation> {
    Ok(match node.op_type.as_str() {
        "Relu" => Activation::Relu,
        "LeakyRelu" => Activation::LeakyRelu {
            alpha: float_attribute(node, "alpha", 0.01),
        },
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        "Softplus" => Activation::Softplus,
        "Gelu" => {
            let approximate = attribute(node, "approximate").map(|a| a.s.as_slice());
            if !matches!(approximate, None | Some(b"none")) {
                return Err(err(
                    at,
                    "the tanh approximation of GELU; crank's is the exact one",
                ));
            }
            Activation::Gelu
        }
        "Softmax" => {
            // Before opset 13, Softmax's axis defaulted to 1 (of rows flattened to 2-D).
            let axis = int_attribute(node, "axis", if opset >= 13 { -1 } else { 1 });
            if !matches!(axis, -1 | 1) {
                return Err(err(
                    at,
                    format!("a Softmax over axis {axis}; crank's is over each row"),
                ));
            }
            Activation::Softmax
        }
        other => return Err(err(at, format!("operator `{other}` has no crank layer"))),
    })
}

/// When everything that reads `value` is a classifier's label post-processing (skl2onnx's
/// `ArgMax`, `ArrayFeatureExtractor`, `ZipMap`, ...), the class names it holds; the import stops
/// there. `Ok(None)` when it is something else.
#[allow(clippy::type_complexity)]
fn label_post_processing(
    g: &Graph<'_>,
    value: &str,
    chain: &mut Chain,
) -> Result<Option<Option<Vec<String>>>> {
    let nodes = g.downstream(value);
    let ops = |k: &usize| g.nodes[*k].1.op_type.as_str();
    if nodes.is_empty()
        || !nodes.iter().all(|k| POST_PROCESSING.contains(&ops(k)))
        || !nodes
            .iter()
            .any(|k| matches!(ops(k), "ArgMax" | "ZipMap" | "ArrayFeatureExtractor"))
    {
        return Ok(None);
    }
    let mut classes = None;
    for &k in &nodes {
        let node = g.nodes[k].1;
        let names = match node.op_type.as_str() {
            "ArrayFeatureExtractor" => match node.input.first().and_then(|n| g.constant(n)) {
                Some(c) => Some(match c?.values {
                    Values::Int(v) => v.iter().map(i64::to_string).collect(),
                    Values::Text(v) => v,
                    Values::Float(v) => v.iter().map(f64::to_string).collect(),
                }),
                None => None,
            },
            "ZipMap" => attribute(node, "classlabels_strings")
                .map(|a| {
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .or_else(|| {
                    attribute(node, "classlabels_int64s")
                        .map(|a| a.ints.iter().map(i64::to_string).collect())
                }),
            _ => None,
        };
        classes = classes.or(names);
    }
    let list: Vec<String> = nodes
        .iter()
        .map(|&k| node_at(g.nodes[k].0, g.nodes[k].1))
        .collect();
    chain.notes.push(format!(
        "{}: label post-processing, which crank's classifiers do from the class names",
        list.join(", ")
    ));
    Ok(Some(classes))
}

/// The model from the layers read, the standardisation, the class names and the metadata,
/// with the import's notes.
fn finish<F: Scalar>(
    mut chain: Chain,
    found: Option<Vec<String>>,
    metadata: &HashMap<&str, &str>,
) -> Result<(Sequential<F>, Vec<String>)> {
    if chain.layers.is_empty() {
        return Err(err(
            "graph",
            "holds no layer (Gemm, MatMul, BatchNormalization or LayerNormalization)",
        ));
    }
    let meta = |key: &str| metadata.get(key).copied();
    let json_err =
        |key: &'static str| move |e: serde_json::Error| err(format!("metadata `{key}`"), e);
    let mut classes = match meta(META_CLASSES) {
        Some(text) => {
            Some(serde_json::from_str::<Vec<String>>(text).map_err(json_err(META_CLASSES))?)
        }
        None => None,
    };
    let mut loss = match meta(META_LOSS) {
        Some(text) => Some(serde_json::from_str::<Loss>(text).map_err(json_err(META_LOSS))?),
        None => None,
    };
    if let Some(text) = meta(META_STANDARDIZATION) {
        #[derive(serde::Deserialize)]
        struct Exact {
            mean: Vec<f64>,
            std: Vec<f64>,
        }
        let exact: Exact = serde_json::from_str(text).map_err(json_err(META_STANDARDIZATION))?;
        // The exact values, where they are what the graph holds (to single precision).
        let agree = |graph: &Option<Vec<f64>>, exact: &[f64]| {
            graph.as_ref().is_some_and(|g| {
                g.len() == exact.len() && g.iter().zip(exact).all(|(a, b)| *a as f32 == *b as f32)
            })
        };
        if agree(&chain.mean, &exact.mean) && agree(&chain.std, &exact.std) {
            (chain.mean, chain.std) = (Some(exact.mean), Some(exact.std));
        }
    }
    let outputs = chain.width.unwrap_or(0);
    if let Some(at) = chain.log_softmax.take() {
        // PyTorch's classifiers trained with NLLLoss end in LogSoftmax: crank's classifier
        // outputs the logits instead, whose softmax is the same probabilities.
        let names = found.unwrap_or_else(|| (0..outputs).map(|i| i.to_string()).collect());
        if outputs < 2 || names.len() != outputs {
            return Err(err(
                at,
                format!(
                    "a LogSoftmax over {outputs} outputs with {} class names",
                    names.len()
                ),
            ));
        }
        chain.notes.push(format!(
            "{at}: a classifier's log-probabilities; the model outputs its logits (the same up to \
             a constant per row), and its probabilities are their softmax"
        ));
        classes = classes.or(Some(names));
        loss = loss.or(Some(Loss::SoftmaxCrossEntropy));
    } else if let Some(names) = found {
        // A classifier's graph ends in its probabilities; crank's ends in the logits, and turns
        // them into probabilities with the class names.
        let last = match chain.layers.last_mut() {
            Some(LayerSpec::Dense(d)) => Some(&mut d.activation_function),
            Some(LayerSpec::Activation(a)) => Some(&mut a.activation_function),
            _ => None,
        };
        let kind = match last {
            Some(a @ Activation::Softmax) if names.len() == outputs && outputs > 1 => {
                *a = Activation::Identity;
                Some(Loss::SoftmaxCrossEntropy)
            }
            Some(a @ Activation::Sigmoid) if names.len() == 2 && outputs == 1 => {
                *a = Activation::Identity;
                Some(Loss::BinaryCrossEntropy)
            }
            _ => None,
        };
        match kind {
            Some(kind) => {
                classes = classes.or(Some(names));
                loss = loss.or(Some(kind));
            }
            None => chain.notes.push(format!(
                "the class names {names:?} were left out: the network does not end in a \
                 Softmax over {} outputs or a Sigmoid over one",
                names.len()
            )),
        }
    }
    let input = chain.layers[0].input_size().unwrap_or(0);
    let preprocessing =
        (chain.mean.is_some() || chain.std.is_some() || classes.is_some()).then(|| Preprocessing {
            mean: chain.mean.take().unwrap_or_else(|| vec![0.0; input]),
            std: chain.std.take().unwrap_or_else(|| vec![1.0; input]),
            classes,
            label: meta(META_LABEL).map(str::to_string),
            loss,
        });
    let spec = ModelSpec {
        seed: None,
        layers: chain.layers,
        preprocessing,
    };
    let tensors = chain
        .tensors
        .into_iter()
        .map(|layer| {
            layer
                .into_iter()
                .map(|t| t.into_iter().map(F::of).collect())
                .collect()
        })
        .collect();
    let model = Sequential::from_tensors(&spec, tensors).map_err(|e| match e {
        Error::Spec { at, reason } => err(at, reason),
        other => other,
    })?;
    Ok((model, chain.notes))
}
