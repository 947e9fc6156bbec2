//! The four MR/HD models behind one API: [`Model::load`] reads a weights file and picks the
//! architecture from its config's `model` field; [`Model::predict`] and [`Model::predict_batch`]
//! run forwards on the chosen device and return the official post-processed moments plus the
//! raw outputs.
//!
//! Every architecture is a graph builder over the kernel library with the same graph contract:
//! inputs `video (B, L, Dv)`, `video_mask (B, L)`, `query (B, N, Dt)`, `query_mask (B, N)`;
//! outputs `pred_logits (B, Q, 2)`, `pred_spans (B, Q, 2)` (normalised center, width) and
//! `saliency (B, L)` (SG-DETR: `pred_logits (B, Q, 1)` sigmoid logits, plus
//! `pred_quality_scores (B, Q, 1)` and `topk_index (B, Q)`). Masks make every sample of a padded
//! batch give its B = 1 result.

mod blocks;
mod config;
mod ld_detr;
pub mod long;
pub mod postprocess;
mod sg_detr;
mod tr_detr;
mod videolights;

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Executable, ForwardStats, Graph, Outputs};
use crate::io::Array;
use crate::weights::Weights;
pub use postprocess::{PostProcess, Qid, Window};

/// The architectures moment-gpu runs, by their config `model` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    TrDetr,
    VideoLights,
    SgDetr,
    LdDetr,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::TrDetr => "tr_detr",
            ModelKind::VideoLights => "videolights",
            ModelKind::SgDetr => "sg_detr",
            ModelKind::LdDetr => "ld_detr",
        }
    }
}

/// Input widths, limits and the feature recipe of a loaded model.
#[derive(Clone, Debug)]
pub struct ModelIo {
    /// Width of one model-ready clip row (all sources, TEF included).
    pub video_width: usize,
    /// Width of one model-ready token row.
    pub query_width: usize,
    /// Summed width of the raw video feature sources (before TEF); 0 when the model's input
    /// cannot be assembled from video sources alone (e.g. an audio variant).
    pub video_feature_width: usize,
    /// Summed width of the raw text feature sources.
    pub query_feature_width: usize,
    /// Clips beyond this are cut, as the official data loader does (`max_v_l`).
    pub max_clips: usize,
    /// Tokens beyond this are cut (`max_q_l`).
    pub max_tokens: usize,
    /// Seconds per clip.
    pub clip_length: f32,
    /// Append the 2 temporal endpoint features (TEF) to every clip row.
    pub tef: bool,
    pub normalize_video: bool,
    pub normalize_query: bool,
}

/// One video, model-ready: `clips` rows of `width` values.
#[derive(Clone, Debug)]
pub struct VideoInput {
    pub clips: usize,
    pub width: usize,
    pub data: Vec<f32>,
    /// Annotated duration in seconds; windows are scaled by it (default: clips × clip length).
    pub duration: Option<f32>,
}

/// One text query, model-ready: `tokens` rows of `width` values.
#[derive(Clone, Debug)]
pub struct QueryInput {
    pub tokens: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

/// The official raw outputs of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct RawOutputs {
    /// (Q, 2): index 0 = foreground (SG-DETR: (Q, 1) sigmoid logits).
    pub logits: Vec<f32>,
    /// (Q, 2): normalised (center, width).
    pub spans: Vec<f32>,
    /// (L,) over the valid clips.
    pub saliency: Vec<f32>,
    /// (Q,) IoU (quality) logits of the predicted spans, where the model has an IoU head
    /// (SG-DETR's `pred_quality_scores`).
    pub quality: Option<Vec<f32>>,
    /// (Q,) the proposal tokens a two-stage query selector picked, best first, numbered as in a
    /// B = 1 run of the sample (SG-DETR's `topk_index`).
    pub proposals: Option<Vec<usize>>,
}

/// What a query finds in a video.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// Top windows as the official post-processing gives them (seconds, score-sorted).
    pub windows: Vec<Window>,
    /// Per-clip saliency (raw scores; higher = more relevant), one per valid clip.
    pub saliency: Vec<f32>,
    pub raw: RawOutputs,
}

/// Widths an architecture declares for its graph.
/// What a model architecture provides. The defaults are the Moment-DETR-family recipe
/// (per-source L2 normalisation, TEF, DETR post-processing); a model overrides what differs.
pub(crate) trait Architecture: Send + Sync {
    fn kind(&self) -> ModelKind;
    fn io(&self) -> &ModelIo;
    /// Builds the forward graph for `batch` samples of `clips` × `tokens` (padded sizes).
    fn build(&self, g: &mut Graph, batch: usize, clips: usize, tokens: usize) -> Result<()>;

