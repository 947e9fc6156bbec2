//! The CPU side of the executor: the same plan, with each slot a preallocated `Vec<f32>`, and
//! each node run by its kernel's CPU twin.

use super::plan::Plan;
use super::{ConstCache, Graph, Outputs, RunCounters, Source};
use crate::ops::gemm::PackedB;
use crate::ops::{Const, Prepared};

pub(crate) struct CpuPlan {
    slot_of: Vec<Option<usize>>,
    slots: Vec<Vec<f32>>,
    /// Each node's plan-time preparation (packed weights), for the fast kernels.
    prepared: Vec<Option<Prepared>>,
    /// Run the reference twins (the parity oracle) instead of the fast CPU kernels.
    pub reference: bool,
    profile: bool,
}

impl CpuPlan {
    pub fn new(graph: &Graph, plan: &Plan, consts: &ConstCache, reference: bool) -> Self {
        let slots = plan.slot_bytes.iter().map(|b| vec![0.0f32; b / 4]).collect();
        let prepared = if reference {
            Vec::new()
        } else {
            graph
                .nodes
                .iter()
                .map(|node| {
                    let values: Vec<Option<Const>> = node
                        .inputs
                        .iter()
                        .map(|t| match t.map(|t| &graph.tensors[graph.root(t).0].source) {
                            Some(Source::Const(data)) => Some(Const::Dense(data)),
                            Some(Source::Panels(panels)) => Some(Const::Panels(panels)),
                            _ => None,
                        })
                        .collect();
                    node.kernel.cpu_prepare(&values, consts)
                })
                .collect()
        };
        CpuPlan { slot_of: plan.slot_of.clone(), slots, prepared, reference, profile: super::profiling_requested() }
    }

    /// Bytes of the distinct weights packed at plan time (copies beside the graph's constants;
    /// weights the graph holds as panels already are not counted again).
    pub fn packed_bytes(&self, graph: &Graph) -> usize {
        let mut seen: std::collections::HashSet<usize> = graph
            .tensors
            .iter()
            .filter_map(|t| match &t.source {
                Source::Panels(panels) => Some(panels.as_ptr() as usize),
                _ => None,
            })
            .collect();
        self.prepared
            .iter()
            .flatten()
            .filter_map(|p| p.downcast_ref::<PackedB>())
            .filter(|b| seen.insert(b.data_ptr()))
            .map(|b| b.bytes())
            .sum()
    }

    pub fn run(&mut self, graph: &Graph, inputs: &[&[f32]]) -> (Outputs, RunCounters) {
        let input_ids = graph.input_ids();
        let mut times = Vec::new();
        for (index, node) in graph.nodes.iter().enumerate() {
            let start = self.profile.then(std::time::Instant::now);
            // Outputs live in slots no input of this node uses (the plan frees inputs only
            // after placing outputs), so they can be taken out while the inputs are borrowed.
            let mut outs: Vec<Vec<f32>> =
                node.outputs.iter().map(|t| std::mem::take(&mut self.slots[self.slot_of[t.0].unwrap()])).collect();
            {
                let ins: Vec<&[f32]> = node
                    .inputs
                    .iter()
                    .map(|t| match t {
                        None => &[][..],
                        Some(t) => {
                            let numel = graph.tensors[t.0].numel();
                            let t = &graph.root(*t);
                            let info = &graph.tensors[t.0];
                            match &info.source {
                                Source::Input(_) => inputs[input_ids.iter().position(|i| i == t).unwrap()],
                                Source::Const(data) => &data[..],
                                Source::Panels(panels) => panels.as_ref(),
                                Source::Node => &self.slots[self.slot_of[t.0].unwrap()][..numel],
                                Source::Alias(_) => unreachable!("roots are never aliases"),
                            }
                        }
                    })
                    .collect();
                let mut out_slices: Vec<&mut [f32]> =
                    outs.iter_mut().zip(&node.outputs).map(|(v, t)| &mut v[..graph.tensors[t.0].numel()]).collect();
                if self.reference {
                    node.kernel.cpu(&ins, &mut out_slices);
                } else {
                    node.kernel.cpu_fast(&ins, &mut out_slices, self.prepared[index].as_ref());
                }
            }
            if let Some(start) = start {
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
            for (t, v) in node.outputs.iter().zip(outs) {
                self.slots[self.slot_of[t.0].unwrap()] = v;
            }
        }
        if self.profile {
            super::print_profile(if self.reference { "CPU reference twins" } else { "CPU backend" }, graph, &times);
        }
        let mut outputs = Outputs::default();
        for (name, t) in &graph.outputs {
            let info = &graph.tensors[t.0];
            let values = self.slots[self.slot_of[graph.root(*t).0].unwrap()][..info.numel()].to_vec();
            outputs.tensors.insert(name.clone(), (info.shape.clone(), values));
        }
        (outputs, RunCounters::default())
    }
}
