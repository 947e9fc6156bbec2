//! SG-DETR (Saliency-Guided DETR, `MRDETR` of the official code base), spec
//! `specs/sg-detr.md`: input projections → sentence token (class-attention pooling) → local
//! saliency → saliency-guided cross-attention (SGCA) → video encoder → saliency amplifier and
//! global saliency → temporal feature pyramid → two-stage query selection → DAB-style decoder
//! with an IoU head. The DETR outputs and the global saliency feed the official DETR-path
//! post-processing (`Preparator.prepare_detr_outputs` + `PostProcessorDETR`, §6.1), which is what
//! the released submissions use. The ATSS head (AUX / COMB metrics only) is not built.
//!
//! Deviations from the official code, all on purpose:
//! * padded batches give each sample its B = 1 result: the FPN's convolutions are fed zeros past
//!   each sample's own length (the official code convolves over the batch padding, §7.1);
//! * videos too short for `num_queries` proposals (the official code crashes in `topk`, §7.3)
//!   are rejected with an input error;
//! * invalid proposals get the anchor logit 1e4 instead of `+∞` (same sigmoid, 1.0), and the
//!   selection ranks `σ(cls)·σ(iou)` (the same order as its square root).

use std::borrow::Cow;
use std::collections::HashSet;
use std::f32::consts::TAU;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::blocks::{dense, dense_residual, norm, self_attention, Params};
use super::config::Config;
use super::postprocess::Window;
use super::{
    check_sources, push_row, Architecture, ModelIo, ModelKind, Prediction, QueryInput, RawOutputs, VideoInput,
};
use crate::error::{Error, Result};
use crate::graph::{Graph, Outputs, TensorId};
use crate::io::Array;
use crate::ops::attention::{attention, Cols};
use crate::ops::conv1d::depthwise_separable;
use crate::ops::elementwise::{add, binary_fused, mul, scale_shift, Binary, Unary};
use crate::ops::gated_attention::gated_attention;
use crate::ops::layout::{concat, gather_rows, repeat_interleave, slice};
use crate::ops::matmul::matmul;
use crate::ops::norm::{l2_normalize, L2Mode};
use crate::ops::position::{sine_embed_coords, sine_position_from_mask, SineConfig};
use crate::ops::proposals::proposal_anchors;
use crate::ops::reduce::{pool1d, topk, ReduceOp};
use crate::ops::{sigmoid, Act};
use crate::weights::{Tensor, Weights};

/// Attention heads of every attention block (hard-coded in the official code).
const HEADS: usize = 8;
/// The FPN's largest stride: the data loader pads videos to a multiple of it (§2 step 4).
const PAD_MULTIPLE: usize = 4;
/// Proposal tokens per padded clip: 2L + L + L/2 + L/4 = 15L/4 (§3.10 step 3).
fn proposal_tokens(clips: usize) -> usize {
    15 * clips / 4
}

// ---------------------------------------------------------------------------------------------
// Configuration (§8)
// ---------------------------------------------------------------------------------------------

/// Options of the flat layout that the model reads, with the released QVHighlights defaults
/// applied in [`SgDetr::new`].
const READ_KEYS: &[&str] = &[
    "model_dim",
    "num_queries",
    "pos_temp",
    "cont_pos_tradeoff",
    "use_cross_attn_wo_dummy",
    "weight_attn_with_saliency",
    "use_global_saliency_head",
    "predict_quality_score",
    "use_rpn",
    "use_encoder_features",
    "txt2vis_encoder.num_t2v_layers",
    "det_encoder.num_encoder_layers",
    "detr_detector.num_decoder_layers",
    "query_selector.default_widths",
    "aux_det_head.fpn_strides",
    "local_saliency_head.logit_mode",
    "local_saliency_head.use_projections",
    "local_saliency_head.use_gamma",
    "local_saliency_head.num_aggregation_layers",
    "saliency_amplifier.mode",
    "saliency_amplifier.use_mha",
    "saliency_amplifier.use_norm",
    "runner.model.vid_dim",
    "runner.model.txt_dim",
    "runner.model.num_input_proj_layers",
    "runner.model.use_txt_pos",
    "data.dataset.max_query_length",
    "data.dataset.max_video_length",
    "data.dataset.clip_len",
    "data.dataset.normalize_video",
    "data.dataset.normalize_query",
    "data.dataset.use_tef",
    "postprocessor.postprocessor.clip_length",
    "postprocessor.postprocessor.min_ts_val",
    "postprocessor.postprocessor.max_ts_val",
    "postprocessor.postprocessor.min_w_l",
    "postprocessor.postprocessor.max_w_l",
    "postprocessor.postprocessor.move_window_method",
    "postprocessor.postprocessor.nms_threshold",
    "postprocessor.postprocessor.ranking_attribute",
];

/// Options of the spec's table that do not change inference (initialisation, training, dead
/// options, the ATSS head, evaluation batching): accepted in the flat layout and ignored.
const IGNORED_KEYS: &[&str] = &[
    "num_dummies",
    "prior_prob",
    "dropout",
    "droppath",
    "proj_dropout",
    "detr_detector.aux_anchors_type",
    "aux_det_head.num_convs",
    "aux_det_head.anchor_sizes",
    "aux_det_head.top_k_positive_anchors",
    "runner.model.num_sentence_layers",
    "runner.model.num_moment_layers",
    "runner.model.max_video_length",
    "data.batch_size",
    "postprocessor.postprocessor.nms_attribute",
];

/// Nested copies that the Hydra config interpolates from a top-level option (§8 step 4): the
/// modules are built from the copies, so a copy fills a missing option and must agree with it.
const NESTED_COPIES: &[(&str, &str)] = &[
    ("txt2vis_encoder.d_model", "model_dim"),
    ("txt2vis_encoder.num_dummies", "num_dummies"),
    ("txt2vis_encoder.use_cross_attn_wo_dummy", "use_cross_attn_wo_dummy"),
    ("txt2vis_encoder.weight_attn_with_saliency", "weight_attn_with_saliency"),
    ("query_selector.model_dim", "model_dim"),
    ("query_selector.num_queries", "num_queries"),
    ("det_encoder.model_dim", "model_dim"),
    ("aux_det_head.in_channels", "model_dim"),
    ("detr_detector.model_dim", "model_dim"),
    ("detr_detector.num_queries", "num_queries"),
    ("detr_detector.cont_pos_tradeoff", "cont_pos_tradeoff"),
    ("detr_detector.use_rpn", "use_rpn"),
    ("detr_detector.use_encoder_features", "use_encoder_features"),
    ("detr_detector.predict_quality_score", "predict_quality_score"),
    ("detr_detector.temperature", "pos_temp"),
    ("local_saliency_head.model_dim", "model_dim"),
    ("local_saliency_head.d_model", "model_dim"),
    ("saliency_amplifier.d_model", "model_dim"),
    ("runner.model.model_dim", "model_dim"),
    ("runner.model.pos_temp", "pos_temp"),
    ("runner.model.use_global_saliency_head", "use_global_saliency_head"),
];

/// `"${a.b}"` → `Some("a.b")`.
fn interpolation(v: &Value) -> Option<&str> {
    v.as_str().and_then(|s| s.strip_prefix("${")).and_then(|s| s.strip_suffix('}'))
}

fn flatten_into(prefix: &str, v: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in v {
        match v {
            Value::Object(m) => flatten_into(&format!("{prefix}{k}."), m, out),
            _ => out.push((format!("{prefix}{k}"), v.clone())),
        }
    }
}

