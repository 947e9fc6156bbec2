//! SG-DETR's saliency-guided cross-attention (SGCA, spec `sg-detr.md` §3.1 `Attn(...; row_scale)`
//! and §3.6): multi-head attention without input projections whose post-softmax weights of query
//! row `i` are multiplied by `σ(S_loc)[b, i]`, without renormalising. Since `O_i = Σ_j p_ij v_j`,
//! that is `O_i ·= σ(gate_logit_i)` applied once at the end of the fused attention kernel.
//! WGSL: `shaders/attention.wgsl` (the fused attention kernel with its gate flag set; see
//! [`crate::ops::attention`]).

use super::attention::{fused, Cols};
use crate::error::Result;
use crate::graph::{Graph, TensorId};

/// `σ(gate_logits[b, i]) · attention(q, k, v)[b, i, :]`: q `(B, Lq, H·dk)`, k `(B, Lk, H·dk)`,
/// v `(B, Lk, H·dv)` (column windows), `key_mask (B, Lk)` (1 = valid), `gate_logits` `(B, Lq)` or
/// `(B, Lq, 1)` holding the raw saliency LOGITS (the sigmoid is applied in the kernel) → `(B, Lq,
/// H·dv)`. Every head of a row shares the gate. A query with no valid key gives a zero row.
/// SGCA: `q = X_v + pos_v`, `k = v = X_t`, `key_mask = txt_mask`, `gate_logits = S_loc`, H = 8,
/// `scale = 32^-0.5`; the SGCA's own `attn_mask` is redundant with the key mask and is not needed.
#[allow(clippy::too_many_arguments)]
pub fn gated_attention(
    g: &mut Graph,
    q: Cols,
    k: Cols,
    v: Cols,
    key_mask: Option<TensorId>,
    gate_logits: TensorId,
    heads: usize,
    scale: f32,
) -> Result<TensorId> {
    fused(g, "gated_attention", q, k, v, key_mask, None, Some(gate_logits), heads, scale)
}
