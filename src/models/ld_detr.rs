//! LD-DETR (Zhao et al., arXiv 2501.10787) as a graph builder, following its block diagram
//! (specs: ld-detr.md):
//!
//! unimodal encoders → convolutional fuser [V2T extractor → T2V encoder → transformer encoder 1 →
//! convolutional blocks → transformer encoder 2] → memory R → loop decoder (DAB-DETR) →
//! MR head (class + span MLP) → HD head (GRU over the top-1 moment of the unimodal video features)
//! → saliency.
//!
//! The loop decoder runs ONCE, as the official code does (its `return` sits inside the loop, so
//! `num_decoder_loops` has no effect, §0.1). **Deviation, opt-in:** `"paper_loop_decoder": true`
//! in the config runs it `num_decoder_loops` times as the paper describes (each loop restarts
//! from the learnt anchors with the previous loop's normed output as the content queries); no
//! published checkpoint was trained that way.
//!
//! Padded batches give each sample its B = 1 result, where the official batched code does not
//! (§4): the T2V attention masks the text padding only (no `attn_mask.repeat` head/batch mix-up),
//! the convolutional blocks of a padded batch convolve each sample's valid clips only
//! ([`masked_conv_bn_block`]), and the HD head uses each sample's own clip count.
//!
//! Training-only tensors (momentum encoders, distillation queues and head, `txt_position_embed`)
//! may be present or absent; present ones are dropped at load (one notice) and never uploaded.

use super::blocks::{
    dab_decoder, dab_decoder_from, dab_decoder_keys, dense, encoder_layer, gru_highlight_head, norm, t2v_layer,
    vsl_context_query, Decoded, DecoderSpec, Params, VslKeys,
};
use super::config::{Config, VideoWidths};
use super::postprocess::{foreground_probs, round4, Window};
use super::{Architecture, ModelIo, ModelKind, Prediction, RawOutputs, VideoInput};
use crate::error::{Error, Result};
use crate::graph::{Graph, Outputs, TensorId};
use crate::ops::conv1d::{conv_bn_block, fold_batchnorm};
use crate::ops::elementwise::{binary_fused, Binary, Unary};
use crate::ops::gru::GruWeights;
use crate::ops::masked_conv1d::masked_conv_bn_block;
use crate::ops::position::{sine_position_from_mask, SineConfig};
use crate::ops::Act;
use crate::weights::{Tensor, Weights};

/// Attention heads and FFN width: fixed in the official code (not options).
const HEADS: usize = 8;
const FFN: usize = 1024;
/// BatchNorm1d epsilon of the convolutional blocks.
const BN_EPS: f32 = 1e-5;

const V2T: &str = "convolutional_fuser.v2t_extractor";
const CONV: &str = "convolutional_fuser.convolutional_block.blocks";
const DECODER: &str = "loop_decoder.transformer_decoder";
const MR_HEAD: &str = "prediction_heads.video_moment_retrieval_prediction_head";
const HD_HEAD: &str = "prediction_heads.highlight_detection_prediction_head";

/// Key prefixes of the tensors only training uses (ld-detr.md §3.12).
const TRAINING_ONLY: [&str; 4] =
    ["txt_position_embed.", "momentum_video_encoder.", "momentum_text_encoder.", "distill_align."];

fn training_only(key: &str) -> bool {
    TRAINING_ONLY.iter().any(|p| key.starts_with(p))
}

/// The official options LD-DETR's forward depends on (ld-detr.md §1.1), with their defaults.
#[derive(Clone, Debug)]
struct LdDetrConfig {
    hidden: usize,
    queries: usize,
    /// `num_v2t_encoder_layers`: the T2V cross-attention layers, despite the name.
    t2v_layers: usize,
    enc1_layers: usize,
    conv_blocks: usize,
    enc2_layers: usize,
    dec_layers: usize,
    /// `num_decoder_loops`: only used with `paper_loop_decoder`.
    decoder_loops: usize,
    /// Not an official option: run the loop decoder `decoder_loops` times (the paper) instead of
    /// once (the official code).
    paper_loop_decoder: bool,
}

