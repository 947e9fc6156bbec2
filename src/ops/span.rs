//! 1-D span geometry: pairwise IoU / generalized IoU and greedy temporal NMS, as graph ops and as
//! plain CPU functions for post-processing. (The top-1 moment's rows: `ops::moment_rows`.)
//! WGSL: `shaders/span_iou.wgsl` and `shaders/span_nms.wgsl` (both completed by
//! `shaders/span_common.wgsl`).
//!
//! All arithmetic is f32 in one fixed operation order shared by the WGSL and the CPU functions
//! here. The official Python post-processing (`temporal_nms`) computes its IoU in float64 on the
//! f32 values; a decision can differ from it only when an IoU lies within ~1e-7 of the threshold.

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const THREADS: usize = 256;
/// Largest row the NMS kernel takes (its sorted copy lives in 10 KiB of workgroup memory).
pub const NMS_MAX_SPANS: usize = 512;

const IOU: Shader = Shader {
    name: "span_iou",
    source: concat!(include_str!("../../shaders/span_iou.wgsl"), include_str!("../../shaders/span_common.wgsl")),
    entry: "pairwise_iou",
};
const NMS: Shader = Shader {
    name: "span_nms",
    source: concat!(include_str!("../../shaders/span_nms.wgsl"), include_str!("../../shaders/span_common.wgsl")),
    entry: "nms",
};

/// How a span's two numbers are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanFormat {
    /// `(start, end)`.
    StartEnd,
    /// `(center, width)` (the DETR heads' `pred_spans`), read as `(c − w/2, c + w/2)`.
    CenterWidth,
}

impl SpanFormat {
    fn code(self) -> usize {
        (self == SpanFormat::CenterWidth) as usize
    }
}

/// `span_cxw_to_xx` for [`SpanFormat::CenterWidth`], identity for [`SpanFormat::StartEnd`].
pub fn to_start_end(s: [f32; 2], format: SpanFormat) -> [f32; 2] {
    match format {
        SpanFormat::StartEnd => s,
        SpanFormat::CenterWidth => [s[0] - 0.5 * s[1], s[0] + 0.5 * s[1]],
    }
}

/// (iou, union) of two (start, end) spans; iou = 0 where the union is ≤ 0.
fn iou_union(a: [f32; 2], b: [f32; 2]) -> (f32, f32) {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    let union = (a[1] - a[0]) + (b[1] - b[0]) - inter;
    (if union > 0.0 { inter / union } else { 0.0 }, union)
}

/// Moment-DETR `temporal_iou` of two (start, end) spans: `inter / (len_a + len_b − inter)`;
/// defined as 0 where that union is ≤ 0 (PyTorch gives NaN for two empty spans).
pub fn span_iou(a: [f32; 2], b: [f32; 2]) -> f32 {
    iou_union(a, b).0
}

/// Moment-DETR `generalized_temporal_iou`: `iou − (hull − union) / hull` with
/// `hull = max(max end − min start, 0)`; equals the IoU where the hull is 0.
pub fn span_giou(a: [f32; 2], b: [f32; 2]) -> f32 {
    let (iou, union) = iou_union(a, b);
    let hull = (a[1].max(b[1]) - a[0].min(b[0])).max(0.0);
    if hull > 0.0 {
        iou - (hull - union) / hull
    } else {
        iou
    }
}

/// The IoU of moment-DETR's `temporal_nms` (`compute_temporal_iou`): `inter / (max end − min
/// start)` — the hull, not the union — and 0 where the hull is exactly 0.
pub fn hull_iou(a: [f32; 2], b: [f32; 2]) -> f32 {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    let hull = a[1].max(b[1]) - a[0].min(b[0]);
    if hull == 0.0 {
        0.0
    } else {
        inter / hull
    }
}