/// Two option values agree (numbers by value: `1` and `1.0` are the same option value).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The flat option map of a weights file's config, either layout (§8), without `model`.
pub(crate) fn flat_config(path: &std::path::Path, config: &Value) -> Result<Value> {
    let err = |reason: String| Error::Config { path: path.to_path_buf(), reason };
    Config::new(path, config)?; // a JSON object, or an error saying how to get one
    let mut top = config.as_object().cloned().unwrap_or_default();
    // A full Hydra config nests the model group under `model`: lift it (top-level entries win).
    if let Some(Value::Object(model)) = top.get("model").cloned() {
        top.remove("model");
        for (k, v) in model {
            top.entry(k).or_insert(v);
        }
    } else {
        top.remove("model");
    }
    if !top.values().any(Value::is_object) {
        let unknown: Vec<&str> =
            top.keys().map(String::as_str).filter(|k| !READ_KEYS.contains(k) && !IGNORED_KEYS.contains(k)).collect();
        if !unknown.is_empty() {
            return Err(err(format!(
                "unknown options {unknown:?} (the flat layout takes the dotted option names of specs/sg-detr.md §8; a nested Hydra-style config is also accepted)"
            )));
        }
        return Ok(Value::Object(top));
    }
    // Nested: flatten, rename the `MRDETR` arguments and the dataset group, keep the table's
    // options, check the interpolated copies.
    let mut raw = Vec::new();
    flatten_into("", &top, &mut raw);
    let lookup = |path: &str| -> Option<&Value> {
        let stripped = path.strip_prefix("model.");
        raw.iter().find(|(k, _)| k == path || Some(k.as_str()) == stripped).map(|(_, v)| v)
    };
    let resolve = |v: &Value| -> Result<Value> {
        let mut v = v;
        for _ in 0..10 {
            match interpolation(v) {
                None => return Ok(v.clone()),
                Some(path) => {
                    v = lookup(path).ok_or_else(|| err(format!("cannot resolve the interpolation \"${{{path}}}\"")))?
                }
            }
        }
        Err(err(format!("interpolation chain too deep at {v}")))
    };
    let mut found: Vec<(String, Vec<(String, Value)>)> = Vec::new();
    let mut note = |key: &str, nested: &str, v: Value| match found.iter_mut().find(|(k, _)| k == key) {
        Some((_, vals)) => vals.push((nested.to_string(), v)),
        None => found.push((key.to_string(), vec![(nested.to_string(), v)])),
    };
    for (nested, v) in &raw {
        let key = if let Some(rest) = nested.strip_prefix("mrdetr.") {
            format!("runner.model.{rest}")
        } else if let Some(rest) = nested.strip_prefix("data.").filter(|_| !nested.starts_with("data.dataset.")) {
            format!("data.dataset.{rest}")
        } else {
            nested.clone()
        };
        if let Some((_, top_key)) = NESTED_COPIES.iter().find(|(copy, _)| *copy == key) {
            if interpolation(v).is_none() {
                note(top_key, nested, v.clone());
            }
        } else if READ_KEYS.contains(&key.as_str()) || IGNORED_KEYS.contains(&key.as_str()) {
            note(&key, nested, resolve(v)?);
        }
        // Anything else is training-only or not part of the model: ignored.
    }
    let mut flat = Map::new();
    for (key, vals) in found {
        let first = &vals[0].1;
        if vals[1..].iter().any(|(_, v)| !same_value(v, first)) {
            let listed: Vec<String> = vals.iter().map(|(n, v)| format!("{n} = {v}")).collect();
            return Err(err(format!("nested config sets `{key}` inconsistently: {}", listed.join(", "))));
        }
        flat.insert(key, first.clone());
    }
    Ok(Value::Object(flat))
}

/// How `PostProcessorDETR` re-sizes windows shorter than `min_w_l` or longer than `max_w_l`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MoveWindow {
    Center,
    Left,
    Right,
}

/// The score column of `pred_relevant_windows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ranking {
    Probs,
    IouScore,
    Combo,
}

/// `postprocessor.postprocessor.*` (§6.1; QVHighlights defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SgPostProcess {
    pub clip_length: f32,
    pub min_ts: f32,
    pub max_ts: f32,
    pub min_w: f64,
    pub max_w: f64,
    pub move_window: MoveWindow,
    pub ranking: Ranking,
}

impl Default for SgPostProcess {
    fn default() -> Self {
        SgPostProcess {
            clip_length: 2.0,
            min_ts: 0.0,
            max_ts: 150.0,
            min_w: 2.0,
            max_w: 150.0,
            move_window: MoveWindow::Center,
            ranking: Ranking::Combo,
        }
    }
}

impl SgPostProcess {
    /// `postprocessor.postprocessor.*` of a flat config.
    fn from_config(c: &Config, flat: &Value, path: &std::path::Path) -> Result<SgPostProcess> {
        let pp_key = |k: &str| format!("postprocessor.postprocessor.{k}");
        c.require(
            flat.get(&pp_key("nms_threshold")).is_none_or(Value::is_null),
            &pp_key("nms_threshold"),
            "NMS in the DETR post-processing is not supported (the released configurations use null)",
        )?;
        let pp = SgPostProcess {
            clip_length: c.f32(&pp_key("clip_length"), 2.0)?,
            min_ts: c.f32(&pp_key("min_ts_val"), 0.0)?,
            max_ts: c.f32(&pp_key("max_ts_val"), 150.0)?,
            min_w: c.f32(&pp_key("min_w_l"), 2.0)? as f64,
            max_w: c.f32(&pp_key("max_w_l"), 150.0)? as f64,
            move_window: match c.str(&pp_key("move_window_method"), "center")? {
                "center" => MoveWindow::Center,
                "left" => MoveWindow::Left,
                "right" => MoveWindow::Right,
                other => {
                    return Err(Error::Config {
                        path: path.to_path_buf(),
                        reason: format!(
                            "`{}` = \"{other}\"; expected center, left or right",
                            pp_key("move_window_method")
                        ),
                    })
                }
            },
            ranking: match c.str(&pp_key("ranking_attribute"), "combo")? {
                "probs" => Ranking::Probs,
                "iou_score" => Ranking::IouScore,
                "combo" => Ranking::Combo,
                other => {
                    return Err(Error::Config {
                        path: path.to_path_buf(),
                        reason: format!(
                            "`{}` = \"{other}\"; expected probs, iou_score or combo",
                            pp_key("ranking_attribute")
                        ),
                    })
                }
            },
        };
        c.require(pp.clip_length > 0.0, &pp_key("clip_length"), "must be positive")?;
        Ok(pp)
    }
}

/// The architecture options (§8).
#[derive(Clone, Debug)]
struct SgConfig {
    d: usize,
    queries: usize,
    pos_temp: f32,
    t2v_layers: usize,
    enc_layers: usize,
    dec_layers: usize,
    proj_layers: usize,
    agg_layers: usize,
    widths: [f32; 4],
    gate_attention: bool,
    global_head: bool,
    logit_mode: LogitMode,
}

/// `local_saliency_head.logit_mode` (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LogitMode {
    /// `e^temp · cos + a`
    ExpB,
    /// `e^temp · cos`
    Exp,
    /// `b · cos + a`
    Linear,
}

/// SG-DETR with its weights.
pub(crate) struct SgDetr {
    cfg: SgConfig,
    io: ModelIo,
    /// `data.dataset.max_video_length`: raw clips kept by the data loader (before padding).
    max_raw_clips: usize,
    pp: SgPostProcess,
    params: Params,
    /// `(scale, shift)` of the local saliency logits (§3.4).
    saliency_affine: (f32, f32),
    notices: Vec<String>,
}

/// Prefixes of tensors that only training, the ATSS head (AUX / COMB metrics) or unused modules
/// read (§5, §3.13): they may be absent and are ignored when present.
const UNUSED_PREFIXES: &[&str] = &[
    "txt_position_embed.",
    "sent_encoder.",
    "moment_encoder.",
    "main_det_head.co_mapper.",
    "main_det_head.dn_label_enc.",
    "aux_det_head.",
];