    /// One-line notices about the loaded weights (e.g. training-only tensors that were ignored).
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Model-ready video from raw feature sources in the official order.
    fn video_from_sources(&self, sources: &[Array], names: &[String]) -> Result<VideoInput> {
        detr_video_from_sources(self.io(), sources, names)
    }

    /// Model-ready query from raw token features.
    fn query_from_sources(&self, sources: &[Array], names: &[String]) -> Result<QueryInput> {
        detr_query_from_sources(self.io(), sources, names)
    }

    /// Model-specific checks and adjustments of model-ready video `index` of a batch before the
    /// forward (e.g. SG-DETR's loader padding); the prediction then sees the returned video.
    fn prepare_video<'a>(&self, _index: usize, video: &'a VideoInput) -> Result<Cow<'a, VideoInput>> {
        Ok(Cow::Borrowed(video))
    }

    /// The prediction of sample `b` of a forward's outputs (padded to `clips`), for `video`.
    fn prediction(&self, outputs: &Outputs, b: usize, clips: usize, video: &VideoInput) -> Prediction {
        detr_prediction(outputs, b, clips, video, self.io(), &PostProcess::default())
    }
}

/// The official DETR post-processing of sample `b`: `pred_logits (B, Q, 2)`, `pred_spans`,
/// `saliency (B, L)` → windows in seconds and the valid clips' saliency.
pub(crate) fn detr_prediction(
    outputs: &Outputs,
    b: usize,
    clips: usize,
    video: &VideoInput,
    io: &ModelIo,
    pp: &PostProcess,
) -> Prediction {
    let (logits, spans, saliency) = (outputs.get("pred_logits"), outputs.get("pred_spans"), outputs.get("saliency"));
    let batch = saliency.len() / clips;
    let q2 = logits.len() / batch;
    let raw = RawOutputs {
        logits: logits[b * q2..(b + 1) * q2].to_vec(),
        spans: spans[b * q2..(b + 1) * q2].to_vec(),
        saliency: saliency[b * clips..b * clips + video.clips].to_vec(),
        quality: None,
        proposals: None,
    };
    let duration = video.duration.unwrap_or(video.clips as f32 * io.clip_length);
    let windows = postprocess::windows(&raw.logits, &raw.spans, duration, pp);
    Prediction { windows, saliency: raw.saliency.clone(), raw }
}

/// Plans kept per (batch, clips, tokens) shape; the oldest is dropped past this many.
const MAX_PLANS: usize = 16;

/// A loaded model on one device. `predict` takes `&self`: a model can be shared across threads
/// (forwards on one model are serialised).
pub struct Model {
    arch: Box<dyn Architecture>,
    device: Device,
    consts: ConstCache,
    plans: Mutex<Vec<((usize, usize, usize), Executable)>>,
    last_stats: Mutex<ForwardStats>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("kind", &self.arch.kind()).field("device", &self.device.name()).finish()
    }
}