/// The official `PostProcessorDETR` of the dataset (ld-detr.md §5).
#[derive(Clone, Copy, Debug)]
struct PostProcess {
    clip_length: f32,
    /// Window clamp `[0, max_ts]` seconds (`clip_ts`); `None` for datasets without it.
    max_ts: Option<f32>,
    sort: bool,
}

pub(crate) struct LdDetr {
    cfg: LdDetrConfig,
    io: ModelIo,
    params: Params,
    gru: GruWeights,
    post: PostProcess,
    notices: Vec<String>,
}

impl LdDetr {
    pub fn new(weights: &Weights) -> Result<LdDetr> {
        let path = weights.path.as_path();
        let c = Config::new(path, weights.config())?;
        let cfg = LdDetrConfig {
            hidden: c.usize("hidden_dim", 256)?,
            queries: c.usize("num_queries", 10)?,
            t2v_layers: c.usize("num_v2t_encoder_layers", 2)?,
            enc1_layers: c.usize("num_encoder1_layers", 2)?,
            conv_blocks: c.usize("num_convolutional_blocks", 5)?,
            enc2_layers: c.usize("num_encoder2_layers", 2)?,
            dec_layers: c.usize("num_decoder_layers", 2)?,
            decoder_loops: c.usize("num_decoder_loops", 3)?,
            paper_loop_decoder: c.bool("paper_loop_decoder", false)?,
        };
        c.require(cfg.hidden == 256, "hidden_dim", "must be 256 (the decoder's anchor sine embedding is 2 × 128)")?;
        c.require(cfg.dec_layers >= 1, "num_decoder_layers", "needs at least one decoder layer")?;
        c.require(cfg.queries >= 1, "num_queries", "needs at least one query")?;
        c.require(
            !cfg.paper_loop_decoder || cfg.decoder_loops >= 1,
            "num_decoder_loops",
            "must be at least 1 with paper_loop_decoder",
        )?;
        c.require_official_detr_options()?;

        let VideoWidths { tef, feature_width: v_feat, audio, video_width } =
            c.video_widths(weights, "video_encoder.norm1.weight")?;
        let query_width = c.usize("t_feat_dim", 512)?;
        let clip_length = c.f32("clip_length", 2.0)?;
        let io = ModelIo {
            video_width,
            query_width,
            video_feature_width: if audio == 0 { v_feat } else { 0 },
            query_feature_width: query_width,
            // -1: no truncation of clips, 100 tokens (the official data loader).
            max_clips: length_limit(weights, "max_v_l", 75, usize::MAX)?,
            max_tokens: length_limit(weights, "max_q_l", 32, 100)?,
            clip_length,
            tef,
            normalize_video: !c.bool("no_norm_vfeat", false)?,
            normalize_query: !c.bool("no_norm_tfeat", false)?,
        };
        c.require(io.max_clips >= 1 && io.max_tokens >= 1, "max_v_l", "max_v_l and max_q_l must be at least 1")?;
        c.require(clip_length > 0.0, "clip_length", "must be positive")?;
        let max_ts = match c.str("dset_name", "hl")? {
            "hl" => Some(150.0),
            // The VGG setting (4096-wide video input) clamps to 360 s.
            "charadesSTA" => Some(if video_width - audio == 4096 { 360.0 } else { 150.0 }),
            _ => None,
        };
        let post = PostProcess { clip_length, max_ts, sort: !c.bool("no_sort_results", false)? };

        weights.check(&expected_keys(&cfg, video_width, query_width))?;
        // Keep only what inference reads, so the training-only tensors (the two 256 × 65,536
        // queues are 134 MB) are freed with the file and can never become graph constants.
        let ignored: Vec<&str> = weights.keys().filter(|k| training_only(k)).collect();
        let mut notices = Vec::new();
        if !ignored.is_empty() {
            let values: usize = ignored.iter().map(|k| weights.get_any(k).map_or(0, |t| t.data.len())).sum();
            let groups: Vec<&str> = TRAINING_ONLY
                .iter()
                .filter(|p| ignored.iter().any(|k| k.starts_with(*p)))
                .map(|p| p.trim_end_matches('.'))
                .collect();
            notices.push(format!(
                "ld_detr: ignored {} training-only tensors ({values} values: {}); they are not used at inference",
                ignored.len(),
                groups.join(", ")
            ));
        }
        let mut params = Params::new(&weights.filtered(|k| !training_only(k)));
        params.conv1x1_as_linear(&format!("{V2T}.cqa_linear.weight"))?;
        params.conv1x1_as_linear(&format!("{V2T}.conv1d.weight"))?;
        // (d, 1) projection vectors used as (1, d) Linear weights.
        for name in ["w4C", "w4Q", "weight"] {
            let key = format!("{V2T}.{name}");
            let t = params.get(&key)?.clone();
            params.insert(format!("{key}#row"), Tensor { shape: vec![1, cfg.hidden], data: t.data });
        }
        // Eval-mode BatchNorm folded into its convolution, once.
        for i in 0..cfg.conv_blocks {
            for n in ["1", "2"] {
                let conv = format!("{CONV}.{i}.conv{n}");
                let bn = |what: &str| params.get(&format!("{CONV}.{i}.bn{n}.{what}")).map(|t| t.data.clone());
                let w = params.get(&format!("{conv}.weight"))?.clone();
                let b = params.get(&format!("{conv}.bias"))?.data.clone();
                let (wf, bf) = fold_batchnorm(
                    &w.data,
                    Some(&b),
                    &bn("weight")?,
                    &bn("bias")?,
                    &bn("running_mean")?,
                    &bn("running_var")?,
                    BN_EPS,
                )?;
                params.insert(format!("{conv}.weight#bn"), Tensor::new(w.shape.clone(), wf));
                params.insert(format!("{conv}.bias#bn"), Tensor::new(vec![b.len()], bf));
                params.remove(&format!("{conv}.weight"));
            }
        }
        params.fold_channel_sum(&format!("{HD_HEAD}.saliency_proj"), 1.0 / (cfg.hidden as f64).sqrt())?;
        let gw = |k: &str| weights.get_any(&format!("{HD_HEAD}.gru.{k}_l0"));
        let gru = GruWeights::from_tensors(gw("weight_ih")?, gw("weight_hh")?, gw("bias_ih")?, gw("bias_hh")?)?;
        Ok(LdDetr { cfg, io, params, gru, post, notices })
    }