impl SgDetr {
    pub fn new(weights: &Weights) -> Result<SgDetr> {
        let path = weights.path.as_path();
        let flat = flat_config(path, weights.config())?;
        let c = Config::new(path, &flat)?;
        let widths_value = flat.get("query_selector.default_widths");
        let widths = match widths_value {
            None | Some(Value::Null) => [0.05, 0.2, 0.4, 0.85],
            Some(v) => {
                let list: Option<Vec<f32>> =
                    v.as_array().and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
                match list.as_deref() {
                    Some(&[a, b, c2, d]) => [a, b, c2, d],
                    _ => {
                        return Err(Error::Config {
                            path: path.to_path_buf(),
                            reason: format!(
                                "`query_selector.default_widths` = {v} must be 4 numbers (one per FPN level)"
                            ),
                        })
                    }
                }
            }
        };
        if let Some(v) = flat.get("aux_det_head.fpn_strides").filter(|v| !v.is_null()) {
            c.require(
                v.as_array().is_some_and(|a| a.len() == 4),
                "aux_det_head.fpn_strides",
                "the FPN has exactly 4 levels",
            )?;
        }
        let logit_mode = match c.str("local_saliency_head.logit_mode", "exp_b")? {
            "exp_b" => LogitMode::ExpB,
            "exp" => LogitMode::Exp,
            "linear" => LogitMode::Linear,
            other => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    reason: format!("`local_saliency_head.logit_mode` = \"{other}\"; expected exp_b, exp or linear"),
                })
            }
        };
        let cfg = SgConfig {
            d: c.usize("model_dim", 256)?,
            queries: c.usize("num_queries", 25)?,
            pos_temp: c.f32("pos_temp", 10000.0)?,
            t2v_layers: c.usize("txt2vis_encoder.num_t2v_layers", 2)?,
            enc_layers: c.usize("det_encoder.num_encoder_layers", 3)?,
            dec_layers: c.usize("detr_detector.num_decoder_layers", 3)?,
            proj_layers: c.usize("runner.model.num_input_proj_layers", 2)?,
            agg_layers: c.usize("local_saliency_head.num_aggregation_layers", 2)?,
            widths,
            gate_attention: c.bool("weight_attn_with_saliency", true)?,
            global_head: c.bool("use_global_saliency_head", true)?,
            logit_mode,
        };
        c.require(
            cfg.d > 0 && cfg.d % (2 * HEADS) == 0 && cfg.d <= 256,
            "model_dim",
            "must be a multiple of 16 up to 256 (8 heads; the decoder cross-attention heads are 2·model_dim/8 ≤ 64 wide)",
        )?;
        c.require(cfg.queries >= 1, "num_queries", "must be at least 1")?;
        c.require(cfg.pos_temp.is_finite() && cfg.pos_temp > 0.0, "pos_temp", "must be a positive number")?;
        c.require(cfg.dec_layers >= 1, "detr_detector.num_decoder_layers", "must be at least 1")?;
        c.require(cfg.proj_layers >= 1, "runner.model.num_input_proj_layers", "must be at least 1")?;
        c.require(c.f32("cont_pos_tradeoff", 0.0)? == 0.0, "cont_pos_tradeoff", "only 0 is specified")?;
        c.require(
            c.bool("use_cross_attn_wo_dummy", true)?,
            "use_cross_attn_wo_dummy",
            "only true (no dummy tokens) is supported",
        )?;
        c.require(
            c.bool("use_rpn", true)? && c.bool("use_encoder_features", true)?,
            "use_rpn",
            "only use_rpn = use_encoder_features = true (two-stage query selection) is supported",
        )?;
        c.require(c.bool("predict_quality_score", true)?, "predict_quality_score", "only true is supported")?;
        c.require(
            c.str("saliency_amplifier.mode", "sigmoid")? == "sigmoid"
                && !c.bool("saliency_amplifier.use_mha", false)?
                && !c.bool("saliency_amplifier.use_norm", false)?,
            "saliency_amplifier",
            "only the parameter-free sigmoid amplifier (mode sigmoid, use_mha and use_norm false) is supported",
        )?;
        c.require(
            !c.bool("local_saliency_head.use_projections", false)?
                && !c.bool("local_saliency_head.use_gamma", false)?,
            "local_saliency_head.use_projections",
            "use_projections and use_gamma must be false",
        )?;
        c.require(!c.bool("runner.model.use_txt_pos", false)?, "runner.model.use_txt_pos", "only false is supported")?;

        let tef = c.bool("data.dataset.use_tef", true)?;
        let video_width = c.usize("runner.model.vid_dim", 514)?;
        let query_width = c.usize("runner.model.txt_dim", 512)?;
        c.require(
            video_width > 2 * tef as usize && query_width >= 1,
            "runner.model.vid_dim",
            "vid_dim (features + 2 TEF channels) and txt_dim must leave at least one feature channel",
        )?;
        let max_raw_clips = c.usize("data.dataset.max_video_length", 75)?;
        let max_tokens = c.usize("data.dataset.max_query_length", 40)?;
        c.require(max_raw_clips >= 1 && max_tokens >= 1, "data.dataset.max_video_length", "length limits must be ≥ 1")?;
        let clip_length = c.f32("data.dataset.clip_len", 2.0)?;
        c.require(clip_length.is_finite() && clip_length > 0.0, "data.dataset.clip_len", "must be positive")?;
        let io = ModelIo {
            video_width,
            query_width,
            video_feature_width: video_width - 2 * tef as usize,
            query_feature_width: query_width,
            // Model-ready videos carry the loader's zero padding: up to the padded maximum.
            max_clips: max_raw_clips.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE,
            max_tokens,
            clip_length,
            tef,
            normalize_video: c.bool("data.dataset.normalize_video", true)?,
            normalize_query: c.bool("data.dataset.normalize_query", true)?,
        };

        let pp = SgPostProcess::from_config(&c, &flat, path)?;

        let expected = expected_keys(&cfg, video_width, query_width);
        weights.check(&expected)?;
        let mut params = Params::new(weights);
        let emb = params.get("modality_embeddings.weight")?.clone();
        for (row, name) in [(0, "text"), (1, "video")] {
            let data = emb.data[row * cfg.d..(row + 1) * cfg.d].to_vec();
            params.insert(format!("modality_embeddings.weight#{name}"), Tensor::new(vec![cfg.d], data));
        }
        let scalar = |key: &str| -> Result<f32> { Ok(params.get(key)?.data[0]) };
        // PyTorch: `cos * temp.exp() + a_param` in float32.
        let saliency_affine = match cfg.logit_mode {
            LogitMode::ExpB => (scalar("local_saliency_head.temp")?.exp(), scalar("local_saliency_head.a_param")?),
            LogitMode::Exp => (scalar("local_saliency_head.temp")?.exp(), 0.0),
            LogitMode::Linear => (scalar("local_saliency_head.b_param")?, scalar("local_saliency_head.a_param")?),
        };

        let used: HashSet<String> = expected.into_iter().map(|(k, _)| k).collect();
        let unused = weights.unused(&used);
        let mut notices = Vec::new();
        let (known, other): (Vec<&str>, Vec<&str>) =
            unused.iter().partition(|k| UNUSED_PREFIXES.iter().any(|p| k.starts_with(p)));
        if !known.is_empty() {
            notices.push(format!(
                "sg_detr: ignored {} tensors used only in training or by the auxiliary ATSS head (AUX/COMB metrics)",
                known.len()
            ));
        }
        if !other.is_empty() {
            notices.push(format!("sg_detr: ignored {} tensors unknown to SG-DETR (e.g. `{}`)", other.len(), other[0]));
        }
        notices.push(format!(
            "sg_detr: windows are scaled by the padded clip count × {clip_length} s as the official data loader does; an annotated duration is not used"
        ));
        Ok(SgDetr { cfg, io, max_raw_clips, pp, params, saliency_affine, notices })
    }

    // -----------------------------------------------------------------------------------------
    // Blocks (§3.1)
    // -----------------------------------------------------------------------------------------

    /// `FFN(x) = W₂·PReLU(W₁x + b₁) + b₂` (`<prefix>.mapping.{0,1,3}`), plus `residual`.
    fn ffn(&self, g: &mut Graph, x: TensorId, prefix: &str, residual: Option<TensorId>) -> Result<TensorId> {
        let p = &self.params;
        let act = Act::Prelu(p.c(g, &format!("{prefix}.mapping.1.weight"))?);
        let h = dense(g, p, x, &format!("{prefix}.mapping.0"), act)?;
        match residual {
            Some(r) => dense_residual(g, p, h, &format!("{prefix}.mapping.3"), Act::None, r),
            None => dense(g, p, h, &format!("{prefix}.mapping.3"), Act::None),
        }
    }

    /// `SlimMLP_n`: Linear (`<prefix>.linear_mapper.{2i}`), ReLU, …, Linear, then `last`.
    fn slim_mlp(&self, g: &mut Graph, x: TensorId, prefix: &str, n: usize, last: Act) -> Result<TensorId> {
        let mut x = x;
        for i in 0..n {
            let act = if i + 1 < n { Act::Relu } else { last };
            x = dense(g, &self.params, x, &format!("{prefix}.linear_mapper.{}", 2 * i), act)?;
        }
        Ok(x)
    }

    /// `MLP_proj`: n × [LayerNorm (`mapper.0`) → Linear (`mapper.2`) → ReLU], no ReLU after the last.
    fn input_projection(&self, g: &mut Graph, x: TensorId, prefix: &str) -> Result<TensorId> {
        let n = self.cfg.proj_layers;
        let mut x = x;
        for i in 0..n {
            x = norm(g, &self.params, x, &format!("{prefix}.linear_mapper.{i}.mapper.0"))?;
            let act = if i + 1 < n { Act::Relu } else { Act::None };
            x = dense(g, &self.params, x, &format!("{prefix}.linear_mapper.{i}.mapper.2"), act)?;
        }
        Ok(x)
    }

    fn head_scale(&self, width: usize) -> f32 {
        ((width / HEADS) as f32).powf(-0.5)
    }

    // -----------------------------------------------------------------------------------------
    // Stages
    // -----------------------------------------------------------------------------------------

    /// Sentence token: CaiT class-attention pooling of the projected tokens (§3.3) → (B, 1, d).
    fn sentence_token(&self, g: &mut Graph, t: TensorId, tmask: TensorId) -> Result<TensorId> {
        let (p, d) = (&self.params, self.cfg.d);
        let b = g.shape(t)[0];
        let sp = "local_saliency_head.sentence_pooling";
        let cls_q = p.get(&format!("{sp}.cls_q"))?.data.clone();
        let start: Vec<f32> = (0..b).flat_map(|_| cls_q.iter().copied()).collect();
        let mut c = g.constant(Arc::from(start), &[b, 1, d])?;
        for j in 0..self.cfg.agg_layers {
            let pre = format!("{sp}.layers.{j}");
            // No key/value projections: the normalised tokens are keys and values.
            let e = norm(g, p, t, &format!("{pre}.attn_norm"))?;
            let a = attention(
                g,
                Cols::all(g, c),
                Cols::all(g, e),
                Cols::all(g, e),
                Some(tmask),
                HEADS,
                self.head_scale(d),
            )?;
            c = dense_residual(g, p, a, &format!("{pre}.attn.out_proj"), Act::None, c)?;
            let h = norm(g, p, c, &format!("{pre}.ffn_norm"))?;
            c = self.ffn(g, h, &format!("{pre}.ffn"), Some(c))?;
            if j + 1 < self.cfg.agg_layers {
                c = norm(g, p, c, &format!("{sp}.norm"))?; // not after the last layer
            }
        }
        Ok(c)
    }

    /// Local saliency logits `S_loc = scale · cos(V, s) + shift` (§3.4) → (B, L, 1).
    fn local_saliency(&self, g: &mut Graph, v: TensorId, sentence: TensorId) -> Result<TensorId> {
        let vn = l2_normalize(g, v, 1e-12, L2Mode::MaxEps)?;
        let sn = l2_normalize(g, sentence, 1e-12, L2Mode::MaxEps)?;
        let cos = matmul(g, vn, sn, true)?; // (B, L, 1)
        let (scale, shift) = self.saliency_affine;
        scale_shift(g, cos, scale, shift)
    }

    /// SGCA (§3.6): video queries attend to the text, each attention row scaled by `σ(S_loc)`;
    /// the shared norm is applied to video and text rows after every layer and once more at the end.
    fn sgca(
        &self,
        g: &mut Graph,
        v: TensorId,
        t: TensorId,
        pos: TensorId,
        tmask: TensorId,
        s_loc: TensorId,
    ) -> Result<TensorId> {
        let (p, d) = (&self.params, self.cfg.d);
        let shared = "txt2vis_sal_encoder.t2v_encoder.norm";
        let (mut xv, mut xt) = (v, t);
        let n = self.cfg.t2v_layers;
        for i in 0..n {
            let pre = format!("txt2vis_sal_encoder.t2v_encoder.layers.{i}");
            let q = add(g, xv, pos)?;
            let (qc, kc, vc) = (Cols::all(g, q), Cols::all(g, xt), Cols::all(g, xt));
            let a = if self.cfg.gate_attention {
                gated_attention(g, qc, kc, vc, Some(tmask), s_loc, HEADS, self.head_scale(d))?
            } else {
                attention(g, qc, kc, vc, Some(tmask), HEADS, self.head_scale(d))?
            };
            let y = dense_residual(g, p, a, &format!("{pre}.self_attn.out_proj"), Act::None, xv)?;
            let h = self.ffn(g, y, &format!("{pre}.ffn"), None)?;
            let h = norm(g, p, h, &format!("{pre}.norm1"))?; // norm1 acts on the FFN output
            let y = add(g, y, h)?;
            let y = norm(g, p, y, &format!("{pre}.norm2"))?;
            xv = norm(g, p, y, shared)?;
            if i + 1 < n {
                xt = norm(g, p, xt, shared)?; // the next layer reads normalised text
            }
        }
        norm(g, p, xv, shared)
    }

    /// The detector encoder (§3.7): post-norm self-attention layers over the video.
    fn encoder(&self, g: &mut Graph, x: TensorId, pos: TensorId, vmask: TensorId) -> Result<TensorId> {
        let p = &self.params;
        let mut x = x;
        for i in 0..self.cfg.enc_layers {
            let pre = format!("det_encoder.encoder.layers.{i}");
            let qk = add(g, x, pos)?;
            let a = self_attention(g, p, &format!("{pre}.self_attn"), qk, x, Some(vmask), HEADS, x)?;
            let y = norm(g, p, a, &format!("{pre}.norm1"))?;
            let z = self.ffn(g, y, &format!("{pre}.ffn"), Some(y))?;
            x = norm(g, p, z, &format!("{pre}.norm2"))?;
        }
        Ok(x)
    }

    /// The temporal feature pyramid (§3.9) → [F0 (B,2L,d), F1 (B,L,d), F2 (B,L/2,d), F3 (B,L/4,d)].
    /// `masks` are the level masks `(B, n_l, 1)`: every convolution input is zeroed past the
    /// sample's own length, so padded batches convolve what a B = 1 run does (the official code
    /// convolves over the batch padding, §7.1).
    fn fpn(&self, g: &mut Graph, memory: TensorId, masks: &[TensorId; 4]) -> Result<[TensorId; 4]> {
        let p = &self.params;
        let dws = |g: &mut Graph, x: TensorId, prefix: &str, stride: usize, up: usize| -> Result<TensorId> {
            let dw = p.c(g, &format!("{prefix}.depthwise.weight"))?;
            let pw = p.c(g, &format!("{prefix}.pointwise.weight"))?;
            depthwise_separable(g, x, dw, pw, None, stride, up, None, Act::None)
        };
        let tln = |g: &mut Graph, x: TensorId, prefix: &str| norm(g, p, x, &format!("{prefix}.norm"));
        // mask · GELU(x): the GELU input of every conv, zeroed past the sample's length.
        let gelu = |g: &mut Graph, x: TensorId, mask: TensorId| {
            binary_fused(g, Binary::Mul, mask, x, Unary::Gelu, Unary::Identity)
        };
        let x = mul(g, memory, masks[1])?;
        // F0: nearest ×2 up-sampling fused into the first convolution.
        let u = dws(g, x, "fpn.upscale.1", 1, 2)?;
        let u = tln(g, u, "fpn.upscale.2")?;
        let u = gelu(g, u, masks[0])?;
        let u = dws(g, u, "fpn.upscale.4", 1, 1)?;
        let f0 = tln(g, u, "fpn.upscale.5")?;
        // F1
        let a = dws(g, x, "fpn.level0.0", 1, 1)?;
        let a = tln(g, a, "fpn.level0.1")?;
        let a = gelu(g, a, masks[1])?;
        let a = dws(g, a, "fpn.level0.3", 1, 1)?;
        let f1 = tln(g, a, "fpn.level0.4")?;
        // F2
        let b = dws(g, x, "fpn.level1.0", 2, 1)?;
        let b = tln(g, b, "fpn.level1.1")?;
        let b = gelu(g, b, masks[2])?;
        let b = dws(g, b, "fpn.level1.3", 1, 1)?;
        let f2 = tln(g, b, "fpn.level1.4")?;
        // F3, on F2.
        let c = gelu(g, f2, masks[2])?;
        let c = dws(g, c, "fpn.level2.1", 2, 1)?;
        let c = tln(g, c, "fpn.level2.2")?;
        let c = gelu(g, c, masks[3])?;
        let c = dws(g, c, "fpn.level2.4", 1, 1)?;
        let f3 = tln(g, c, "fpn.level2.5")?;
        Ok([f0, f1, f2, f3])
    }

    /// Two-stage query selection (§3.10): the top-Q proposal tokens by `σ(cls)·σ(iou)` give the
    /// content queries and the anchors. Returns (content (B,Q,d), anchors (B,Q,2), token index (B,Q)).
    fn select_queries(
        &self,
        g: &mut Graph,
        levels: &[TensorId; 4],
        level_masks: &[TensorId; 4],
    ) -> Result<(TensorId, TensorId, TensorId)> {
        let p = &self.params;
        let qs = "query_selector";
        let (prior, valid) = proposal_anchors(g, level_masks, &self.cfg.widths)?; // (B,T,2), (B,T)
        let [b, t] = *g.shape(valid) else { unreachable!() };
        let feats = concat(g, levels, 1)?;
        let valid3 = g.reshape(valid, &[b, t, 1])?;
        let mem = mul(g, feats, valid3)?; // invalid tokens → 0
        let mem = dense(g, p, mem, &format!("{qs}.enc_output"), Act::None)?;
        let mem = norm(g, p, mem, &format!("{qs}.enc_output_norm"))?;
        let cls = dense(g, p, mem, &format!("{qs}.enc_out_class_embed"), Act::Sigmoid)?;
        let iou = dense(g, p, mem, &format!("{qs}.enc_out_iou_embed"), Act::Sigmoid)?;
        let score = mul(g, cls, iou)?;
        let score = g.reshape(score, &[b, t])?;
        // Invalid tokens rank below every valid one: score − (2 − 2·valid) ∈ [−2, −1].
        let score =
            binary_fused(g, Binary::Sub, score, valid, Unary::ScaleShift { scale: -2.0, shift: 2.0 }, Unary::Identity)?;
        let offset = self.slim_mlp(g, mem, &format!("{qs}.enc_out_span_embed"), 3, Act::None)?;
        let anchors = binary_fused(g, Binary::Add, offset, prior, Unary::Identity, Unary::Sigmoid)?;
        let (_, index) = topk(g, score, self.cfg.queries)?;
        let content = gather_rows(g, mem, index)?;
        let anchors = gather_rows(g, anchors, index)?;
        Ok((content, anchors, index))
    }

    /// SG-DETR's DAB decoder (§3.11). Unlike TR-DETR's: the content queries come from the
    /// selector, `query_scale` modulates the sine embedding in every layer, the self-attention
    /// key position is `key_pos_proj(query_pos_proj(qpos))`, the anchors are refined by the
    /// decoder's own span MLP on the un-normalised output, and an IoU head scores the refined
    /// anchor. Returns (hs of the last layer, the anchor that entered it, its IoU logits).
    fn decoder(
        &self,
        g: &mut Graph,
        tgt: TensorId,
        anchors: TensorId,
        memory: TensorId,
        pos: TensorId,
        vmask: TensorId,
    ) -> Result<(TensorId, TensorId, TensorId)> {
        let (p, d, temp) = (&self.params, self.cfg.d, self.cfg.pos_temp);
        let dp = "main_det_head.decoder";
        let [b, q, _] = *g.shape(tgt) else { unreachable!() };
        let l = g.shape(memory)[1];
        let dh = d / HEADS;
        let (mut tgt, mut r) = (tgt, anchors);
        for layer in 0..self.cfg.dec_layers {
            let pre = format!("{dp}.layers.{layer}");
            let r_in = r;
            let sine = sine_embed_coords(g, r, d / 2, temp, TAU)?;
            let qpos = self.slim_mlp(g, sine, &format!("{dp}.ref_point_head"), 2, Act::None)?;
            let scale = self.slim_mlp(g, tgt, &format!("{dp}.query_scale"), 2, Act::None)?;
            let e = mul(g, sine, scale)?;
            // One scalar per query, divided by the anchor width, scales all channels.
            let rc = self.slim_mlp(g, tgt, &format!("{dp}.ref_anchor_head"), 2, Act::Sigmoid)?;
            let width = slice(g, r, 2, 1, 1)?;
            let ratio = binary_fused(g, Binary::Div, rc, width, Unary::Identity, Unary::Identity)?;
            let e = mul(g, e, ratio)?;

            // Self-attention over the queries.
            let sa = format!("{pre}.self_attention");
            let qp = dense(g, p, qpos, &format!("{sa}.query_pos_proj"), Act::None)?;
            let sq = dense_residual(g, p, tgt, &format!("{sa}.query_content_proj"), Act::None, qp)?;
            let kp = dense(g, p, qp, &format!("{sa}.key_pos_proj"), Act::None)?;
            let sk = dense_residual(g, p, tgt, &format!("{sa}.key_content_proj"), Act::None, kp)?;
            let sv = dense(g, p, tgt, &format!("{sa}.value_proj"), Act::None)?;
            let a =
                attention(g, Cols::all(g, sq), Cols::all(g, sk), Cols::all(g, sv), None, HEADS, self.head_scale(d))?;
            let x = dense_residual(g, p, a, &format!("{sa}.self_attn.out_proj"), Act::None, tgt)?;
            let x = norm(g, p, x, &format!("{sa}.norm1"))?;

            // Cross-attention to the memory: per head [content | position] halves.
            let qc = dense(g, p, x, &format!("{pre}.ca_qcontent_proj"), Act::None)?;
            let qs = dense(g, p, e, &format!("{pre}.ca_qpos_sine_proj"), Act::None)?;
            let kc = dense(g, p, memory, &format!("{pre}.ca_kcontent_proj"), Act::None)?;
            let kp = dense(g, p, pos, &format!("{pre}.ca_kpos_proj"), Act::None)?;
            let vv = dense(g, p, memory, &format!("{pre}.ca_value_proj"), Act::None)?;
            let per_head = |g: &mut Graph, content: TensorId, position: TensorId, rows: usize| -> Result<TensorId> {
                let c = g.reshape(content, &[b, rows, HEADS, dh])?;
                let s = g.reshape(position, &[b, rows, HEADS, dh])?;
                let both = concat(g, &[c, s], 3)?;
                g.reshape(both, &[b, rows, 2 * d])
            };
            let cq = per_head(g, qc, qs, q)?;
            let ck = per_head(g, kc, kp, l)?;
            let a = attention(
                g,
                Cols::all(g, cq),
                Cols::all(g, ck),
                Cols::all(g, vv),
                Some(vmask),
                HEADS,
                self.head_scale(2 * d),
            )?;
            let x = dense_residual(g, p, a, &format!("{pre}.cross_attn.out_proj"), Act::None, x)?;
            let x = norm(g, p, x, &format!("{pre}.norm2"))?;
            let y = self.ffn(g, x, &format!("{pre}.ffn"), Some(x))?;
            tgt = norm(g, p, y, &format!("{pre}.norm3"))?;

            // Anchor refinement on the un-normalised output.
            let delta = self.slim_mlp(g, tgt, &format!("{dp}.span_embed"), 3, Act::None)?;
            r = binary_fused(g, Binary::Add, delta, r_in, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;
            if layer + 1 == self.cfg.dec_layers {
                // The IoU head scores the refined anchor; the emitted spans refine the input one.
                let sine_next = sine_embed_coords(g, r, d / 2, temp, TAU)?;
                let both = concat(g, &[tgt, sine_next], 2)?;
                let quality = self.slim_mlp(g, both, &format!("{dp}.quality_score_embed"), 3, Act::None)?;
                let hs = norm(g, p, tgt, &format!("{dp}.norm"))?;
                return Ok((hs, r_in, quality));
            }
        }
        unreachable!("at least one decoder layer")
    }
}

