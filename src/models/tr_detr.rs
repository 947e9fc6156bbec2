//! TR-DETR (Sun et al., AAAI 2024) as a graph builder, following its block diagram
//! (specs: tr-detr.md):
//!
//! input projections → VSLNet visual refinement (fuser) → text-to-video encoder → encoder →
//! HD2MR (saliency-weighted re-encoding with the same encoder) → DAB decoder → MR heads →
//! MR2HD (GRU over the top-1 moment) → saliency.
//!
//! Padded batches give each sample its B = 1 result: the HD2MR softmax skips padded clips and
//! MR2HD uses each sample's own clip count (the official batched code mixes samples, §4).

use super::blocks::{
    dab_decoder, dab_decoder_keys, dense, encoder_layer, gru_highlight_head, input_projection, mlp, t2v_layer,
    vsl_context_query, DecoderSpec, Params, VslKeys,
};
use super::config::{Config, VideoWidths};
use super::postprocess::PostProcess;
use super::{detr_prediction, Architecture, ModelIo, ModelKind, Prediction, VideoInput};
use crate::error::Result;
use crate::graph::{Graph, Outputs, TensorId};
use crate::ops::elementwise::{add, binary_fused, mul, Binary, Unary};
use crate::ops::gru::GruWeights;
use crate::ops::matmul::linear;
use crate::ops::position::{sine_position_from_mask, SineConfig};
use crate::ops::softmax::{softmax, MaskMode};
use crate::ops::Act;
use crate::weights::{Tensor, Weights};

/// The official options TR-DETR's forward depends on (tr-detr.md §1.1), with their defaults.
#[derive(Clone, Debug)]
struct TrDetrConfig {
    hidden: usize,
    heads: usize,
    enc_layers: usize,
    dec_layers: usize,
    ffn: usize,
    queries: usize,
    n_input_proj: usize,
}

pub(crate) struct TrDetr {
    cfg: TrDetrConfig,
    io: ModelIo,
    params: Params,
    gru: GruWeights,
    sort_results: bool,
}

impl TrDetr {
    pub fn new(weights: &Weights) -> Result<TrDetr> {
        let path = weights.path.as_path();
        let c = Config::new(path, weights.config())?;
        let cfg = TrDetrConfig {
            hidden: c.usize("hidden_dim", 256)?,
            heads: c.usize("nheads", 8)?,
            enc_layers: c.usize("enc_layers", 2)?,
            dec_layers: c.usize("dec_layers", 2)?,
            ffn: c.usize("dim_feedforward", 1024)?,
            queries: c.usize("num_queries", 10)?,
            n_input_proj: c.usize("n_input_proj", 2)?,
        };
        c.require(cfg.hidden == 256, "hidden_dim", "must be 256 (the decoder's anchor sine embedding is 2 × 128)")?;
        c.require(cfg.heads > 0 && cfg.hidden % cfg.heads == 0, "nheads", "must divide hidden_dim")?;
        c.require((1..=3).contains(&cfg.n_input_proj), "n_input_proj", "must be 1, 2 or 3")?;
        c.require(cfg.dec_layers >= 1 && cfg.queries >= 1, "dec_layers", "need at least one decoder layer and query")?;
        c.require(!c.bool("pre_norm", false)?, "pre_norm", "pre-norm TR-DETR is not an official configuration")?;
        c.require_official_detr_options()?;

        let VideoWidths { tef, feature_width: v_feat, audio, video_width } =
            c.video_widths(weights, "input_vid_proj.0.LayerNorm.weight")?;
        let query_width = c.usize("t_feat_dim", 512)?;
        let io = ModelIo {
            video_width,
            query_width,
            video_feature_width: if audio == 0 { v_feat } else { 0 },
            query_feature_width: query_width,
            max_clips: c.usize("max_v_l", 75)?,
            max_tokens: c.usize("max_q_l", 32)?,
            clip_length: c.f32("clip_length", 2.0)?,
            tef,
            normalize_video: !c.bool("no_norm_vfeat", false)?,
            normalize_query: !c.bool("no_norm_tfeat", false)?,
        };
        c.require(io.max_clips >= 1 && io.max_tokens >= 1, "max_v_l", "max_v_l and max_q_l must be at least 1")?;

        weights.check(&expected_keys(&cfg, video_width, query_width))?;
        let mut params = Params::new(weights);
        params.conv1x1_as_linear("fuser.cq_attention.cqa_linear.conv1d.weight")?;
        params.conv1x1_as_linear("fuser.cq_concat.conv1d.conv1d.weight")?;
        // (d, 1) projection vectors used as (1, d) Linear weights.
        for key in ["fuser.cq_attention.w4C", "fuser.cq_attention.w4Q", "fuser.cq_concat.weighted_pool.weight"] {
            let t = params.get(key)?.clone();
            params.insert(format!("{key}#row"), Tensor { shape: vec![1, cfg.hidden], data: t.data });
        }
        params.fold_channel_sum("saliency_proj1", 1.0 / (cfg.hidden as f64).sqrt())?;
        let gw = |k: &str| weights.get_any(&format!("gru_extractor.gru.{k}_l0"));
        let gru = GruWeights::from_tensors(gw("weight_ih")?, gw("weight_hh")?, gw("bias_ih")?, gw("bias_hh")?)?;
        Ok(TrDetr { cfg, io, params, gru, sort_results: !c.bool("no_sort_results", false)? })
    }