    /// `LN → Linear → ReLU → LN → Linear` (dropouts are identities at inference).
    fn unimodal_encoder(&self, g: &mut Graph, x: TensorId, prefix: &str) -> Result<TensorId> {
        let p = &self.params;
        let h = norm(g, p, x, &format!("{prefix}.norm1"))?;
        let h = dense(g, p, h, &format!("{prefix}.linear1"), Act::Relu)?;
        let h = norm(g, p, h, &format!("{prefix}.norm2"))?;
        dense(g, p, h, &format!("{prefix}.linear2"), Act::None)
    }

    /// V2T extractor: VSLNet context–query attention + query-pooled concat (§3.3).
    fn v2t_extractor(
        &self,
        g: &mut Graph,
        v: TensorId,
        t: TensorId,
        vmask: TensorId,
        tmask: TensorId,
    ) -> Result<TensorId> {
        let key = |name: &str| format!("{V2T}.{name}");
        let (cqa_w, cqa_b) = (key("cqa_linear.weight#linear"), key("cqa_linear.bias"));
        let (out_w, out_b) = (key("conv1d.weight#linear"), key("conv1d.bias"));
        let keys = VslKeys {
            w4c: &key("w4C#row"),
            w4q: &key("w4Q#row"),
            w4mlu: &key("w4mlu"),
            cqa: [&cqa_w, &cqa_b],
            pool: &key("weight#row"),
            out: [&out_w, &out_b],
        };
        vsl_context_query(g, &self.params, v, t, vmask, tmask, &keys)
    }

