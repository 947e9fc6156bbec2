//! The CPU side of the executor: the same plan, with each slot a preallocated `Vec<f32>`, and
//! each node run by its kernel's CPU twin.

use super::plan::Plan;
use super::{Graph, Outputs, RunCounters, Source};

pub(crate) struct CpuPlan {
    slot_of: Vec<Option<usize>>,
    slots: Vec<Vec<f32>>,
    /// Run the reference twins (the parity oracle) instead of the fast CPU kernels.
    pub reference: bool,
    profile: bool,
}

impl CpuPlan {
    pub fn new(_graph: &Graph, plan: &Plan, reference: bool) -> Self {
        let slots = plan.slot_bytes.iter().map(|b| vec![0.0f32; b / 4]).collect();
        CpuPlan { slot_of: plan.slot_of.clone(), slots, reference, profile: super::profiling_requested() }
    }

    pub fn run(&mut self, graph: &Graph, inputs: &[&[f32]]) -> (Outputs, RunCounters) {
        let input_ids = graph.input_ids();
        let mut times = Vec::new();
        for node in &graph.nodes {
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
                    node.kernel.cpu_fast(&ins, &mut out_slices);
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