impl Model {
    /// Loads a weights file; its config's `model` field picks the architecture.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Model> {
        let weights = Weights::load(path)?;
        Model::from_weights(&weights, device)
    }

    pub fn from_weights(weights: &Weights, device: &Device) -> Result<Model> {
        let name = match weights.config().get("model") {
            // A full Hydra config of SG-DETR nests its model group (with the `mrdetr` arguments)
            // under `model` (sg-detr.md §8).
            Some(serde_json::Value::Object(group)) if group.contains_key("mrdetr") => "sg_detr",
            m => m.and_then(|m| m.as_str()).unwrap_or(""),
        };
        let arch: Box<dyn Architecture> = match name {
            "tr_detr" => Box::new(tr_detr::TrDetr::new(weights)?),
            "videolights" => Box::new(videolights::VideoLights::new(weights)?),
            "sg_detr" => Box::new(sg_detr::SgDetr::new(weights)?),
            "ld_detr" => Box::new(ld_detr::LdDetr::new(weights)?),
            "" => return Err(Error::Config {
                path: weights.path.clone(),
                reason:
                    "no `model` field in the config metadata; expected one of tr_detr, ld_detr, videolights, sg_detr"
                        .into(),
            }),
            other => {
                return Err(Error::Config {
                    path: weights.path.clone(),
                    reason: format!(
                        "unknown `model` \"{other}\"; expected one of tr_detr, ld_detr, videolights, sg_detr"
                    ),
                })
            }
        };
        Ok(Model {
            arch,
            device: device.clone(),
            consts: ConstCache::new(),
            plans: Mutex::new(Vec::new()),
            last_stats: Mutex::default(),
        })
    }

    pub fn kind(&self) -> ModelKind {
        self.arch.kind()
    }

    pub fn io(&self) -> &ModelIo {
        self.arch.io()
    }

    /// One-line notices about the loaded weights, for the caller to show.
    pub fn notices(&self) -> Vec<String> {
        self.arch.notices()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Counters of the last forward (dispatches, submits, readbacks, peak bytes).
    pub fn last_stats(&self) -> ForwardStats {
        self.last_stats.lock().unwrap().clone()
    }

    /// Builds the model-ready video from raw feature sources (in the official order, one
    /// `(clips, width)` array each) as the model's data loader does; `names` label the sources in
    /// errors.
    pub fn video_from_sources(&self, sources: &[Array], names: &[String]) -> Result<VideoInput> {
        self.arch.video_from_sources(sources, names)
    }

    /// Builds the model-ready query from raw token features (`(tokens, width)` per source).
    pub fn query_from_sources(&self, sources: &[Array], names: &[String]) -> Result<QueryInput> {
        self.arch.query_from_sources(sources, names)
    }

    /// One query over one video.
    pub fn predict(&self, video: &VideoInput, query: &QueryInput) -> Result<Prediction> {
        Ok(self.predict_batch(&[(video, query)])?.remove(0))
    }

    /// Many (video, query) pairs in one padded forward; each gets exactly its B = 1 result.
    pub fn predict_batch(&self, items: &[(&VideoInput, &QueryInput)]) -> Result<Vec<Prediction>> {
        let io = self.io().clone();
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut videos: Vec<Cow<VideoInput>> = Vec::with_capacity(items.len());
        for (i, (v, q)) in items.iter().enumerate() {
            check_input("video", i, v.clips, v.width, io.video_width, io.max_clips, &v.data)?;
            check_input("query", i, q.tokens, q.width, io.query_width, io.max_tokens, &q.data)?;
            videos.push(self.arch.prepare_video(i, v)?);
        }
        let batch = items.len();
        let clips = videos.iter().map(|v| v.clips).max().unwrap();
        let tokens = items.iter().map(|(_, q)| q.tokens).max().unwrap();
        let mut video = vec![0.0f32; batch * clips * io.video_width];
        let mut video_mask = vec![0.0f32; batch * clips];
        let mut query = vec![0.0f32; batch * tokens * io.query_width];
        let mut query_mask = vec![0.0f32; batch * tokens];
        for (b, (v, (_, q))) in videos.iter().zip(items).enumerate() {
            video[b * clips * io.video_width..][..v.data.len()].copy_from_slice(&v.data);
            video_mask[b * clips..][..v.clips].fill(1.0);
            query[b * tokens * io.query_width..][..q.data.len()].copy_from_slice(&q.data);
            query_mask[b * tokens..][..q.tokens].fill(1.0);
        }
        let outputs = self.run(
            (batch, clips, tokens),
            &[("video", &video), ("video_mask", &video_mask), ("query", &query), ("query_mask", &query_mask)],
        )?;
        Ok(videos.iter().enumerate().map(|(b, v)| self.arch.prediction(&outputs, b, clips, v)).collect())
    }

    fn run(&self, shape: (usize, usize, usize), inputs: &[(&str, &[f32])]) -> Result<crate::graph::Outputs> {
        let mut plans = self.plans.lock().unwrap();
        let index = match plans.iter().position(|(s, _)| *s == shape) {
            Some(i) => i,
            None => {
                let mut g = Graph::for_device(&self.device);
                self.arch.build(&mut g, shape.0, shape.1, shape.2)?;
                let exe = Executable::new(g, &self.device, &self.consts)?;
                if plans.len() == MAX_PLANS {
                    plans.remove(0);
                }
                plans.push((shape, exe));
                plans.len() - 1
            }
        };
        let exe = &mut plans[index].1;
        let out = exe.run(inputs)?;
        *self.last_stats.lock().unwrap() = exe.stats().clone();
        Ok(out)
    }
}