    fn encoder(
        &self,
        g: &mut Graph,
        stack: &str,
        layers: usize,
        x: TensorId,
        pos: TensorId,
        vmask: TensorId,
    ) -> Result<TensorId> {
        let mut x = x;
        for i in 0..layers {
            let prefix = format!("convolutional_fuser.{stack}.layers.{i}");
            x = encoder_layer(g, &self.params, &prefix, x, pos, vmask, HEADS)?;
        }
        Ok(x)
    }

    /// The residual blocks `σ(X + BN(Conv(σ(BN(Conv X)))))` (k = 3, BN folded at load), two
    /// dispatches each. A one-sample graph is never padded (the model pads a batch to its longest
    /// sample), so it runs the plain blocks; a batch convolves each sample's valid clips only.
    fn conv_blocks(&self, g: &mut Graph, x: TensorId, vmask: TensorId) -> Result<TensorId> {
        let p = &self.params;
        let batch = g.shape(x)[0];
        let mut x = x;
        for i in 0..self.cfg.conv_blocks {
            let w1 = p.c(g, &format!("{CONV}.{i}.conv1.weight#bn"))?;
            let b1 = p.c(g, &format!("{CONV}.{i}.conv1.bias#bn"))?;
            let w2 = p.c(g, &format!("{CONV}.{i}.conv2.weight#bn"))?;
            let b2 = p.c(g, &format!("{CONV}.{i}.conv2.bias#bn"))?;
            x = if batch == 1 {
                conv_bn_block(g, x, w1, b1, w2, b2)?
            } else {
                masked_conv_bn_block(g, x, vmask, w1, b1, w2, b2)?
            };
        }
        Ok(x)
    }

    fn decoder_spec(&self) -> DecoderSpec<'static> {
        DecoderSpec {
            prefix: DECODER,
            layers: self.cfg.dec_layers,
            heads: HEADS,
            queries: self.cfg.queries,
            anchors: "query_embed.weight",
        }
    }

    /// The loop decoder: one pass of the DAB decoder (official); with `paper_loop_decoder`,
    /// `num_decoder_loops` passes, each from the learnt anchors with the previous pass's normed
    /// last-layer output as its content queries (the first from zeros); the last pass is returned.
    fn loop_decoder(&self, g: &mut Graph, memory: TensorId, pos: TensorId, vmask: TensorId) -> Result<Decoded> {
        let spec = self.decoder_spec();
        if !self.cfg.paper_loop_decoder {
            return dab_decoder(g, &self.params, &spec, memory, pos, vmask);
        }
        let [b, _, d] = *g.shape(memory) else { unreachable!() };
        let mut tgt = g.constant(vec![0.0f32; b * spec.queries * d].into(), &[b, spec.queries, d])?;
        let mut decoded = None;
        for _ in 0..self.cfg.decoder_loops {
            let pass = dab_decoder_from(g, &self.params, &spec, tgt, memory, pos, vmask)?;
            tgt = pass.hs;
            decoded = Some(pass);
        }
        Ok(decoded.expect("at least one loop"))
    }
}

impl Architecture for LdDetr {
    fn kind(&self) -> ModelKind {
        ModelKind::LdDetr
    }

    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn prediction(&self, outputs: &Outputs, b: usize, clips: usize, video: &VideoInput) -> Prediction {
        let (logits, spans, saliency) =
            (outputs.get("pred_logits"), outputs.get("pred_spans"), outputs.get("saliency"));
        let q2 = logits.len() / (saliency.len() / clips);
        let raw = RawOutputs {
            logits: logits[b * q2..(b + 1) * q2].to_vec(),
            spans: spans[b * q2..(b + 1) * q2].to_vec(),
            saliency: saliency[b * clips..b * clips + video.clips].to_vec(),
            quality: None,
            proposals: None,
        };
        let duration = video.duration.unwrap_or(video.clips as f32 * self.io.clip_length);
        let windows = windows(&raw.logits, &raw.spans, duration, &self.post);
        Prediction { windows, saliency: raw.saliency.clone(), raw }
    }

