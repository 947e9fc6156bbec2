//! SG-DETR's two-stage proposal anchors (spec `sg-detr.md` §3.10 steps 1–5): for every token of
//! the concatenated FPN levels, the unsigmoided anchor `(invsig(center), invsig(width))` and
//! whether the token is a valid proposal. WGSL: `shaders/proposals.wgsl`.
//!
//! Level `l` has `n_l` tokens, a padding mask `(B, n_l)` and a default width `w_l`. With
//! `n_valid` the number of valid tokens of the level (mask > 0.5, counted per sample), token `i`
//! gets `center = (f32(i) + 0.5) / n_valid` (float32, as the official code) and is valid when
//! its mask is set and `0.0125 < center < 0.9875` and `0.0125 < w_l < 0.9875` (float32
//! comparisons). A valid token's anchor is `invsig(center), invsig(w_l)` with DAB-DETR's
//! `invsig(x) = log(max(clamp(x,0,1),1e-3) / max(1−clamp(x,0,1),1e-3))`; an invalid token's is
//! [`INVALID_ANCHOR_LOGIT`] in both coordinates, a finite stand-in for the official `+∞` (WGSL
//! has no portable infinities) with the same sigmoid, 1.0, for any offset the model adds.
//!
//! Exactness: the centre test decides which tokens can be selected, so it must not depend on
//! the GPU's division (WGSL allows 2.5 ulp). Because `0.0125 = 1/80` and `0.9875 = 79/80` and
//! `i`, `n_valid` are integers, `fl((i + 0.5) / n) > fl(1/80)` ⟺ `40(2i+1) > n` and
//! `fl((i + 0.5) / n) < fl(79/80)` ⟺ `40(2i+1) < 79n` for every level shorter than 2^20 tokens
//! (the rational values differ from the thresholds by at least 1/(80n), far more than one
//! float32 ulp, or equal them exactly); the kernel tests the integers, the CPU twin the floats
//! literally, and a unit test checks the equivalence. A level without valid tokens (a fully
//! masked row) has no valid proposals.

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};
use crate::ops::layout::concat;

const SHADER: Shader =
    Shader { name: "proposals", source: include_str!("../../shaders/proposals.wgsl"), entry: "proposal_anchors" };

const THREADS: usize = 256;

/// Most FPN levels one dispatch takes (SG-DETR has 4).
pub const MAX_LEVELS: usize = 4;

/// Anchor logit written for invalid tokens (the official code writes `+∞`): its sigmoid is 1.
pub const INVALID_ANCHOR_LOGIT: f32 = 1e4;

/// The official validity range of a proposal's centre and width (exclusive bounds).
pub const RANGE_LO: f32 = 0.0125;
pub const RANGE_HI: f32 = 0.9875;

/// The eps of DAB-DETR's `inverse_sigmoid`.
const INVSIG_EPS: f32 = 1e-3;

/// Longest level the kernel's integer test is proven for.
pub const MAX_LEVEL_LEN: usize = 1 << 20;

/// `invsig(x)` evaluated in f64 and rounded once.
fn invsig_f64(x: f32) -> f32 {
    let c = (x as f64).clamp(0.0, 1.0);
    let eps = INVSIG_EPS as f64;
    (c.max(eps) / (1.0 - c).max(eps)).ln() as f32
}

/// `invsig(x)` in float32 (the CPU twin's centre anchors; the same formula as the WGSL).
fn invsig_f32(x: f32) -> f32 {
    let c = x.clamp(0.0, 1.0);
    (c.max(INVSIG_EPS) / (1.0 - c).max(INVSIG_EPS)).ln()
}

/// One level as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Level {
    offset: usize,
    len: usize,
    width_logit: f32,
    width_ok: bool,
}

/// `mask (B, T)` (the concatenated level masks) → `anchors (B, T, 2)`, `valid (B, T)`.
#[derive(Clone, Debug)]
pub struct ProposalAnchors {
    batch: usize,
    total: usize,
    levels: Vec<Level>,
}

impl Kernel for ProposalAnchors {
    fn label(&self) -> &'static str {
        "proposal_anchors"
    }
    fn shader(&self) -> Shader {
        SHADER
    }
    fn params(&self) -> Params {
        let mut p = Params::new().u(self.batch).u(self.total).u(self.levels.len()).f(INVALID_ANCHOR_LOGIT);
        for k in 0..MAX_LEVELS {
            let l = self.levels.get(k).copied().unwrap_or(Level {
                offset: self.total,
                len: 0,
                width_logit: 0.0,
                width_ok: false,
            });
            p = p.u(l.offset).u(l.len).f(l.width_logit).flag(l.width_ok);
        }
        p
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d((self.batch * self.total).div_ceil(THREADS))
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let mask = inputs[0];
        let [anchors, valid] = outputs else { unreachable!("proposal_anchors has two outputs") };
        for b in 0..self.batch {
            let row = &mask[b * self.total..(b + 1) * self.total];
            for l in &self.levels {
                let level = &row[l.offset..l.offset + l.len];
                // Σ mask in float32, as the official code (exact for 0/1 masks).
                let n_valid = level.iter().map(|&m| (m > 0.5) as u32 as f32).sum::<f32>();
                for (i, &m) in level.iter().enumerate() {
                    let center = (i as f32 + 0.5) / n_valid;
                    let ok = m > 0.5 && l.width_ok && RANGE_LO < center && center < RANGE_HI;
                    let t = b * self.total + l.offset + i;
                    valid[t] = ok as u32 as f32;
                    let (c, w) = if ok {
                        (invsig_f32(center), l.width_logit)
                    } else {
                        (INVALID_ANCHOR_LOGIT, INVALID_ANCHOR_LOGIT)
                    };
                    anchors[2 * t] = c;
                    anchors[2 * t + 1] = w;
                }
            }
        }
    }
}