/// Amplifier `M + M·σ(S)` (§3.8).
fn amplify(g: &mut Graph, m: TensorId, s: TensorId) -> Result<TensorId> {
    let scaled = binary_fused(g, Binary::Mul, m, s, Unary::Sigmoid, Unary::Identity)?;
    add(g, m, scaled)
}

impl Architecture for SgDetr {
    fn kind(&self) -> ModelKind {
        ModelKind::SgDetr
    }

    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    /// The SG-DETR data loader (§2): one video source cut to `max_video_length`, L2-normalised
    /// (`x / (‖x‖ + 1e-5)`), TEF from the real length, zero clips up to a multiple of 4.
    fn video_from_sources(&self, sources: &[Array], names: &[String]) -> Result<VideoInput> {
        let io = &self.io;
        if sources.len() > 1 {
            // The loader normalises one feature vector per clip; split sources would each be
            // normalised on their own.
            return Err(Error::Input {
                name: "video".into(),
                reason: format!("SG-DETR reads one video feature file per video, got {}", sources.len()),
            });
        }
        let parts = check_sources(sources, names, io.video_feature_width, "video")?;
        let clips = parts.iter().map(|(rows, _, _)| *rows).min().unwrap_or(0).min(self.max_raw_clips);
        let padded = clips.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
        let mut data = Vec::with_capacity(padded * io.video_width);
        for t in 0..clips {
            for (_, width, values) in &parts {
                push_row(&mut data, &values[t * width..(t + 1) * width], io.normalize_video);
            }
            if io.tef {
                let start = t as f32 / clips as f32;
                data.extend([start, start + (1.0 / clips as f64) as f32]);
            }
        }
        data.resize(padded * io.video_width, 0.0);
        Ok(VideoInput { clips: padded, width: io.video_width, data, duration: None })
    }

