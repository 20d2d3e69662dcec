//! Checks and rewrites of a decoded model before the graph walk:
//!
//! * the model must declare an opset of the default domain, and value names are
//!   unique (ONNX graphs are in single static assignment form: no two
//!   initializers, node outputs or a node output and an initializer share a name);
//! * **shared constants are untied**: a constant tensor (initializer or `Constant`
//!   node, also through `Identity` aliases) read by more than one node input gets a
//!   copy per extra use. Exporters deduplicate equal tensors into one initializer
//!   (a zero bias, a shape, a weight equal to a batch-norm scale); after untying,
//!   pruning or compacting one user never changes another, and what [`save`] writes
//!   computes what the model in memory computes.
//!
//! [`save`]: super::OnnxModel::save

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::proto::{GraphProto, ModelProto, TensorProto, type_proto};
use super::tensor::{attr, corrupt};
use energy_prune::arch::MAX_ELEMENTS;
use energy_prune::error::{Error, Result};

/// Opset version of the default (`ai.onnx`) domain.
pub(super) type Opset = i64;

/// A constant read by several node inputs and copied for every extra use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untied {
    /// The constant's name (an initializer, or a `Constant` node's output).
    pub name: String,
    /// Node inputs that read it.
    pub uses: usize,
}

/// Where a constant of the graph is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Root {
    Initializer(usize),
    Node(usize),
}

/// Check the model's opset and names and untie shared constants (see the module
/// docs): the opset and the constants untied.
pub(super) fn prepare(proto: &mut ModelProto, src: &Path) -> Result<(Opset, Vec<Untied>)> {
    let opset = declared_opset(proto).ok_or_else(|| {
        corrupt(
            src,
            "the model declares no opset for the default ONNX domain (opset_import is empty); \
                 re-export it with an explicit opset_version",
        )
    })?;
    if opset < 1 {
        return Err(corrupt(
            src,
            format!("invalid default-domain opset {opset}"),
        ));
    }
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| corrupt(src, "the model has no graph"))?;
    unique_names(graph, src)?;
    let untied = untie(graph);
    Ok((opset, untied))
}

/// The opset the model declares for the default domain, if any.
pub(super) fn declared_opset(proto: &ModelProto) -> Option<Opset> {
    proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
}

/// The default-domain opset of a model that [`prepare`] accepted.
pub(super) fn default_opset(proto: &ModelProto) -> Opset {
    declared_opset(proto).unwrap_or(1)
}

fn unique_names(graph: &GraphProto, src: &Path) -> Result<()> {
    let mut seen: HashSet<&str> = HashSet::new();
    let dup = |name: &str| {
        corrupt(
            src,
            format!(
                "the value name `{name}` is defined twice (ONNX requires unique initializer and \
                 node output names); fix the exporter's output or rename one of them"
            ),
        )
    };
    for t in &graph.initializer {
        if !seen.insert(t.name.as_str()) {
            return Err(dup(&t.name));
        }
    }
    for node in &graph.node {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if !seen.insert(out.as_str()) {
                return Err(dup(out));
            }
        }
    }
    Ok(())
}

/// A name not yet used in the graph, derived from `base`.
fn fresh_name(taken: &mut HashSet<String>, base: &str) -> String {
    let mut k = 1usize;
    loop {
        let name = format!("{base}__use{k}");
        if taken.insert(name.clone()) {
            return name;
        }
        k += 1;
    }
}