    /// VSLNet context–query attention + query-pooled concat (tr-detr.md §3.2).
    fn fuser(&self, g: &mut Graph, v: TensorId, t: TensorId, vmask: TensorId, tmask: TensorId) -> Result<TensorId> {
        let keys = VslKeys {
            w4c: "fuser.cq_attention.w4C#row",
            w4q: "fuser.cq_attention.w4Q#row",
            w4mlu: "fuser.cq_attention.w4mlu",
            cqa: ["fuser.cq_attention.cqa_linear.conv1d.weight#linear", "fuser.cq_attention.cqa_linear.conv1d.bias"],
            pool: "fuser.cq_concat.weighted_pool.weight#row",
            out: ["fuser.cq_concat.conv1d.conv1d.weight#linear", "fuser.cq_concat.conv1d.conv1d.bias"],
        };
        vsl_context_query(g, &self.params, v, t, vmask, tmask, &keys)
    }

    fn encoder(&self, g: &mut Graph, x: TensorId, pos: TensorId, vmask: TensorId) -> Result<TensorId> {
        let mut x = x;
        for i in 0..self.cfg.enc_layers {
            x = encoder_layer(
                g,
                &self.params,
                &format!("transformer.encoder.layers.{i}"),
                x,
                pos,
                vmask,
                self.cfg.heads,
            )?;
        }
        Ok(x)
    }
}

impl Architecture for TrDetr {
    fn kind(&self) -> ModelKind {
        ModelKind::TrDetr
    }

    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn prediction(&self, outputs: &Outputs, b: usize, clips: usize, video: &VideoInput) -> Prediction {
        let pp = PostProcess { sort: self.sort_results, ..PostProcess::default() };
        detr_prediction(outputs, b, clips, video, &self.io, &pp)
    }

