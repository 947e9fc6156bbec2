//! Rows of the top-1 predicted moment, for the GRU highlight heads of TR-DETR (MR2HD) and
//! LD-DETR: picks each sample's best query, converts its span to clip indices the official way
//! (float32 floor, Python slicing) and writes gather indices, so the data-dependent step stays on
//! the GPU inside the one submit. WGSL: `shaders/moment_rows.wgsl`.

use super::{Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

#[derive(Clone, Debug)]
pub struct MomentRows {
    batch: usize,
    queries: usize,
    clips: usize,
    clip_len: f32,
}

/// Python's slice bound normalisation for a sequence of length `n`.
fn python_bound(i: i64, n: i64) -> i64 {
    if i < 0 {
        (i + n).max(0)
    } else {
        i.min(n)
    }
}

/// Clip range `[start, stop)` of the top-1 query of one sample (`valid` clips).
pub fn top_moment_range(logits: &[f32], spans: &[f32], valid: usize, clip_len: f32) -> (usize, usize) {
    let mut best = 0;
    for q in 1..logits.len() / 2 {
        if logits[2 * q] - logits[2 * q + 1] > logits[2 * best] - logits[2 * best + 1] {
            best = q;
        }
    }
    let (cx, w) = (spans[2 * best], spans[2 * best + 1]);
    let scale = valid as f32 * clip_len;
    let s = ((cx - 0.5 * w) * scale / clip_len).floor() as i64;
    let e = ((cx + 0.5 * w) * scale / clip_len).floor() as i64;
    let n = valid as i64;
    let (start, stop) = (python_bound(s, n), python_bound(e + 1, n));
    (start as usize, stop.max(start) as usize)
}

impl Kernel for MomentRows {
    fn label(&self) -> &'static str {
        "moment_rows"
    }
    fn shader(&self) -> Shader {
        Shader { name: "moment_rows", source: include_str!("../../shaders/moment_rows.wgsl"), entry: "moment_rows" }
    }
    fn params(&self) -> Params {
        Params::new().u(self.batch).u(self.queries).u(self.clips).f(self.clip_len)
    }
    fn workgroups(&self) -> [u32; 3] {
        [self.batch as u32, 1, 1]
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (logits, spans, mask) = (inputs[0], inputs[1], inputs[2]);
        let (q, l) = (self.queries, self.clips);
        for b in 0..self.batch {
            let valid = mask[b * l..(b + 1) * l].iter().sum::<f32>().round() as usize;
            let (start, stop) = top_moment_range(
                &logits[b * q * 2..(b + 1) * q * 2],
                &spans[b * q * 2..(b + 1) * q * 2],
                valid,
                self.clip_len,
            );
            for t in 0..l {
                outputs[0][b * l + t] = if t < stop - start { (start + t) as f32 } else { -1.0 };
            }
            outputs[1][b] = valid as f32;
        }
    }
}

/// Gather indices `(B, L)` (−1 = zero row) of the top-1 moment's clips and the GRU step count
/// `(B,)` (each sample's valid clip count). `logits (B, Q, 2)`, `spans (B, Q, 2)` as (cx, w),
/// `video_mask (B, L)`.
pub fn moment_rows(
    g: &mut Graph,
    logits: TensorId,
    spans: TensorId,
    video_mask: TensorId,
    clip_len: f32,
) -> Result<(TensorId, TensorId)> {
    let (ls, ss, ms) = (g.shape(logits).to_vec(), g.shape(spans).to_vec(), g.shape(video_mask).to_vec());
    let [b, q, 2] = ls[..] else { return Err(Error::Graph(format!("moment_rows: logits {ls:?}, expected (B, Q, 2)"))) };
    let [mb, l] = ms[..] else { return Err(Error::Graph(format!("moment_rows: mask {ms:?}, expected (B, L)"))) };
    if ss != ls || mb != b || q == 0 {
        return Err(Error::Graph(format!("moment_rows: logits {ls:?}, spans {ss:?}, mask {ms:?}")));
    }
    let out = g.push(
        MomentRows { batch: b, queries: q, clips: l, clip_len },
        &[Some(logits), Some(spans), Some(video_mask)],
        &[vec![b, l], vec![b]],
    );
    Ok((out[0], out[1]))
}