    fn build(&self, g: &mut Graph, batch: usize, clips: usize, tokens: usize) -> Result<()> {
        let (p, cfg) = (&self.params, &self.cfg);
        let video = g.input("video", &[batch, clips, self.io.video_width]);
        let vmask = g.input("video_mask", &[batch, clips]);
        let query = g.input("query", &[batch, tokens, self.io.query_width]);
        let tmask = g.input("query_mask", &[batch, tokens]);

        // Unimodal encoders; V' also feeds the HD head.
        let v = self.unimodal_encoder(g, video, "video_encoder")?;
        let t = self.unimodal_encoder(g, query, "text_encoder")?;
        let pos = sine_position_from_mask(g, vmask, SineConfig::detr(cfg.hidden, 10000.0))?;

        // Convolutional fuser.
        let mut x = self.v2t_extractor(g, v, t, vmask, tmask)?;
        for i in 0..cfg.t2v_layers {
            // Only the text padding is masked: the official `attn_mask` (video pad AND text pad,
            // repeated over heads with a head/batch mix-up) adds nothing to that at B = 1.
            let pre = format!("convolutional_fuser.t2v_encoder.layers.{i}");
            x = t2v_layer(g, &self.params, &pre, x, t, pos, tmask, HEADS)?;
        }
        let x = self.encoder(g, "transformer_encoder1", cfg.enc1_layers, x, pos, vmask)?;
        let x = self.conv_blocks(g, x, vmask)?;
        let memory = self.encoder(g, "transformer_encoder2", cfg.enc2_layers, x, pos, vmask)?;

        let dec = self.loop_decoder(g, memory, pos, vmask)?;

        // MR head: class logits, spans refined from the anchor that entered the last layer.
        let logits = dense(g, p, dec.hs, &format!("{MR_HEAD}.class_embed"), Act::None)?;
        let s = dense(g, p, dec.hs, &format!("{MR_HEAD}.span_embed1"), Act::Relu)?;
        let s = dense(g, p, s, &format!("{MR_HEAD}.span_embed2"), Act::Relu)?;
        let delta = dense(g, p, s, &format!("{MR_HEAD}.span_embed3"), Act::None)?;
        let spans =
            binary_fused(g, Binary::Add, delta, dec.reference, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;

        // HD head: GRU over V' of the top-1 moment, M = R·w + R, channel-summed saliency_proj / √d.
        let saliency = gru_highlight_head(
            g,
            p,
            &self.gru,
            &format!("{HD_HEAD}.saliency_proj"),
            logits,
            spans,
            v,
            memory,
            vmask,
            self.io.clip_length,
        )?;
        g.output("pred_logits", logits);
        g.output("pred_spans", spans);
        g.output("saliency", saliency);
        Ok(())
    }
}

/// `max_v_l` / `max_q_l`: a positive limit, or −1 for the official loader's "no limit" value.
fn length_limit(weights: &Weights, key: &str, default: usize, unlimited: usize) -> Result<usize> {
    match weights.config().get(key).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => match v.as_i64() {
            Some(-1) => Ok(unlimited),
            Some(n) if n >= 0 => Ok(n as usize),
            _ => Err(Error::Config {
                path: weights.path.clone(),
                reason: format!("`{key}` = {v} is not a non-negative integer or -1"),
            }),
        },
    }
}

