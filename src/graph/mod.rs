//! The small graph executor.
//!
//! A model builds a [`Graph`] once per input shape: named inputs, constant tensors (weights),
//! and kernel nodes in execution order. [`Executable::new`] plans it for a device — buffers by
//! tensor lifetime, pipelines and bind groups created up front — and [`Executable::run`] runs a
//! forward: on a GPU as one command encoder, one compute pass, one submit and one readback of
//! the named outputs; on the CPU by calling each node's CPU twin over the same plan.

mod cpu;
mod gpu;
mod plan;

use std::collections::HashMap;
use std::sync::Arc;

pub use gpu::ConstCache;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::Kernel;

/// A tensor of the graph: every tensor is dense row-major f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TensorId(pub(crate) usize);

#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// Written by the caller before every forward.
    Input(String),
    /// Known at build time (weights, folded weights, tables); uploaded once per device.
    Const(Arc<[f32]>),
    /// A `Linear` weight `(N, K)` held as the CPU GEMM's panels ([`crate::ops::gemm::linear_panels`]):
    /// graphs for the CPU backend only, read by kernels that say so
    /// ([`Kernel::reads_weight_panels`]).
    Panels(crate::ops::gemm::Panels),
    /// Written by a node.
    Node,
    /// The same values as another tensor under another shape (a free reshape).
    Alias(TensorId),
}

#[derive(Clone, Debug)]
pub(crate) struct TensorInfo {
    pub shape: Vec<usize>,
    pub source: Source,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Debug)]
pub(crate) struct Node {
    pub kernel: Box<dyn Kernel>,
    pub inputs: Vec<Option<TensorId>>,
    pub outputs: Vec<TensorId>,
}

/// A forward pass under construction.
#[derive(Debug, Default)]
pub struct Graph {
    pub(crate) tensors: Vec<TensorInfo>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) outputs: Vec<(String, TensorId)>,
    weight_panels: bool,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// A graph for `device`: on the CPU backend, model builders may give `Linear` weights as
    /// the GEMM's panels, so the weights are held once, packed.
    pub fn for_device(device: &Device) -> Self {
        Graph { weight_panels: matches!(device, Device::Cpu), ..Self::default() }
    }

    /// Whether `Linear` weights may be given as panels ([`Graph::for_device`] on the CPU).
    pub fn takes_weight_panels(&self) -> bool {
        self.weight_panels
    }

    /// A `Linear` weight of logical shape `(N, K)` given as its GEMM panels.
    pub(crate) fn panels(&mut self, data: crate::ops::gemm::Panels, n: usize, k: usize) -> Result<TensorId> {
        if !self.weight_panels {
            return Err(Error::Graph("weight panels in a graph not built for the CPU backend".into()));
        }
        if data.as_ref().len() != crate::ops::gemm::packed_len(k, n) {
            return Err(Error::Graph(format!("panels of a ({n}, {k}) weight given {} values", data.as_ref().len())));
        }
        Ok(self.add(vec![n, k], Source::Panels(data)))
    }

    /// Whether `t` is a weight held as panels.
    pub(crate) fn is_panels(&self, t: TensorId) -> bool {
        matches!(self.tensors[self.root(t).0].source, Source::Panels(_))
    }

    /// A tensor the caller fills before each forward.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.add(shape.to_vec(), Source::Input(name.to_string()))
    }

    /// A constant (a weight or a table). Constants sharing the same `Arc` share one GPU buffer
    /// across all graphs planned with the same [`ConstCache`].
    pub fn constant(&mut self, data: Arc<[f32]>, shape: &[usize]) -> Result<TensorId> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::Graph(format!("constant of shape {shape:?} given {} values", data.len())));
        }
        Ok(self.add(shape.to_vec(), Source::Const(data)))
    }

    /// Marks `t` as an output read back after every forward.
    pub fn output(&mut self, name: &str, t: TensorId) {
        self.outputs.push((name.to_string(), t));
    }

    /// `t` under another shape with the same number of values; no copy, no dispatch.
    pub fn reshape(&mut self, t: TensorId, shape: &[usize]) -> Result<TensorId> {
        let numel: usize = shape.iter().product();
        if numel != self.tensors[t.0].numel() {
            return Err(Error::Graph(format!("reshape of {:?} to {shape:?}", self.tensors[t.0].shape)));
        }
        Ok(self.add(shape.to_vec(), Source::Alias(self.root(t))))
    }

    /// The tensor that owns the storage of `t` (itself unless `t` is a reshape).
    pub(crate) fn root(&self, t: TensorId) -> TensorId {
        match self.tensors[t.0].source {
            Source::Alias(r) => r,
            _ => t,
        }
    }

    pub fn shape(&self, t: TensorId) -> &[usize] {
        &self.tensors[t.0].shape
    }

    /// Appends one dispatch of `kernel`, creating its outputs with the given shapes.
    pub fn push(
        &mut self,
        kernel: impl Kernel + 'static,
        inputs: &[Option<TensorId>],
        output_shapes: &[Vec<usize>],
    ) -> Vec<TensorId> {
        let outputs: Vec<TensorId> = output_shapes.iter().map(|s| self.add(s.clone(), Source::Node)).collect();
        self.nodes.push(Node { kernel: Box::new(kernel), inputs: inputs.to_vec(), outputs: outputs.clone() });
        outputs
    }

    /// Same as [`Graph::push`] for the common single-output case.
    pub fn push1(&mut self, kernel: impl Kernel + 'static, inputs: &[Option<TensorId>], shape: Vec<usize>) -> TensorId {
        self.push(kernel, inputs, &[shape])[0]
    }

    /// Number of dispatches one forward of this graph records.
    pub fn dispatches(&self) -> usize {
        self.nodes.len()
    }

    fn add(&mut self, shape: Vec<usize>, source: Source) -> TensorId {
        self.tensors.push(TensorInfo { shape, source });
        TensorId(self.tensors.len() - 1)
    }
}