/// Which overlap greedy NMS thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmsIou {
    /// Moment-DETR family `temporal_nms` (TR-DETR, LD-DETR, VideoLights): [`hull_iou`].
    Hull,
    /// torchvision `nms` on `[start, 0, end, 1]` boxes (SG-DETR's ATSS path): [`span_iou`].
    Exact,
}

impl NmsIou {
    fn code(self) -> usize {
        match self {
            NmsIou::Hull => 0,
            NmsIou::Exact => 1,
        }
    }
    fn overlap(self, a: [f32; 2], b: [f32; 2]) -> f32 {
        match self {
            NmsIou::Hull => hull_iou(a, b),
            NmsIou::Exact => span_iou(a, b),
        }
    }
}

/// Greedy temporal NMS over (start, end) spans, as moment-DETR's `temporal_nms(predictions,
/// nms_thd, max_after_nms)`: candidates by descending score (ties → lower index, a stable sort;
/// NaN scores rank as −∞), each kept unless a kept span overlaps it with IoU > `threshold`,
/// at most `max_keep` kept; a single span is always kept. Returns the kept indices in the order
/// kept (descending score). The official code applies it to the first `max_before_nms` rows.
pub fn temporal_nms(spans: &[[f32; 2]], scores: &[f32], threshold: f32, max_keep: usize, iou: NmsIou) -> Vec<usize> {
    assert_eq!(spans.len(), scores.len(), "temporal_nms: one score per span");
    let mut order: Vec<usize> = (0..spans.len()).collect();
    let key = |i: usize| if scores[i].is_nan() { f32::NEG_INFINITY } else { scores[i] };
    order.sort_by(|&a, &b| key(b).partial_cmp(&key(a)).unwrap().then(a.cmp(&b)));
    if spans.len() == 1 {
        return order;
    }
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        if kept.len() >= max_keep {
            break;
        }
        if kept.iter().all(|&k| iou.overlap(spans[k], spans[i]) <= threshold) {
            kept.push(i);
        }
    }
    kept
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// `y[b, i, j] = iou(a[b, i], b[b, j])` or its generalized form.
#[derive(Clone, Debug)]
pub struct PairwiseIou {
    batch: usize,
    n: usize,
    m: usize,
    format: SpanFormat,
    generalized: bool,
}

impl Kernel for PairwiseIou {
    fn label(&self) -> &'static str {
        if self.generalized {
            "span_giou"
        } else {
            "span_iou"
        }
    }
    fn shader(&self) -> Shader {
        IOU
    }
    fn params(&self) -> Params {
        Params::new().u(self.batch * self.n * self.m).u(self.n).u(self.m).u(self.format.code()).flag(self.generalized)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d((self.batch * self.n * self.m).div_ceil(THREADS))
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (a, b) = (inputs[0], inputs[1]);
        let y = &mut outputs[0];
        let span = |s: &[f32], i: usize| to_start_end([s[2 * i], s[2 * i + 1]], self.format);
        for bt in 0..self.batch {
            for i in 0..self.n {
                let sa = span(a, bt * self.n + i);
                let row = &mut y[(bt * self.n + i) * self.m..][..self.m];
                for (j, out) in row.iter_mut().enumerate() {
                    let sb = span(b, bt * self.m + j);
                    *out = if self.generalized { span_giou(sa, sb) } else { span_iou(sa, sb) };
                }
            }
        }
    }
}