/// The Moment-DETR data loader's video: each source cut to `max_v_l` and L2-normalised on its
/// own, all cut to the shortest, concatenated, TEF appended.
pub(crate) fn detr_video_from_sources(io: &ModelIo, sources: &[Array], names: &[String]) -> Result<VideoInput> {
    let parts = check_sources(sources, names, io.video_feature_width, "video")?;
    let clips = parts.iter().map(|(rows, _, _)| *rows).min().unwrap_or(0).min(io.max_clips);
    let mut data = Vec::with_capacity(clips * io.video_width);
    for t in 0..clips {
        for (_, width, values) in &parts {
            push_row(&mut data, &values[t * width..(t + 1) * width], io.normalize_video);
        }
        if io.tef {
            let start = t as f32 / clips as f32;
            data.extend([start, start + 1.0 / clips as f32]);
        }
    }
    Ok(VideoInput { clips, width: io.video_width, data, duration: None })
}

/// The Moment-DETR data loader's query: tokens cut to `max_q_l`, each source L2-normalised.
pub(crate) fn detr_query_from_sources(io: &ModelIo, sources: &[Array], names: &[String]) -> Result<QueryInput> {
    let parts = check_sources(sources, names, io.query_feature_width, "query")?;
    let tokens = parts.iter().map(|(rows, _, _)| *rows).min().unwrap_or(0).min(io.max_tokens);
    let mut data = Vec::with_capacity(tokens * io.query_width);
    for t in 0..tokens {
        for (_, width, values) in &parts {
            push_row(&mut data, &values[t * width..(t + 1) * width], io.normalize_query);
        }
    }
    Ok(QueryInput { tokens, width: io.query_width, data })
}

/// Each source as (rows, width, values), checked: rank 2, rows ≥ 1, finite, and widths summing
/// to what the model takes.
fn check_sources<'a>(
    sources: &'a [Array],
    names: &[String],
    total_width: usize,
    what: &str,
) -> Result<Vec<(usize, usize, &'a [f32])>> {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("{what} source {}", i + 1));
    if total_width == 0 {
        return Err(Error::Input {
            name: what.into(),
            reason: "this model variant's input cannot be built from raw sources; pass model-ready features".into(),
        });
    }
    if sources.is_empty() {
        return Err(Error::Input { name: what.into(), reason: "no feature source given".into() });
    }
    let mut parts = Vec::new();
    for (i, a) in sources.iter().enumerate() {
        let Some((rows, width)) = a.rows_and_width() else {
            return Err(Error::Input {
                name: name(i),
                reason: format!("expected a (rows, width) array, got shape {:?}", a.shape),
            });
        };
        if rows == 0 || width == 0 {
            return Err(Error::Input { name: name(i), reason: format!("empty array of shape {:?} (L = 0)", a.shape) });
        }
        if let Some(at) = a.data.iter().position(|x| !x.is_finite()) {
            return Err(Error::Input {
                name: name(i),
                reason: format!("non-finite value {} at row {}, column {}", a.data[at], at / width, at % width),
            });
        }
        parts.push((rows, width, &a.data[..]));
    }
    let widths: Vec<usize> = parts.iter().map(|p| p.1).collect();
    if widths.iter().sum::<usize>() != total_width {
        let listed = names.iter().zip(&widths).map(|(n, w)| format!("{n}: {w}")).collect::<Vec<_>>().join(", ");
        return Err(Error::Input {
            name: what.into(),
            reason: format!(
                "feature widths [{listed}] sum to {}, but the model takes {total_width}",
                widths.iter().sum::<usize>()
            ),
        });
    }
    Ok(parts)
}

/// Appends `row`, L2-normalised as the official data loader does: x / (‖x‖ + 1e-5).
fn push_row(out: &mut Vec<f32>, row: &[f32], normalize: bool) {
    if normalize {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt() + 1e-5;
        out.extend(row.iter().map(|x| x / norm));
    } else {
        out.extend_from_slice(row);
    }
}

fn check_input(
    what: &str,
    index: usize,
    rows: usize,
    width: usize,
    want_width: usize,
    max_rows: usize,
    data: &[f32],
) -> Result<()> {
    let name = format!("{what} #{index}");
    let fail = |reason: String| Err(Error::Input { name: name.clone(), reason });
    if rows == 0 {
        return fail(if what == "query" { "is empty (no tokens)".into() } else { "has no rows (L = 0)".into() });
    }
    if width != want_width {
        return fail(format!("row width {width}, but the model expects {want_width}"));
    }
    if rows > max_rows {
        return fail(format!("{rows} rows, more than the model's limit of {max_rows}"));
    }
    if data.len() != rows * width {
        return fail(format!("{} values for {rows} × {width}", data.len()));
    }
    if let Some(at) = data.iter().position(|x| !x.is_finite()) {
        return fail(format!("non-finite value {} at row {}", data[at], at / width));
    }
    Ok(())
}

// A loaded model is shared across threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
};