/// Counters of the last forward, for tests, `moment bench` and users.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub dispatches: usize,
    pub submits: usize,
    pub readbacks: usize,
    pub bytes_read_back: usize,
    /// Bytes of activation and input buffers the plan holds (the reused intermediate slots
    /// plus inputs); weights are counted separately.
    pub peak_activation_bytes: usize,
    pub weight_bytes: usize,
    /// CPU backend: bytes of weight copies its GEMM packed at plan time, held beside
    /// `weight_bytes` (conv taps, the GRU's recurrent weight). `Linear` weights are held as the
    /// GEMM's panels in place of their checkpoint layout and count in `weight_bytes` only.
    pub packed_weight_bytes: usize,
}

/// The named outputs of a forward.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Outputs {
    /// The values of output `name`. Panics if the graph declared no such output: that is a bug
    /// in the model code, not a user error.
    pub fn get(&self, name: &str) -> &[f32] {
        &self.tensors.get(name).unwrap_or_else(|| panic!("graph has no output `{name}`")).1
    }
    pub fn shape(&self, name: &str) -> &[usize] {
        &self.tensors.get(name).unwrap_or_else(|| panic!("graph has no output `{name}`")).0
    }
}

enum Backend {
    Gpu(gpu::GpuPlan),
    Cpu(cpu::CpuPlan),
}

/// A graph planned for one device, ready to run any number of forwards.
pub struct Executable {
    graph: Graph,
    backend: Backend,
    stats: ForwardStats,
}

impl Executable {
    /// Plans `graph` on `device`. On a GPU this compiles every pipeline, creates every buffer and
    /// bind group and uploads constants not already in `consts`.
    pub fn new(graph: Graph, device: &Device, consts: &ConstCache) -> Result<Self> {
        Self::plan(graph, |graph, plan| {
            Ok(match device {
                Device::Gpu(g) => Backend::Gpu(gpu::GpuPlan::new(graph, plan, g.clone(), consts)?),
                Device::Cpu => Backend::Cpu(cpu::CpuPlan::new(graph, plan, consts, false)),
            })
        })
    }

    /// Plans `graph` on the CPU with the kernels' reference twins (the parity oracle of the GPU
    /// kernels and of the fast CPU kernels) instead of the fast CPU path.
    pub fn new_cpu_reference(graph: Graph) -> Result<Self> {
        Self::plan(graph, |graph, plan| Ok(Backend::Cpu(cpu::CpuPlan::new(graph, plan, &ConstCache::new(), true))))
    }

    fn plan(graph: Graph, backend: impl FnOnce(&Graph, &plan::Plan) -> Result<Backend>) -> Result<Self> {
        graph.validate()?;
        let plan = plan::Plan::new(&graph);
        let backend = backend(&graph, &plan)?;
        let stats = ForwardStats {
            dispatches: graph.nodes.len(),
            peak_activation_bytes: plan.activation_bytes(&graph),
            weight_bytes: match &backend {
                Backend::Gpu(p) => p.weight_bytes,
                Backend::Cpu(_) => plan.const_bytes(&graph),
            },
            packed_weight_bytes: match &backend {
                Backend::Cpu(p) => p.packed_bytes(&graph),
                Backend::Gpu(_) => 0,
            },
            ..Default::default()
        };
        Ok(Executable { graph, backend, stats })
    }