/// Pairwise span IoU (`generalized = false`) or GIoU between `a (B, N, 2)` and `b (B, M, 2)` →
/// `(B, N, M)` (rank-2 `(N, 2)` and `(M, 2)` give `(N, M)`), moment-DETR's `temporal_iou` /
/// `generalized_temporal_iou` with the zero-union / zero-hull cases defined as in [`span_iou`]
/// and [`span_giou`].
pub fn pairwise_iou(
    g: &mut Graph,
    a: TensorId,
    b: TensorId,
    format: SpanFormat,
    generalized: bool,
) -> Result<TensorId> {
    let (sa, sb) = (g.shape(a).to_vec(), g.shape(b).to_vec());
    let batched = |s: &[usize]| match *s {
        [n, 2] => Some((1, n)),
        [bt, n, 2] => Some((bt, n)),
        _ => None,
    };
    let (Some((ba, n)), Some((bb, m))) = (batched(&sa), batched(&sb)) else {
        return Err(Error::Graph(format!("pairwise_iou needs spans (B, N, 2) or (N, 2), got {sa:?} and {sb:?}")));
    };
    if ba != bb || sa.len() != sb.len() {
        return Err(Error::Graph(format!("pairwise_iou of {sa:?} and {sb:?}: batch sizes differ")));
    }
    let out = if sa.len() == 2 { vec![n, m] } else { vec![ba, n, m] };
    Ok(g.push1(PairwiseIou { batch: ba, n, m, format, generalized }, &[Some(a), Some(b)], out))
}

/// Greedy temporal NMS per batch row (see [`temporal_nms`]).
#[derive(Clone, Debug)]
pub struct Nms {
    rows: usize,
    n: usize,
    max_keep: usize,
    iou: NmsIou,
    format: SpanFormat,
    threshold: f32,
}

impl Kernel for Nms {
    fn label(&self) -> &'static str {
        "span_nms"
    }
    fn shader(&self) -> Shader {
        NMS
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.rows)
            .u(self.n)
            .u(self.max_keep)
            .u(self.iou.code())
            .u(self.format.code())
            .f(self.threshold)
            .f(f32::NEG_INFINITY)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.rows)
    }
    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let (spans, scores) = (inputs[0], inputs[1]);
        let keep = &mut outputs[0];
        let mut row_spans: Vec<[f32; 2]> = Vec::with_capacity(self.n);
        keep.fill(0.0);
        for r in 0..self.rows {
            row_spans.clear();
            row_spans
                .extend((0..self.n).map(|i| {
                    to_start_end([spans[2 * (r * self.n + i)], spans[2 * (r * self.n + i) + 1]], self.format)
                }));
            let row_scores = &scores[r * self.n..(r + 1) * self.n];
            for i in temporal_nms(&row_spans, row_scores, self.threshold, self.max_keep, self.iou) {
                keep[r * self.n + i] = 1.0;
            }
        }
    }
}

/// Greedy temporal NMS as a graph op: `spans (B, N, 2)` and `scores (B, N)` → keep mask
/// `(B, N)` (1 kept, 0 suppressed), per row exactly [`temporal_nms`] (descending score, ties →
/// lower index, suppress IoU > `threshold`, at most `max_keep` kept when given, a lone span
/// always kept). N ≤ [`NMS_MAX_SPANS`]. Rank-2 `(N, 2)` / `(N,)` inputs give `(N,)`.
pub fn nms(
    g: &mut Graph,
    spans: TensorId,
    scores: TensorId,
    format: SpanFormat,
    threshold: f32,
    max_keep: Option<usize>,
    iou: NmsIou,
) -> Result<TensorId> {
    let (ss, sc) = (g.shape(spans).to_vec(), g.shape(scores).to_vec());
    let (rows, n) = match (&ss[..], &sc[..]) {
        ([n, 2], [m]) if n == m => (1, *n),
        ([b, n, 2], [bs, m]) if b == bs && n == m => (*b, *n),
        _ => return Err(Error::Graph(format!("nms needs spans (B, N, 2) and scores (B, N), got {ss:?} and {sc:?}"))),
    };
    if n == 0 || n > NMS_MAX_SPANS {
        return Err(Error::Graph(format!("nms over {n} spans per row; 1 to {NMS_MAX_SPANS} are supported")));
    }
    if !threshold.is_finite() {
        return Err(Error::Graph(format!("nms threshold {threshold}")));
    }
    let max_keep = max_keep.unwrap_or(n).min(n);
    Ok(g.push1(Nms { rows, n, max_keep, iou, format, threshold }, &[Some(spans), Some(scores)], sc))
}