    fn build(&self, g: &mut Graph, batch: usize, clips: usize, tokens: usize) -> Result<()> {
        let (p, cfg) = (&self.params, &self.cfg);
        let d = cfg.hidden;
        let video = g.input("video", &[batch, clips, self.io.video_width]);
        let vmask = g.input("video_mask", &[batch, clips]);
        let query = g.input("query", &[batch, tokens, self.io.query_width]);
        let tmask = g.input("query_mask", &[batch, tokens]);

        let v = input_projection(g, p, video, "input_vid_proj", cfg.n_input_proj)?;
        let t = input_projection(g, p, query, "input_txt_proj", cfg.n_input_proj)?;
        let vf = self.fuser(g, v, t, vmask, tmask)?;
        let pos = sine_position_from_mask(g, vmask, SineConfig::detr(d, 10000.0))?;

        let mut s_t2v = vf;
        for i in 0..cfg.enc_layers {
            let pre = format!("transformer.t2v_encoder.layers.{i}");
            s_t2v = t2v_layer(g, &self.params, &pre, s_t2v, t, pos, tmask, self.cfg.heads)?;
        }
        let m1 = self.encoder(g, s_t2v, pos, vmask)?;

        // HD2MR: softmax over clips of the saliency of M1 re-weights the T2V output.
        let w = p.c(g, "saliency_proj1.weight#sum")?;
        let bias = p.c(g, "saliency_proj1.bias#sum")?;
        let h0 = linear(g, m1, w, Some(bias), Act::None)?;
        let h0 = g.reshape(h0, &[batch, 1, clips])?;
        let weights = softmax(g, h0, Some(vmask), MaskMode::Skip, 1.0)?;
        let weights = g.reshape(weights, &[batch, clips, 1])?;
        let weighted = mul(g, s_t2v, weights)?;
        let m2_in = add(g, m1, weighted)?;
        let m2 = self.encoder(g, m2_in, pos, vmask)?;

        let spec = DecoderSpec {
            prefix: "transformer.decoder",
            layers: cfg.dec_layers,
            heads: cfg.heads,
            queries: cfg.queries,
            anchors: "query_embed.weight",
        };
        let dec = dab_decoder(g, p, &spec, m2, pos, vmask)?;
        let logits = dense(g, p, dec.hs, "class_embed", Act::None)?;
        let delta = mlp(g, p, dec.hs, "span_embed", 3, Act::None)?;
        let spans =
            binary_fused(g, Binary::Add, delta, dec.reference, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;

        let saliency =
            gru_highlight_head(g, p, &self.gru, "saliency_proj1", logits, spans, v, m2, vmask, self.io.clip_length)?;
        g.output("pred_logits", logits);
        g.output("pred_spans", spans);
        g.output("saliency", saliency);
        Ok(())
    }
}

/// Every inference key of the official state_dict with its shape (tr-detr.md §6);
/// `txt_position_embed.*` is training-only and may be absent.
fn expected_keys(cfg: &TrDetrConfig, video_width: usize, query_width: usize) -> Vec<(String, Vec<usize>)> {
    let (d, f, q) = (cfg.hidden, cfg.ffn, cfg.queries);
    let mut keys: Vec<(String, Vec<usize>)> = Vec::new();
    let lin = |keys: &mut Vec<(String, Vec<usize>)>, prefix: String, o: usize, i: usize| {
        keys.push((format!("{prefix}.weight"), vec![o, i]));
        keys.push((format!("{prefix}.bias"), vec![o]));
    };
    let ln = |keys: &mut Vec<(String, Vec<usize>)>, prefix: String, n: usize| {
        keys.push((format!("{prefix}.weight"), vec![n]));
        keys.push((format!("{prefix}.bias"), vec![n]));
    };
    for stack in ["t2v_encoder", "encoder"] {
        for i in 0..cfg.enc_layers {
            let pre = format!("transformer.{stack}.layers.{i}");
            keys.push((format!("{pre}.self_attn.in_proj_weight"), vec![3 * d, d]));
            keys.push((format!("{pre}.self_attn.in_proj_bias"), vec![3 * d]));
            lin(&mut keys, format!("{pre}.self_attn.out_proj"), d, d);
            lin(&mut keys, format!("{pre}.linear1"), f, d);
            lin(&mut keys, format!("{pre}.linear2"), d, f);
            ln(&mut keys, format!("{pre}.norm1"), d);
            ln(&mut keys, format!("{pre}.norm2"), d);
            keys.push((format!("{pre}.activation.weight"), vec![1]));
        }
    }
    dab_decoder_keys(&mut keys, "transformer.decoder", cfg.dec_layers, d, f);
    for (i, io) in [d, d, d, 2].windows(2).enumerate() {
        lin(&mut keys, format!("span_embed.layers.{i}"), io[1], io[0]);
    }
    lin(&mut keys, "class_embed".into(), 2, d);
    keys.push(("query_embed.weight".into(), vec![q, 2]));
    for (prefix, width) in [("input_txt_proj", query_width), ("input_vid_proj", video_width)] {
        for k in 0..cfg.n_input_proj {
            let input = if k == 0 { width } else { d };
            ln(&mut keys, format!("{prefix}.{k}.LayerNorm"), input);
            lin(&mut keys, format!("{prefix}.{k}.net.1"), d, input);
        }
    }
    lin(&mut keys, "saliency_proj1".into(), d, d);
    keys.push(("fuser.cq_attention.w4C".into(), vec![d, 1]));
    keys.push(("fuser.cq_attention.w4Q".into(), vec![d, 1]));
    keys.push(("fuser.cq_attention.w4mlu".into(), vec![1, 1, d]));
    keys.push(("fuser.cq_attention.cqa_linear.conv1d.weight".into(), vec![d, 4 * d, 1]));
    keys.push(("fuser.cq_attention.cqa_linear.conv1d.bias".into(), vec![d]));
    keys.push(("fuser.cq_concat.weighted_pool.weight".into(), vec![d, 1]));
    keys.push(("fuser.cq_concat.conv1d.conv1d.weight".into(), vec![d, 2 * d, 1]));
    keys.push(("fuser.cq_concat.conv1d.conv1d.bias".into(), vec![d]));
    for (k, shape) in [
        ("weight_ih_l0", vec![3 * d, d]),
        ("weight_hh_l0", vec![3 * d, d]),
        ("bias_ih_l0", vec![3 * d]),
        ("bias_hh_l0", vec![3 * d]),
    ] {
        keys.push((format!("gru_extractor.gru.{k}"), shape));
    }
    keys
}
