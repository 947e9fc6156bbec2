//! The CPU side of the executor: the same plan, with each slot a preallocated `Vec<f32>`, and
//! each node run by its kernel's CPU twin.

use super::plan::Plan;
use super::{Graph, Outputs, RunCounters, Source};

pub(crate) struct CpuPlan {
    slot_of: Vec<Option<usize>>,
    slots: Vec<Vec<f32>>,
}

impl CpuPlan {
    pub fn new(_graph: &Graph, plan: &Plan) -> Self {
        let slots = plan.slot_bytes.iter().map(|b| vec![0.0f32; b / 4]).collect();
        CpuPlan { slot_of: plan.slot_of.clone(), slots }
    }

    pub fn run(&mut self, graph: &Graph, inputs: &[&[f32]]) -> (Outputs, RunCounters) {
        let input_ids = graph.input_ids();
        for node in &graph.nodes {
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
                node.kernel.cpu(&ins, &mut out_slices);
            }
            for (t, v) in node.outputs.iter().zip(outs) {
                self.slots[self.slot_of[t.0].unwrap()] = v;
            }
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