/// Give every extra use of a shared constant its own initializer.
fn untie(graph: &mut GraphProto) -> Vec<Untied> {
    let mut root_of: HashMap<String, Root> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), Root::Initializer(i)))
        .collect();
    // (node, input) pairs reading each constant, in node order.
    let mut uses: HashMap<Root, Vec<(usize, usize)>> = HashMap::new();
    for (n, node) in graph.node.iter().enumerate() {
        match node.op_type.as_str() {
            "Constant" if node.domain.is_empty() || node.domain == "ai.onnx" => {
                if let Some(out) = node.output.first() {
                    root_of.insert(out.clone(), Root::Node(n));
                }
                continue;
            }
            "Identity" if node.input.len() == 1 => {
                if let (Some(&root), Some(out)) = (root_of.get(&node.input[0]), node.output.first())
                {
                    // An alias, not a use: the nodes reading `out` read the root.
                    root_of.insert(out.clone(), root);
                    continue;
                }
            }
            _ => {}
        }
        for (k, input) in node.input.iter().enumerate() {
            if let Some(&root) = root_of.get(input) {
                uses.entry(root).or_default().push((n, k));
            }
        }
    }
    let mut shared: Vec<(Root, Vec<(usize, usize)>)> =
        uses.into_iter().filter(|(_, u)| u.len() > 1).collect();
    if shared.is_empty() {
        return Vec::new();
    }
    let mut untied = Vec::with_capacity(shared.len());
    shared.sort_unstable_by_key(|(_, u)| u[0]);
    let mut taken: HashSet<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    taken.extend(graph.node.iter().flat_map(|n| n.output.iter().cloned()));
    taken.extend(graph.input.iter().map(|v| v.name.clone()));
    for (root, users) in shared {
        let (tensor, listed_input): (TensorProto, Option<usize>) = match root {
            Root::Initializer(i) => {
                let t = &graph.initializer[i];
                let listed = graph.input.iter().position(|v| v.name == t.name);
                (t.clone(), listed)
            }
            Root::Node(n) => match attr(&graph.node[n], "value").and_then(|a| a.t.as_ref()) {
                Some(t) => (t.clone(), None),
                // A Constant without a tensor value: the import reports it.
                None => continue,
            },
        };
        let base = match root {
            Root::Initializer(_) => tensor.name.clone(),
            Root::Node(n) => graph.node[n].output.first().cloned().unwrap_or_default(),
        };
        untied.push(Untied {
            name: base.clone(),
            uses: users.len(),
        });
        for &(n, k) in &users[1..] {
            let name = fresh_name(&mut taken, &base);
            graph.initializer.push(TensorProto {
                name: name.clone(),
                ..tensor.clone()
            });
            if let Some(i) = listed_input {
                let mut v = graph.input[i].clone();
                v.name = name.clone();
                graph.input.push(v);
            }
            graph.node[n].input[k] = name;
        }
    }
    untied
}

/// Bring the declared shapes of graph inputs that name initializers (written by
/// exporters with `keep_initializers_as_inputs`) in line with the initializers'
/// dims, after compaction changed them; onnxruntime refuses a mismatch.
pub(super) fn sync_initializer_inputs(graph: &mut GraphProto) {
    let dims: HashMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    for v in &mut graph.input {
        let Some(d) = dims.get(v.name.as_str()) else {
            continue;
        };
        if let Some(type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
            && let Some(shape) = t.shape.as_mut()
        {
            shape.dim = d
                .iter()
                .map(|&x| super::proto::tensor_shape_proto::Dimension {
                    value: Some(super::proto::tensor_shape_proto::dimension::Value::DimValue(x)),
                    ..Default::default()
                })
                .collect();
        }
    }
}

/// The element count of `dims`, or an error naming `what` when it overflows.
pub(super) fn checked_len(dims: &[usize], what: impl Fn() -> String) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            Error::arch(format!(
                "{}: a tensor of size {dims:?} exceeds {MAX_ELEMENTS} elements",
                what()
            ))
        })
}

/// How a constant of shape `dims` broadcasts, by ONNX's (numpy's) rules, against
/// a tensor whose axes after the batch end in `n` entries followed by
/// `trailing_ones` axes of size 1 (for example `[N, C, H, W]` with per-channel
/// values: `n = C`, `trailing_ones = 2`), of rank `rank` with the batch axis:
/// `Some(false)` for a scalar (every dim 1), `Some(true)` for one value per entry,
/// `None` for anything that would change the tensor's shape or mix entries.
pub(super) fn broadcast_vector(
    dims: &[usize],
    n: usize,
    trailing_ones: usize,
    rank: usize,
) -> Option<bool> {
    if dims.len() > rank {
        return None;
    }
    let first = dims.iter().position(|&d| d != 1);
    let Some(first) = first else {
        return Some(false);
    };
    let rest = &dims[first..];
    (rest.len() == trailing_ones + 1 && rest[0] == n && rest[1..].iter().all(|&d| d == 1))
        .then_some(true)
}

#[cfg(test)]
mod tests {
    use super::broadcast_vector;

    #[test]
    fn broadcasting_follows_onnx() {
        // Per channel on [N, C, H, W].
        assert_eq!(broadcast_vector(&[4, 1, 1], 4, 2, 4), Some(true));
        assert_eq!(broadcast_vector(&[1, 4, 1, 1], 4, 2, 4), Some(true));
        assert_eq!(broadcast_vector(&[4, 1, 1, 1], 4, 2, 4), None);
        assert_eq!(broadcast_vector(&[4], 4, 2, 4), None);
        assert_eq!(broadcast_vector(&[1, 1, 4, 1, 1], 4, 2, 4), None);
        assert_eq!(broadcast_vector(&[], 4, 2, 4), Some(false));
        assert_eq!(broadcast_vector(&[1, 1, 1, 1], 4, 2, 4), Some(false));
        // Per feature on [N, F].
        assert_eq!(broadcast_vector(&[5], 5, 0, 2), Some(true));
        assert_eq!(broadcast_vector(&[1, 5], 5, 0, 2), Some(true));
        assert_eq!(broadcast_vector(&[5, 1], 5, 0, 2), None);
        assert_eq!(broadcast_vector(&[1, 1, 5], 5, 0, 2), None);
    }
}