/// SG-DETR's proposal anchors over FPN levels: `masks[l]` is level `l`'s padding mask
/// `(B, n_l)` (1 = valid), `widths[l]` its default width. Returns `(anchors (B, T, 2), valid
/// (B, T))` over the `T = Σ n_l` tokens in level order: `anchors` holds the unsigmoided
/// `(center, width)` of valid tokens and [`INVALID_ANCHOR_LOGIT`] for invalid ones, `valid` is
/// 1/0. See the module documentation for the exact rules. 1 to [`MAX_LEVELS`] levels.
pub fn proposal_anchors(g: &mut Graph, masks: &[TensorId], widths: &[f32]) -> Result<(TensorId, TensorId)> {
    if masks.is_empty() || masks.len() > MAX_LEVELS || masks.len() != widths.len() {
        return Err(Error::Graph(format!(
            "proposal_anchors: {} level masks and {} widths; 1 to {MAX_LEVELS} levels, one width each",
            masks.len(),
            widths.len()
        )));
    }
    let mut batch = None;
    let mut levels = Vec::with_capacity(masks.len());
    let mut offset = 0;
    for (k, (&m, &w)) in masks.iter().zip(widths).enumerate() {
        let [b, n] = *g.shape(m) else {
            return Err(Error::Graph(format!(
                "proposal_anchors: level {k} mask of shape {:?}; (B, n) expected",
                g.shape(m)
            )));
        };
        if n == 0 || n > MAX_LEVEL_LEN || b == 0 || batch.is_some_and(|b0| b0 != b) {
            return Err(Error::Graph(format!(
                "proposal_anchors: level {k} mask of shape {:?} (empty, longer than {MAX_LEVEL_LEN}, or another batch size)",
                g.shape(m)
            )));
        }
        if !w.is_finite() {
            return Err(Error::Graph(format!("proposal_anchors: level {k} width {w} is not finite")));
        }
        batch = Some(b);
        levels.push(Level { offset, len: n, width_logit: invsig_f64(w), width_ok: RANGE_LO < w && w < RANGE_HI });
        offset += n;
    }
    let batch = batch.unwrap();
    let mask = if masks.len() == 1 { masks[0] } else { concat(g, masks, 1)? };
    let op = ProposalAnchors { batch, total: offset, levels };
    let ids = g.push(op, &[Some(mask)], &[vec![batch, offset, 2], vec![batch, offset]]);
    Ok((ids[0], ids[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's integer centre test equals the official float32 comparisons, including the
    /// exact ties at n = 40k (centre = 0.0125 or 0.9875 exactly), for tokens past the level's
    /// valid count as well (non-prefix masks).
    #[test]
    fn integer_centre_test_equals_the_float32_comparisons() {
        for n in 1u64..=4096 {
            for i in 0..2 * n + 2 {
                let center = (i as f32 + 0.5) / n as f32;
                let float = RANGE_LO < center && center < RANGE_HI;
                let a = 40 * (2 * i + 1);
                let int = a > n && a < 79 * n;
                assert_eq!(float, int, "n = {n}, i = {i}, center = {center}");
            }
        }
        // Spot checks of long levels up to the documented bound.
        for n in [40u64 * 1000, 40 * 26214, (1 << 20) - 1, 1 << 20] {
            for i in (0..3).chain(n / 80 - 2..n / 80 + 2).chain(79 * n / 80 - 2..79 * n / 80 + 2) {
                let center = (i as f32 + 0.5) / n as f32;
                let float = RANGE_LO < center && center < RANGE_HI;
                let a = 40 * (2 * i + 1);
                assert_eq!(float, a > n && a < 79 * n, "n = {n}, i = {i}");
            }
        }
    }

    #[test]
    fn constants_match_the_shader() {
        assert!(SHADER.source.contains(&format!("@workgroup_size({THREADS}, 1, 1)")));
        assert!(SHADER.source.contains(&format!("let gid = (wid.x + wid.y * 65535u) * {THREADS}u + lid.x;")));
    }
}
