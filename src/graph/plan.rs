//! Buffer planning: every intermediate tensor gets a slot; a slot is reused once the tensor in it
//! has been read for the last time. Greedy best fit in execution order, as ratchet does: the plan
//! is static per input shape, so memory is deterministic and nothing is allocated per forward.

use super::{Graph, Source, TensorId};

/// Bytes a tensor of `numel` f32 values occupies in a slot: a multiple of 16 so that shaders may
/// view any buffer as `array<vec4<f32>>`.
pub(crate) fn padded_bytes(numel: usize) -> usize {
    (numel * 4).div_ceil(16).max(1) * 16
}

pub(crate) struct Plan {
    /// Slot of each tensor written by a node (`None` for inputs and constants).
    pub slot_of: Vec<Option<usize>>,
    /// Size in bytes of each slot.
    pub slot_bytes: Vec<usize>,
}

impl Plan {
    pub fn new(graph: &Graph) -> Plan {
        let n = graph.tensors.len();
        let is_output: Vec<bool> = {
            let mut v = vec![false; n];
            for (_, t) in &graph.outputs {
                v[graph.root(*t).0] = true;
            }
            v
        };
        // Last node that reads each tensor.
        let mut last_use: Vec<Option<usize>> = vec![None; n];
        for (i, node) in graph.nodes.iter().enumerate() {
            for t in node.inputs.iter().flatten() {
                last_use[graph.root(*t).0] = Some(i);
            }
        }

        let mut slot_of = vec![None; n];
        let mut slot_bytes: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            for &TensorId(t) in &node.outputs {
                let bytes = padded_bytes(graph.tensors[t].numel());
                let best_fit = free
                    .iter()
                    .enumerate()
                    .filter(|(_, &s)| slot_bytes[s] >= bytes)
                    .min_by_key(|(_, &s)| slot_bytes[s])
                    .map(|(pos, _)| pos);
                let largest = || free.iter().enumerate().max_by_key(|(_, &s)| slot_bytes[s]).map(|(pos, _)| pos);
                let slot = match best_fit.or_else(largest) {
                    Some(pos) => {
                        let s = free.swap_remove(pos);
                        slot_bytes[s] = slot_bytes[s].max(bytes);
                        s
                    }
                    None => {
                        slot_bytes.push(bytes);
                        slot_bytes.len() - 1
                    }
                };
                slot_of[t] = Some(slot);
            }
            // Free what dies here: inputs read for the last time, and outputs nobody reads.
            for t in node.inputs.iter().flatten().map(|t| graph.root(*t)).chain(node.outputs.iter().copied()) {
                let dies = last_use[t.0].is_none_or(|last| last == i);
                if dies && !is_output[t.0] {
                    if let Some(s) = slot_of[t.0] {
                        if !free.contains(&s) {
                            free.push(s);
                        }
                    }
                }
            }
        }
        Plan { slot_of, slot_bytes }
    }

    /// Intermediate slots plus input buffers.
    pub fn activation_bytes(&self, graph: &Graph) -> usize {
        let inputs: usize = graph
            .tensors
            .iter()
            .filter(|t| matches!(t.source, Source::Input(_)))
            .map(|t| padded_bytes(t.numel()))
            .sum();
        self.slot_bytes.iter().sum::<usize>() + inputs
    }

    /// Bytes of the distinct constants: a weight several nodes share (a decoder head applied
    /// after every layer) is held once.
    pub fn const_bytes(&self, graph: &Graph) -> usize {
        let mut seen = std::collections::HashSet::new();
        graph
            .tensors
            .iter()
            .filter_map(|t| match &t.source {
                Source::Const(data) => Some(&data[..]),
                Source::Panels(panels) => Some(panels.as_ref()),
                _ => None,
            })
            .filter(|data| seen.insert(data.as_ptr() as usize))
            .map(|data| padded_bytes(data.len()))
            .sum()
    }
}