    /// The text: a `(1, N, D)` array is read as its first slice, then the usual token rows.
    fn query_from_sources(&self, sources: &[Array], names: &[String]) -> Result<QueryInput> {
        let sources: Vec<Array> = sources
            .iter()
            .map(|a| match a.shape[..] {
                [k, n, w] if k >= 1 => Array { shape: vec![n, w], data: a.data[..n * w].to_vec() },
                _ => a.clone(),
            })
            .collect();
        super::detr_query_from_sources(&self.io, &sources, names)
    }

    /// Pads a model-ready video with zero clips to a multiple of 4 (the loader's padding, mask 1)
    /// and rejects videos with fewer proposal tokens than queries.
    fn prepare_video<'a>(&self, index: usize, video: &'a VideoInput) -> Result<Cow<'a, VideoInput>> {
        let padded = video.clips.div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
        let q = self.cfg.queries;
        if proposal_tokens(padded) < q {
            let need = (4 * q).div_ceil(15).div_ceil(PAD_MULTIPLE) * PAD_MULTIPLE;
            return Err(Error::Input {
                name: format!("video #{index}"),
                reason: format!(
                    "{} clips (padded to {padded}) give only {} proposal tokens for num_queries = {q}; SG-DETR needs a padded length of at least {need} clips, i.e. more than {} clips (the official code crashes in topk here)",
                    video.clips,
                    proposal_tokens(padded),
                    need - PAD_MULTIPLE
                ),
            });
        }
        if padded == video.clips {
            return Ok(Cow::Borrowed(video));
        }
        let mut v = video.clone();
        v.data.resize(padded * v.width, 0.0);
        v.clips = padded;
        Ok(Cow::Owned(v))
    }

    fn prediction(&self, outputs: &Outputs, b: usize, clips: usize, video: &VideoInput) -> Prediction {
        let q = self.cfg.queries;
        let logits = outputs.get("pred_logits")[b * q..(b + 1) * q].to_vec();
        let spans = outputs.get("pred_spans")[2 * b * q..2 * (b + 1) * q].to_vec();
        let quality = outputs.get("pred_quality_scores")[b * q..(b + 1) * q].to_vec();
        let saliency = outputs.get("saliency")[b * clips..b * clips + video.clips].to_vec();
        let tokens = outputs.get("topk_index")[b * q..(b + 1) * q]
            .iter()
            .map(|&i| own_token(i as usize, clips, video.clips))
            .collect();
        // The official loader sets the duration to the padded clip count × clip_len (§2 step 5).
        let duration = video.clips as f32 * self.io.clip_length;
        let windows = windows(&logits, &quality, &spans, duration, &self.pp);
        let raw = RawOutputs { logits, spans, saliency, quality: Some(quality), proposals: Some(tokens) };
        Prediction { windows, saliency: raw.saliency.clone(), raw }
    }

    fn build(&self, g: &mut Graph, batch: usize, clips: usize, tokens: usize) -> Result<()> {
        let (p, cfg) = (&self.params, &self.cfg);
        if clips % PAD_MULTIPLE != 0 || proposal_tokens(clips) < cfg.queries {
            return Err(Error::Graph(format!(
                "sg_detr: {clips} clips; the graph needs a multiple of {PAD_MULTIPLE} with at least {} proposal tokens",
                cfg.queries
            )));
        }
        let d = cfg.d;
        let video = g.input("video", &[batch, clips, self.io.video_width]);
        let vmask = g.input("video_mask", &[batch, clips]);
        let query = g.input("query", &[batch, tokens, self.io.query_width]);
        let tmask = g.input("query_mask", &[batch, tokens]);

        // §3.2 – §3.4: projections, sentence token, local saliency.
        let v = self.input_projection(g, video, "input_vid_proj")?;
        let t = self.input_projection(g, query, "input_txt_proj")?;
        let sentence = self.sentence_token(g, t, tmask)?;
        let s_loc = self.local_saliency(g, v, sentence)?; // (B, L, 1)

        // §3.5 – §3.7: embeddings, SGCA, encoder.
        let pos = sine_position_from_mask(g, vmask, SineConfig::detr(d, cfg.pos_temp))?;
        let e_txt = p.c(g, "modality_embeddings.weight#text")?;
        let e_vid = p.c(g, "modality_embeddings.weight#video")?;
        let t = add(g, t, e_txt)?;
        let v = add(g, v, e_vid)?;
        let x = self.sgca(g, v, t, pos, tmask, s_loc)?;
        let m = self.encoder(g, x, pos, vmask)?;

        // §3.8: saliency amplifier and global saliency.
        let (saliency, memory) = if cfg.global_head {
            let m1 = amplify(g, m, s_loc)?;
            let s_glob = dense_residual(g, p, m1, "global_saliency_head", Act::None, s_loc)?;
            (s_glob, amplify(g, m, s_glob)?)
        } else {
            (s_loc, amplify(g, m, s_loc)?)
        };

        // §3.9 – §3.10: FPN and query selection, with the level masks.
        let m0 = repeat_interleave(g, vmask, 1, 2)?;
        let m2 = pool1d(g, vmask, 1, 2, ReduceOp::Max)?;
        let m3 = pool1d(g, vmask, 1, 4, ReduceOp::Max)?;
        let level_masks = [m0, vmask, m2, m3];
        let mut masks3 = [vmask; 4];
        for (k, &mask) in level_masks.iter().enumerate() {
            let n = g.shape(mask)[1];
            masks3[k] = g.reshape(mask, &[batch, n, 1])?;
        }
        let levels = self.fpn(g, memory, &masks3)?;
        let (content, anchors, index) = self.select_queries(g, &levels, &level_masks)?;

        // §3.11: decoder and heads.
        let (hs, reference, quality) = self.decoder(g, content, anchors, memory, pos, vmask)?;
        let logits = dense(g, p, hs, "main_det_head.class_embed", Act::None)?;
        let delta = self.slim_mlp(g, hs, "main_det_head.span_embed", 3, Act::None)?;
        let spans =
            binary_fused(g, Binary::Add, delta, reference, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;

        let saliency = g.reshape(saliency, &[batch, clips])?;
        g.output("pred_logits", logits);
        g.output("pred_spans", spans);
        g.output("pred_quality_scores", quality);
        g.output("saliency", saliency);
        g.output("topk_index", index);
        Ok(())
    }
}