/// The official windows of one sample (ld-detr.md §5): foreground probability, (center, width) →
/// seconds with the annotated duration **clamped to `[0, duration]`** (LD-DETR's inference code,
/// unlike TR-DETR's), stable sort by score, 4-decimal formatting, then the dataset's
/// post-processor in float32: clamp to `[0, max_ts]` (where it has one) and round to multiples
/// of the clip length, half to even.
fn windows(logits: &[f32], spans: &[f32], duration: f32, pp: &PostProcess) -> Vec<Window> {
    let probs = foreground_probs(logits);
    // torch.clamp(x, 0, duration), written so a negative duration cannot panic.
    let clamp = |x: f32, hi: f32| x.max(0.0).min(hi);
    let mut rows: Vec<[f64; 3]> = spans
        .chunks_exact(2)
        .zip(&probs)
        .map(|(s, &p)| {
            let (st, ed) = ((s[0] - 0.5 * s[1]) * duration, (s[0] + 0.5 * s[1]) * duration);
            [clamp(st, duration) as f64, clamp(ed, duration) as f64, p as f64]
        })
        .collect();
    if pp.sort {
        // Stable, on the raw scores, like Python's sorted(..., reverse=True).
        rows.sort_by(|a, b| b[2].total_cmp(&a[2]));
    }
    rows.iter()
        .map(|r| {
            let r = r.map(round4);
            let snap = |x: f64| {
                let x = x as f32;
                let x = pp.max_ts.map_or(x, |hi| clamp(x, hi));
                (x / pp.clip_length).round_ties_even() * pp.clip_length
            };
            Window { start: snap(r[0]) as f64, end: snap(r[1]) as f64, score: round4(r[2] as f32 as f64) }
        })
        .collect()
}