    /// Runs one forward. `inputs` gives every graph input by name.
    pub fn run(&mut self, inputs: &[(&str, &[f32])]) -> Result<Outputs> {
        let mut values: Vec<&[f32]> = Vec::new();
        for (index, info) in self.graph.tensors.iter().enumerate() {
            let Source::Input(name) = &info.source else { continue };
            let Some((_, data)) = inputs.iter().find(|(n, _)| n == name) else {
                return Err(Error::Input { name: name.clone(), reason: "not given".into() });
            };
            if data.len() != info.numel() {
                return Err(Error::Input {
                    name: name.clone(),
                    reason: format!("expected {} values (shape {:?}), got {}", info.numel(), info.shape, data.len()),
                });
            }
            let _ = index;
            values.push(data);
        }
        let (outputs, counters) = match &mut self.backend {
            Backend::Gpu(p) => p.run(&self.graph, &values)?,
            Backend::Cpu(p) => p.run(&self.graph, &values),
        };
        self.stats.submits = counters.submits;
        self.stats.readbacks = counters.readbacks;
        self.stats.bytes_read_back = counters.bytes_read_back;
        Ok(outputs)
    }

    /// Counters of the last forward (dispatches, submits, readbacks, bytes, peak memory).
    pub fn stats(&self) -> &ForwardStats {
        &self.stats
    }
}

/// Whether `MOMENT_PROFILE=1` asks for per-op times.
pub(crate) fn profiling_requested() -> bool {
    std::env::var("MOMENT_PROFILE").is_ok_and(|v| v == "1")
}

/// Prints the time per op label (µs per node in `times`), largest first.
pub(crate) fn print_profile(device: &str, graph: &Graph, times: &[f64]) {
    let mut per_op: Vec<(&'static str, usize, f64)> = Vec::new();
    for (node, &us) in graph.nodes.iter().zip(times) {
        match per_op.iter_mut().find(|(l, _, _)| *l == node.kernel.label()) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += us;
            }
            None => per_op.push((node.kernel.label(), 1, us)),
        }
    }
    if std::env::var("MOMENT_PROFILE_NODES").is_ok() {
        for (node, &us) in graph.nodes.iter().zip(times) {
            eprintln!("NODE {us:9.1} {:?}", node.kernel);
        }
    }
    per_op.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = per_op.iter().map(|e| e.2).sum();
    eprintln!("MOMENT_PROFILE on {device}: {} dispatches, {total:.1} µs", graph.nodes.len());
    eprintln!("  {:<24} {:>6} {:>12} {:>7}", "op", "calls", "total µs", "%");
    for (label, calls, us) in per_op {
        eprintln!("  {:<24} {:>6} {:>12.1} {:>6.1}%", label, calls, us, 100.0 * us / total.max(1e-9));
    }
}

/// What a backend counted during one forward.
#[derive(Default)]
pub(crate) struct RunCounters {
    pub submits: usize,
    pub readbacks: usize,
    pub bytes_read_back: usize,
}

impl Graph {
    fn validate(&self) -> Result<()> {
        for (name, t) in &self.outputs {
            if !matches!(self.tensors[self.root(*t).0].source, Source::Node) {
                return Err(Error::Graph(format!("output `{name}` is not computed by the graph")));
            }
        }
        for node in &self.nodes {
            if node.outputs.iter().any(|o| node.inputs.iter().flatten().any(|i| self.root(*i) == *o)) {
                return Err(Error::Graph(format!("node `{}` reads its own output", node.kernel.label())));
            }
            for (i, t) in node.inputs.iter().enumerate() {
                if t.is_some_and(|t| self.is_panels(t)) && !node.kernel.reads_weight_panels(i) {
                    return Err(Error::Graph(format!(
                        "node `{}` reads weight panels as a dense tensor",
                        node.kernel.label()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Index of each input tensor in the order `run` receives their values.
    pub(crate) fn input_ids(&self) -> Vec<TensorId> {
        (0..self.tensors.len()).filter(|&i| matches!(self.tensors[i].source, Source::Input(_))).map(TensorId).collect()
    }
}