/// A proposal token index of a forward padded to `clips` as the sample's own B = 1 run numbers
/// it (levels 2L, L, L/2, L/4 in order, with the sample's own padded length `own`).
fn own_token(index: usize, clips: usize, own: usize) -> usize {
    let lens = |l: usize| [2 * l, l, l / 2, l / 4];
    let (mut start, mut own_start) = (0, 0);
    for (n, own_n) in lens(clips).into_iter().zip(lens(own)) {
        if index < start + n {
            return own_start + (index - start);
        }
        start += n;
        own_start += own_n;
    }
    index
}

/// The DETR-path post-processing of one sample (§6.1, float32 arithmetic):
/// `Preparator.prepare_detr_outputs` (probabilities, spans × duration clamped to [0, duration],
/// rows by descending probability) then `PostProcessorDETR` (clamp, rounding to the clip grid,
/// re-sizing short/long windows, 4-decimal scores, `combo = √(p_r · iou_r)`). Rows stay in
/// descending-probability order; the score column is chosen by `ranking_attribute`.
pub(crate) fn windows(
    logits: &[f32],
    quality: &[f32],
    spans: &[f32],
    duration: f32,
    pp: &SgPostProcess,
) -> Vec<Window> {
    let n = logits.len();
    let prob: Vec<f32> = logits.iter().map(|&x| sigmoid(x)).collect();
    let iou: Vec<f32> = quality.iter().map(|&x| sigmoid(x)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| prob[b].total_cmp(&prob[a])); // stable: ties keep query order
    let round4 = |x: f32| (x * 10000.0).round_ties_even() / 10000.0;
    let snap = |x: f32| (x.clamp(pp.min_ts, pp.max_ts) / pp.clip_length).round_ties_even() * pp.clip_length;
    order
        .into_iter()
        .map(|i| {
            let (c, w) = (spans[2 * i], spans[2 * i + 1]);
            let start = ((c - 0.5 * w) * duration).clamp(0.0, duration);
            let end = ((c + 0.5 * w) * duration).clamp(0.0, duration);
            let (mut start, mut end) = (snap(start), snap(end));
            let len = (end - start) as f64;
            for (resize, new_len) in [(len < pp.min_w, pp.min_w), (len > pp.max_w, pp.max_w)] {
                if !resize {
                    continue;
                }
                match pp.move_window {
                    MoveWindow::Center => {
                        let center = (end + start) / 2.0;
                        let half = (new_len / 2.0) as f32;
                        (start, end) = (center - half, center + half);
                    }
                    MoveWindow::Left => end = start + new_len as f32,
                    MoveWindow::Right => start = end - new_len as f32,
                }
            }
            let (p_r, iou_r) = (round4(prob[i]), round4(iou[i]));
            let score = match pp.ranking {
                Ranking::Probs => p_r,
                Ranking::IouScore => iou_r,
                Ranking::Combo => (p_r * iou_r).sqrt(),
            };
            Window { start: start as f64, end: end as f64, score: score as f64 }
        })
        .collect()
}