/// Every inference key of the official state_dict with its shape (ld-detr.md §6). The
/// BatchNorm `num_batches_tracked` counters and the training-only tensors may be absent.
fn expected_keys(cfg: &LdDetrConfig, video_width: usize, query_width: usize) -> Vec<(String, Vec<usize>)> {
    type Keys = Vec<(String, Vec<usize>)>;
    fn lin(keys: &mut Keys, prefix: &str, o: usize, i: usize) {
        keys.push((format!("{prefix}.weight"), vec![o, i]));
        keys.push((format!("{prefix}.bias"), vec![o]));
    }
    fn ln(keys: &mut Keys, prefix: &str, n: usize) {
        keys.push((format!("{prefix}.weight"), vec![n]));
        keys.push((format!("{prefix}.bias"), vec![n]));
    }
    let (d, q) = (cfg.hidden, cfg.queries);
    let mut keys: Keys = Vec::new();
    for (prefix, width) in [("video_encoder", video_width), ("text_encoder", query_width)] {
        ln(&mut keys, &format!("{prefix}.norm1"), width);
        lin(&mut keys, &format!("{prefix}.linear1"), d, width);
        ln(&mut keys, &format!("{prefix}.norm2"), d);
        lin(&mut keys, &format!("{prefix}.linear2"), d, d);
    }
    for (name, shape) in [
        ("w4C", vec![d, 1]),
        ("w4Q", vec![d, 1]),
        ("w4mlu", vec![1, 1, d]),
        ("weight", vec![d, 1]),
        ("cqa_linear.weight", vec![d, 4 * d, 1]),
        ("cqa_linear.bias", vec![d]),
        ("conv1d.weight", vec![d, 2 * d, 1]),
        ("conv1d.bias", vec![d]),
    ] {
        keys.push((format!("{V2T}.{name}"), shape));
    }
    for (stack, layers) in [
        ("t2v_encoder", cfg.t2v_layers),
        ("transformer_encoder1", cfg.enc1_layers),
        ("transformer_encoder2", cfg.enc2_layers),
    ] {
        for i in 0..layers {
            let pre = format!("convolutional_fuser.{stack}.layers.{i}");
            keys.push((format!("{pre}.self_attn.in_proj_weight"), vec![3 * d, d]));
            keys.push((format!("{pre}.self_attn.in_proj_bias"), vec![3 * d]));
            lin(&mut keys, &format!("{pre}.self_attn.out_proj"), d, d);
            lin(&mut keys, &format!("{pre}.linear1"), FFN, d);
            lin(&mut keys, &format!("{pre}.linear2"), d, FFN);
            ln(&mut keys, &format!("{pre}.norm1"), d);
            ln(&mut keys, &format!("{pre}.norm2"), d);
            keys.push((format!("{pre}.activation.weight"), vec![1]));
        }
    }
    for i in 0..cfg.conv_blocks {
        for n in ["1", "2"] {
            keys.push((format!("{CONV}.{i}.conv{n}.weight"), vec![d, d, 3]));
            keys.push((format!("{CONV}.{i}.conv{n}.bias"), vec![d]));
            for what in ["weight", "bias", "running_mean", "running_var"] {
                keys.push((format!("{CONV}.{i}.bn{n}.{what}"), vec![d]));
            }
        }
    }
    keys.push(("query_embed.weight".into(), vec![q, 2]));
    dab_decoder_keys(&mut keys, DECODER, cfg.dec_layers, d, FFN);
    lin(&mut keys, &format!("{MR_HEAD}.class_embed"), 2, d);
    lin(&mut keys, &format!("{MR_HEAD}.span_embed1"), d, d);
    lin(&mut keys, &format!("{MR_HEAD}.span_embed2"), d, d);
    lin(&mut keys, &format!("{MR_HEAD}.span_embed3"), 2, d);
    for (k, shape) in [
        ("weight_ih_l0", vec![3 * d, d]),
        ("weight_hh_l0", vec![3 * d, d]),
        ("bias_ih_l0", vec![3 * d]),
        ("bias_hh_l0", vec![3 * d]),
    ] {
        keys.push((format!("{HD_HEAD}.gru.{k}"), shape));
    }
    lin(&mut keys, &format!("{HD_HEAD}.saliency_proj"), d, d);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_clamp_to_the_duration_before_formatting() {
        let pp = PostProcess { clip_length: 2.0, max_ts: Some(150.0), sort: true };
        // ld_detr_ref.py selftest: duration 126; query 2 = 88.2..138.6 → clamped to 126 → 88, 126.
        let logits = [2.0, 0.0, 0.0, 0.0, 3.0, 0.0, -1.0, 0.0];
        let spans = [0.5, 0.2, 0.05, 0.3, 0.9, 0.4, 0.4, 0.0];
        let w = windows(&logits, &spans, 126.0, &pp);
        let got: Vec<[f64; 3]> = w.iter().map(|w| [w.start, w.end, w.score]).collect();
        assert_eq!(got, [[88.0, 126.0, 0.9526], [50.0, 76.0, 0.8808], [0.0, 26.0, 0.5], [50.0, 50.0, 0.2689]]);
        // Charades (1-s clips): 0.9·30.5 ± 0.2·30.5 = 21.35..30.5 → 21, 30 (30.5 rounds to even).
        let pp = PostProcess { clip_length: 1.0, max_ts: Some(150.0), sort: true };
        let w = windows(&logits, &spans, 30.5, &pp);
        assert_eq!((w[0].start, w[0].end), (21.0, 30.0));
    }

    #[test]
    fn training_only_prefixes() {
        assert!(training_only("distill_align.vid_queue"));
        assert!(training_only("momentum_video_encoder.linear1.weight"));
        assert!(training_only("txt_position_embed.LayerNorm.bias"));
        assert!(!training_only("video_encoder.linear1.weight"));
        assert!(!training_only(&format!("{CONV}.0.bn1.num_batches_tracked")));
    }

    /// `expected_keys` lists exactly the 279 inference tensors of the default config minus the
    /// 10 BatchNorm counters (ld-detr.md §6).
    #[test]
    fn expected_keys_count_the_inference_tensors() {
        let cfg = LdDetrConfig {
            hidden: 256,
            queries: 10,
            t2v_layers: 2,
            enc1_layers: 2,
            conv_blocks: 5,
            enc2_layers: 2,
            dec_layers: 2,
            decoder_loops: 3,
            paper_loop_decoder: false,
        };
        let keys = expected_keys(&cfg, 2818, 512);
        assert_eq!(keys.len(), 279 - 10);
        let numbers: usize = keys.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        // 11,858,481 inference numbers, of which the 10 counters are one each.
        assert_eq!(numbers, 11_858_481 - 10);
        let unique: std::collections::HashSet<_> = keys.iter().map(|(k, _)| k).collect();
        assert_eq!(unique.len(), keys.len());
    }
}