/// Builds the expected `(key, shape)` list with the official module layouts.
struct Keys {
    d: usize,
    list: Vec<(String, Vec<usize>)>,
}

impl Keys {
    fn push(&mut self, key: String, shape: Vec<usize>) {
        self.list.push((key, shape));
    }
    /// `Linear(i → o)`.
    fn lin(&mut self, prefix: &str, i: usize, o: usize) {
        self.push(format!("{prefix}.weight"), vec![o, i]);
        self.push(format!("{prefix}.bias"), vec![o]);
    }
    fn ln(&mut self, prefix: &str, n: usize) {
        self.push(format!("{prefix}.weight"), vec![n]);
        self.push(format!("{prefix}.bias"), vec![n]);
    }
    /// `FeedForwardNetwork`: Linear(d, 4d), PReLU, Linear(4d, d).
    fn ffn(&mut self, prefix: &str) {
        let d = self.d;
        self.lin(&format!("{prefix}.mapping.0"), d, 4 * d);
        self.push(format!("{prefix}.mapping.1.weight"), vec![1]);
        self.lin(&format!("{prefix}.mapping.3"), 4 * d, d);
    }
    /// `SlimMLP` through the widths `dims`.
    fn slim(&mut self, prefix: &str, dims: &[usize]) {
        for (i, io) in dims.windows(2).enumerate() {
            self.lin(&format!("{prefix}.linear_mapper.{}", 2 * i), io[0], io[1]);
        }
    }
}

/// Every inference key of the official state_dict with its shape (§5). Training-only modules,
/// the ATSS head and `txt_position_embed` are not listed (they may be absent).
fn expected_keys(cfg: &SgConfig, video_width: usize, query_width: usize) -> Vec<(String, Vec<usize>)> {
    let d = cfg.d;
    let mut k = Keys { d, list: Vec::new() };
    for (name, width) in [("input_txt_proj", query_width), ("input_vid_proj", video_width)] {
        for i in 0..cfg.proj_layers {
            let w = if i == 0 { width } else { d };
            k.ln(&format!("{name}.linear_mapper.{i}.mapper.0"), w);
            k.lin(&format!("{name}.linear_mapper.{i}.mapper.2"), w, d);
        }
    }
    k.push("modality_embeddings.weight".into(), vec![2, d]);
    for i in 0..cfg.t2v_layers {
        let pre = format!("txt2vis_sal_encoder.t2v_encoder.layers.{i}");
        k.lin(&format!("{pre}.self_attn.out_proj"), d, d);
        k.ffn(&format!("{pre}.ffn"));
        k.ln(&format!("{pre}.norm1"), d);
        k.ln(&format!("{pre}.norm2"), d);
    }
    k.ln("txt2vis_sal_encoder.t2v_encoder.norm", d);
    let fpn = [
        ("upscale", [(1, 2), (4, 5)]),
        ("level0", [(0, 1), (3, 4)]),
        ("level1", [(0, 1), (3, 4)]),
        ("level2", [(1, 2), (4, 5)]),
    ];
    for (level, convs) in fpn {
        for (conv, tln) in convs {
            k.push(format!("fpn.{level}.{conv}.depthwise.weight"), vec![d, 1, 3]);
            k.push(format!("fpn.{level}.{conv}.pointwise.weight"), vec![d, d, 1]);
            k.ln(&format!("fpn.{level}.{tln}.norm"), d);
        }
    }
    k.lin("query_selector.enc_output", d, d);
    k.ln("query_selector.enc_output_norm", d);
    k.slim("query_selector.enc_out_span_embed", &[d, d, d, 2]);
    k.lin("query_selector.enc_out_class_embed", d, 1);
    k.lin("query_selector.enc_out_iou_embed", d, 1);
    for i in 0..cfg.enc_layers {
        let pre = format!("det_encoder.encoder.layers.{i}");
        k.push(format!("{pre}.self_attn.in_proj_weight"), vec![3 * d, d]);
        k.push(format!("{pre}.self_attn.in_proj_bias"), vec![3 * d]);
        k.lin(&format!("{pre}.self_attn.out_proj"), d, d);
        k.ffn(&format!("{pre}.ffn"));
        k.ln(&format!("{pre}.norm1"), d);
        k.ln(&format!("{pre}.norm2"), d);
    }
    let dp = "main_det_head.decoder";
    for l in 0..cfg.dec_layers {
        let pre = format!("{dp}.layers.{l}");
        for name in [
            "query_content_proj",
            "query_pos_proj",
            "key_content_proj",
            "key_pos_proj",
            "value_proj",
            "self_attn.out_proj",
        ] {
            k.lin(&format!("{pre}.self_attention.{name}"), d, d);
        }
        k.ln(&format!("{pre}.self_attention.norm1"), d);
        for name in [
            "ca_qcontent_proj",
            "ca_qpos_sine_proj",
            "ca_kcontent_proj",
            "ca_kpos_proj",
            "ca_value_proj",
            "cross_attn.out_proj",
        ] {
            k.lin(&format!("{pre}.{name}"), d, d);
        }
        k.ffn(&format!("{pre}.ffn"));
        k.ln(&format!("{pre}.norm2"), d);
        k.ln(&format!("{pre}.norm3"), d);
    }
    k.slim(&format!("{dp}.query_scale"), &[d, d, d]);
    k.slim(&format!("{dp}.quality_score_embed"), &[2 * d, d, d, 1]);
    k.slim(&format!("{dp}.ref_point_head"), &[d, d, d]);
    k.slim(&format!("{dp}.ref_anchor_head"), &[d, d, 1]);
    k.slim(&format!("{dp}.span_embed"), &[d, d, d, 2]);
    k.ln(&format!("{dp}.norm"), d);
    k.slim("main_det_head.span_embed", &[d, d, d, 2]);
    k.lin("main_det_head.class_embed", d, 1);
    let ls = "local_saliency_head";
    let scalars: &[&str] = match cfg.logit_mode {
        LogitMode::ExpB => &["temp", "a_param"],
        LogitMode::Exp => &["temp"],
        LogitMode::Linear => &["a_param", "b_param"],
    };
    for name in scalars {
        k.push(format!("{ls}.{name}"), vec![]);
    }
    k.push(format!("{ls}.sentence_pooling.cls_q"), vec![d]);
    for j in 0..cfg.agg_layers {
        let pre = format!("{ls}.sentence_pooling.layers.{j}");
        k.lin(&format!("{pre}.attn.out_proj"), d, d);
        k.ln(&format!("{pre}.attn_norm"), d);
        k.ln(&format!("{pre}.ffn_norm"), d);
        k.ffn(&format!("{pre}.ffn"));
    }
    k.ln(&format!("{ls}.sentence_pooling.norm"), d);
    if cfg.global_head {
        k.lin("global_saliency_head", d, 1);
    }
    k.list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp() -> SgPostProcess {
        SgPostProcess::default()
    }

    /// Hand-computed rows: sorted by probability, scored by combo, clamped and snapped to the
    /// 2-s grid (half to even), short windows re-centred to 2 s (possibly leaving [0, 150]).
    #[test]
    fn detr_post_processing_by_hand() {
        // Query 0: p = σ(0) = 0.5, iou = σ(0) = 0.5, span (0.5, 0.5) × 152 → [38, 114].
        // Query 1: p = σ(2) = 0.880797, iou = σ(-1) = 0.268941, span (0.001, 0.002) → [0, 0.304]
        //          → snapped [0, 0] → length 0 < 2 → centre 0 → [-1, 1].
        // Query 2: p = σ(-3) = 0.047426, span (0.99, 0.2) → [135.28, 152] → clamp 150 → [136, 150].
        let logits = [0.0, 2.0, -3.0];
        let quality = [0.0, -1.0, 1.0];
        let spans = [0.5, 0.5, 0.001, 0.002, 0.99, 0.2];
        let w = windows(&logits, &quality, &spans, 152.0, &pp());
        let rows: Vec<(f64, f64)> = w.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(rows, [(-1.0, 1.0), (38.0, 114.0), (136.0, 150.0)]);
        // combo = √(0.8808 · 0.2689) in float32; √(0.5 · 0.5) = 0.5; √(0.0474 · 0.7311).
        assert_eq!(w[0].score, (0.8808f32 * 0.2689f32).sqrt() as f64);
        assert_eq!(w[1].score, 0.5);
        assert_eq!(w[2].score, (0.0474f32 * 0.7311f32).sqrt() as f64);
        let probs = windows(&logits, &quality, &spans, 152.0, &SgPostProcess { ranking: Ranking::Probs, ..pp() });
        assert_eq!(probs.iter().map(|w| w.score).collect::<Vec<_>>(), [0.8808f32 as f64, 0.5, 0.0474f32 as f64]);
    }

    /// 61 s → round(30.5) = 30 (even) → 60 s; a 3-s window [61, 63] snaps to [60, 64].
    /// A long window (> max_w_l) is re-centred to max_w_l; "left" keeps the start.
    #[test]
    fn rounding_and_resizing() {
        let w = windows(&[0.0], &[0.0], &[62.0 / 152.0, 2.0 / 152.0], 152.0, &pp());
        assert_eq!((w[0].start, w[0].end), (60.0, 64.0));
        let long = SgPostProcess { max_w: 100.0, ..pp() };
        let w = windows(&[0.0], &[0.0], &[0.5, 1.0], 152.0, &long);
        // [0, 152] → clamp [0, 150] → length 150 > 100 → centre 75 → [25, 125].
        assert_eq!((w[0].start, w[0].end), (25.0, 125.0));
        let left = SgPostProcess { move_window: MoveWindow::Left, ..pp() };
        let w = windows(&[0.0], &[0.0], &[10.0 / 152.0, 0.0], 152.0, &left);
        assert_eq!((w[0].start, w[0].end), (10.0, 12.0));
    }

    #[test]
    fn own_token_numbering() {
        // Batch padded to 8 clips (levels 16, 8, 4, 2), sample of 4 clips (8, 4, 2, 1).
        assert_eq!(own_token(3, 8, 4), 3);
        assert_eq!(own_token(16, 8, 4), 8);
        assert_eq!(own_token(17, 8, 4), 9);
        assert_eq!(own_token(24, 8, 4), 12);
        assert_eq!(own_token(28, 8, 4), 14);
        assert_eq!(own_token(3, 4, 4), 3);
    }

    fn flat(v: serde_json::Value) -> Result<Value> {
        flat_config(std::path::Path::new("w.safetensors"), &v)
    }

    #[test]
    fn nested_configs_flatten_rename_and_check_copies() {
        let nested = serde_json::json!({
            "model": "sg_detr",
            "model_dim": 256,
            "pos_temp": 10000,
            "dropout": 0.1,
            "mrdetr": {"_target_": "src.model.model.MRDETR", "vid_dim": 514, "pos_temp": "${pos_temp}", "model_dim": 256},
            "data": {"max_query_length": 32, "batch_size": 128, "clip_len": "${data.other}", "other": 1},
            "detr_detector": {"num_queries": 30, "temperature": 10000, "num_decoder_layers": 2},
            "query_selector": {"num_queries": 30},
            "postprocessor": {"postprocessor": {"clip_length": 1}, "combiner": {"iou_thr": 0.8}},
        });
        let f = flat(nested.clone()).unwrap();
        assert_eq!(f["runner.model.vid_dim"], 514);
        assert_eq!(f["data.dataset.max_query_length"], 32);
        assert_eq!(f["data.dataset.clip_len"], 1);
        assert_eq!(f["num_queries"], 30);
        assert_eq!(f["detr_detector.num_decoder_layers"], 2);
        assert_eq!(f["postprocessor.postprocessor.clip_length"], 1);
        assert!(f.get("data.dataset.batch_size").is_none() && f.get("postprocessor.combiner.iou_thr").is_none());
        let mut bad = nested.clone();
        bad["query_selector"]["num_queries"] = 20.into();
        let e = flat(bad).unwrap_err().to_string();
        assert!(e.contains("inconsistently") && e.contains("num_queries"), "{e}");
        let mut bad = nested;
        bad["data"]["clip_len"] = "${nowhere}".into();
        let e = flat(bad).unwrap_err().to_string();
        assert!(e.contains("nowhere"), "{e}");
    }

    #[test]
    fn flat_configs_reject_unknown_options() {
        let e = flat(serde_json::json!({"model": "sg_detr", "num_queries": 25, "mrdetr.vid_dim": 514})).unwrap_err();
        assert!(e.to_string().contains("mrdetr.vid_dim"), "{e}");
        let ok = flat(serde_json::json!({"model": "sg_detr", "num_queries": 10, "dropout": 0.1})).unwrap();
        assert_eq!(ok["num_queries"], 10);
    }
}
