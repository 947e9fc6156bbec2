//! VideoLights (Paul et al., arXiv 2412.01558) as a graph builder, following its block diagram
//! (spec: videolights.md):
//!
//! convolutional (1×1) input projections → FRA (feature refinement & alignment, video only) →
//! Bi-CMF (bi-directional cross-modal fusion, video stream only) → `[global token; video]`
//! encoder → DAB-style decoder → MR heads, and saliency = ⟨proj1(memory), proj2(global)⟩ / √d.
//!
//! Both official feature sets load: VideoLights-B (SlowFast ‖ CLIP ‖ BLIP-2 video + TEF = 3586,
//! CLIP ‖ BLIP-2 text = 1280) and VideoLights (SlowFast ‖ CLIP + TEF = 2818, CLIP text = 512); the
//! widths come from the weights. The official data loader is the Moment-DETR one (each source
//! L2-normalised on its own, all cut to the shortest, concatenated along channels, TEF last), so
//! the default `video_from_sources` / `query_from_sources` apply; only the text normalisation is
//! switched by the *video* flag `no_norm_vfeat` (§2.2).
//!
//! Padded batches give each sample its B = 1 result: the official Bi-CMF passes a per-sample
//! `attn_mask` whose `repeat(H, 1, 1)` layout mixes samples (§6.1); here every attention masks
//! only its own sample's padded keys, which is what the official code computes for B = 1.

use std::collections::HashSet;

use super::blocks::{
    dab_decoder, dab_decoder_keys, dense, dense_residual, encoder_layer, mlp, norm, prelu, DecoderSpec, Params,
};
use super::config::Config;
use super::postprocess::PostProcess;
use super::{detr_prediction, Architecture, ModelIo, ModelKind, Prediction, VideoInput};
use crate::error::Result;
use crate::graph::{Graph, Outputs, TensorId};
use crate::ops::attention::{attention, Cols};
use crate::ops::elementwise::{add, binary_fused, mul, Binary, Unary};
use crate::ops::layout::{concat, select, slice};
use crate::ops::matmul::{linear, matmul};
use crate::ops::norm::{l2_normalize, L2Mode};
use crate::ops::position::{sine_position_from_mask, SineConfig};
use crate::ops::softmax::{softmax, MaskMode};
use crate::ops::Act;
use crate::weights::{Tensor, Weights};

/// The official options VideoLights' forward depends on (videolights.md §4.2).
#[derive(Clone, Debug)]
struct VideoLightsConfig {
    hidden: usize,
    heads: usize,
    bicmf_layers: usize,
    enc_layers: usize,
    dec_layers: usize,
    ffn: usize,
    queries: usize,
    n_input_proj: usize,
}

pub(crate) struct VideoLights {
    cfg: VideoLightsConfig,
    io: ModelIo,
    params: Params,
    post: PostProcess,
    notices: Vec<String>,
}

/// FRA's `log(vid_mask + 1e-45)` in float32: 0 for a valid clip; for a padded clip 1e-45 is the
/// denormal 2^-149 and the log is −103.27893 (§3.3, quirk 6.2.3). Only padded rows see it.
fn padded_clip_log() -> f32 {
    (f32::from_bits(1) as f64).ln() as f32
}

/// Number of layers `<prefix>.{i}.*` present in the weights (highest index + 1).
fn layers_in(weights: &Weights, prefix: &str) -> usize {
    let stem = format!("{prefix}.");
    weights
        .keys()
        .filter_map(|k| k.strip_prefix(&stem)?.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

impl VideoLights {
    pub fn new(weights: &Weights) -> Result<VideoLights> {
        let path = weights.path.as_path();
        let c = Config::new(path, weights.config())?;
        // Layer counts: the config's when given (opt.json always has them), else the weights' key
        // indices (§4.1). A file with more layers than the config names is refused rather than
        // run with layers left out.
        let layers = |key: &str, prefix: &str| -> Result<usize> {
            let present = layers_in(weights, prefix);
            let n = c.opt_usize(key)?.unwrap_or(present);
            c.require(present <= n, key, &format!("is {n}, but the weights hold {present} layers `{prefix}.*`"))?;
            Ok(n)
        };
        let cfg = VideoLightsConfig {
            hidden: c.usize("hidden_dim", 256)?,
            heads: c.usize("nheads", 8)?,
            bicmf_layers: layers("bicmf_layers", "transformer.t2v_encoder.layers")?,
            enc_layers: layers("enc_layers", "transformer.encoder.layers")?,
            dec_layers: layers("dec_layers", "transformer.decoder.layers")?,
            ffn: c.usize("dim_feedforward", 1024)?,
            queries: c.usize("num_queries", 10)?,
            n_input_proj: c.usize("n_input_proj", 2)?,
        };
        c.require(cfg.hidden == 256, "hidden_dim", "must be 256 (the decoder's anchor sine embedding is 2 × 128)")?;
        c.require(cfg.heads > 0 && cfg.hidden.is_multiple_of(cfg.heads), "nheads", "must divide hidden_dim")?;
        c.require((1..=3).contains(&cfg.n_input_proj), "n_input_proj", "must be 1, 2 or 3")?;
        c.require(cfg.dec_layers >= 1 && cfg.queries >= 1, "dec_layers", "need at least one decoder layer and query")?;
        c.require(!c.bool("pre_norm", false)?, "pre_norm", "pre-norm VideoLights is not an official configuration")?;
        c.require_official_detr_options()?;
        c.require(c.usize("a_feat_dim", 0)? == 0, "a_feat_dim", "audio features are not supported")?;
        let ctx_mode = c.str("ctx_mode", "video_tef")?;
        c.require(ctx_mode.contains("video"), "ctx_mode", "must contain `video`")?;
        let tef = ctx_mode.contains("tef");

        // Input widths: the weights decide (§4.1). opt.json counts v_feat_dim without the TEF,
        // the checkpoint's pickled options with it; t_feat_dim defaults to the weights' width.
        let first_video = weights.get_any("input_vid_proj.0.LayerNorm.weight")?.shape.clone();
        let first_text = weights.get_any("input_txt_proj.0.LayerNorm.weight")?.shape.clone();
        let tef_width = if tef { 2 } else { 0 };
        let mut v_feat = c.usize("v_feat_dim", first_video[0].saturating_sub(tef_width))?;
        if tef && v_feat >= 2 && first_video == [v_feat] {
            v_feat -= 2;
        }
        let video_width = v_feat + tef_width;
        let query_width = c.usize("t_feat_dim", first_text[0])?;
        let no_norm = c.bool("no_norm_vfeat", false)?;
        let io = ModelIo {
            video_width,
            query_width,
            video_feature_width: v_feat,
            query_feature_width: query_width,
            max_clips: c.usize("max_v_l", 75)?,
            max_tokens: c.usize("max_q_l", 32)?,
            clip_length: c.f32("clip_length", 2.0)?,
            tef,
            normalize_video: !no_norm,
            // The official loader normalises the text under the VIDEO flag (`no_norm_tfeat` is
            // parsed but unused, §2.2).
            normalize_query: !no_norm,
        };
        c.require(io.max_clips >= 1 && io.max_tokens >= 1, "max_v_l", "max_v_l and max_q_l must be at least 1")?;
        c.require(io.clip_length > 0.0, "clip_length", "must be positive")?;

        let expected = expected_keys(&cfg, video_width, query_width);
        weights.check(&expected)?;
        let mut notices = Vec::new();
        let known: HashSet<String> = expected.iter().map(|(k, _)| k.clone()).collect();
        let unknown: Vec<&str> = weights.keys().filter(|k| !known.contains(*k) && !training_only(k)).collect();
        if !unknown.is_empty() {
            notices.push(format!(
                "{} tensors of {} are not VideoLights inference keys and were ignored: {}",
                unknown.len(),
                path.display(),
                unknown.iter().take(5).copied().collect::<Vec<_>>().join(", ")
                    + if unknown.len() > 5 { ", …" } else { "" }
            ));
        }

        // §5: the post-processing follows `dset_name`.
        let dset = c.str("dset_name", "hl")?;
        let max_ts = match dset {
            "hl" => 150.0,
            "charadesSTA" if v_feat == 4096 => 360.0,
            "charadesSTA" => 150.0,
            "tvsum" | "youtube_uni" => {
                notices.push(format!(
                    "dset_name `{dset}` is highlight-only: the official code writes no moment predictions (only \
                     saliency scores are meaningful)"
                ));
                150.0
            }
            other => {
                notices.push(format!(
                    "dset_name `{other}`: windows are rounded to the {}-s clip grid and kept ≥ 0 s (the official \
                     post-processing applies no clamp for this dataset)",
                    io.clip_length
                ));
                f32::INFINITY
            }
        };
        if matches!(dset, "charadesSTA" | "tacos" | "nlq") {
            notices.push(format!(
                "dset_name `{dset}`: the official prediction records have no `pred_saliency_scores`; moment's records \
                 keep them"
            ));
        }
        let post = PostProcess { clip_length: io.clip_length, max_ts, sort: !c.bool("no_sort_results", false)? };

        let d = cfg.hidden;
        let mut params = Params::new(weights);
        for i in 0..cfg.bicmf_layers {
            // Bi-CMF's output is `norm4(f + dropout(f))` = LN(2f) in eval: doubling the last
            // Linear is exact in float (a power of two), so `linear5#doubled` gives 2f directly.
            let pre = format!("transformer.t2v_encoder.layers.{i}.linear5");
            for part in ["weight", "bias"] {
                let t = params.get(&format!("{pre}.{part}"))?.clone();
                let doubled: Vec<f32> = t.data.iter().map(|x| 2.0 * x).collect();
                params.insert(format!("{pre}#doubled.{part}"), Tensor::new(t.shape.clone(), doubled));
                params.remove(&format!("{pre}.{part}"));
            }
        }
        for stream in ["input_vid_proj", "input_txt_proj"] {
            for k in 0..cfg.n_input_proj {
                params.conv1x1_as_linear(&format!("{stream}.{k}.net.1.conv1d.weight"))?;
            }
        }
        let fra = "feature_refinement";
        params.conv1x1_as_linear(&format!("{fra}.mixer.conv1d.weight"))?;
        // (d, 1) column vectors used as a (1, d) Linear weight and as a (d) row.
        let pool = params.get(&format!("{fra}.word_to_sentence_pool.weight"))?.clone();
        params.insert(format!("{fra}.word_to_sentence_pool.weight#row"), Tensor { shape: vec![1, d], data: pool.data });
        let sim_w = params.get(&format!("{fra}.sim_w"))?.clone();
        params.insert(format!("{fra}.sim_w#row"), Tensor { shape: vec![d], data: sim_w.data });
        // The correlation branch: Σ_n softmax_n(S)[n, l] · (cor_v_w · cor_q_w) is the same row for
        // every clip, since the softmax over words sums to 1 (§3.3; quirk 6.2.2).
        let cor_v = params.get(&format!("{fra}.cor_v_w"))?.clone();
        let cor_q = params.get(&format!("{fra}.cor_q_w"))?.data[0];
        let cor: Vec<f32> = cor_v.data.iter().map(|&x| x * cor_q).collect();
        params.insert(format!("{fra}.correlation#row"), Tensor::new(vec![1, 1, d], cor));
        for key in ["global_rep_token", "global_rep_pos"] {
            let t = params.get(key)?.clone();
            params.insert(format!("{key}#token"), Tensor { shape: vec![1, 1, d], data: t.data });
        }
        params.insert("global_rep_token#mask".into(), Tensor::new(vec![1, 1], vec![1.0]));
        // Saliency `Σ_c proj1(m)_c · proj2(g)_c / √256`: the 1/16 is folded (exactly) into proj2.
        let scale = 1.0 / (d as f32).sqrt();
        for part in ["weight", "bias"] {
            let t = params.get(&format!("saliency_proj2.{part}"))?.clone();
            let scaled: Vec<f32> = t.data.iter().map(|x| x * scale).collect();
            params.insert(format!("saliency_proj2#scaled.{part}"), Tensor::new(t.shape.clone(), scaled));
        }
        Ok(VideoLights { cfg, io, params, post, notices })
    }

    /// `ConvLinearLayer` stack (§3.2): n × [LayerNorm → 1×1 Conv1d (= per-clip Linear) → ReLU],
    /// no ReLU after the last layer.
    fn conv_projection(&self, g: &mut Graph, x: TensorId, prefix: &str) -> Result<TensorId> {
        let p = &self.params;
        let n = self.cfg.n_input_proj;
        let mut x = x;
        for k in 0..n {
            x = norm(g, p, x, &format!("{prefix}.{k}.LayerNorm"))?;
            let w = p.linear_weight(g, &format!("{prefix}.{k}.net.1.conv1d.weight#linear"))?;
            let b = p.c(g, &format!("{prefix}.{k}.net.1.conv1d.bias"))?;
            x = linear(g, x, w, Some(b), if k + 1 < n { Act::Relu } else { Act::None })?;
        }
        Ok(x)
    }

    /// FRA (§3.3): the refined video `ReLU(mixer([v, sim·sim_w, sentence, correlation]))`; it
    /// replaces v (no residual).
    fn feature_refinement(
        &self,
        g: &mut Graph,
        v: TensorId,
        t: TensorId,
        vmask: TensorId,
        tmask: TensorId,
    ) -> Result<TensorId> {
        let p = &self.params;
        let [b, l, _] = *g.shape(v) else { unreachable!() };
        let n = g.shape(t)[1];
        let fra = "feature_refinement";
        // Sentence feature: softmax over the valid words of t · w_pool (masked words get −1e30).
        let w_pool = p.c(g, &format!("{fra}.word_to_sentence_pool.weight#row"))?;
        let alpha = linear(g, t, w_pool, None, Act::None)?;
        let alpha = g.reshape(alpha, &[b, 1, n])?;
        let alpha = softmax(g, alpha, Some(tmask), MaskMode::Additive(-1e30), 1.0)?;
        let sentence = matmul(g, alpha, t, false)?; // (B, 1, d)
                                                    // Clip–sentence cosine similarity (torch eps 1e-8 per norm) + log(vid_mask + 1e-45).
        let v_unit = l2_normalize(g, v, 1e-8, L2Mode::MaxEps)?;
        let s_unit = l2_normalize(g, sentence, 1e-8, L2Mode::MaxEps)?;
        let cos = matmul(g, v_unit, s_unit, true)?; // (B, L, 1)
        let mask = g.reshape(vmask, &[b, l, 1])?;
        let pad = padded_clip_log();
        let sim =
            binary_fused(g, Binary::Add, cos, mask, Unary::ScaleShift { scale: -pad, shift: pad }, Unary::Identity)?;
        let sim_w = p.c(g, &format!("{fra}.sim_w#row"))?;
        let sim_feat = mul(g, sim, sim_w)?; // (B, L, d)
        let correlation = p.c(g, &format!("{fra}.correlation#row"))?; // (1, 1, d), every clip
        let x = concat(g, &[v, sim_feat, sentence, correlation], 2)?; // sentence broadcast over clips
        let w = p.linear_weight(g, &format!("{fra}.mixer.conv1d.weight#linear"))?;
        let bias = p.c(g, &format!("{fra}.mixer.conv1d.bias"))?;
        linear(g, x, w, Some(bias), Act::Relu)
    }

    /// `nn.MultiheadAttention(q, k, v)` with its packed in_proj and out_proj, no residual.
    /// `k_in == v_in` reads the fused `#kv` projection.
    #[allow(clippy::too_many_arguments)]
    fn mha(
        &self,
        g: &mut Graph,
        prefix: &str,
        q_in: TensorId,
        k_in: TensorId,
        v_in: TensorId,
        key_mask: TensorId,
    ) -> Result<TensorId> {
        let p = &self.params;
        let d = self.cfg.hidden;
        let proj = |g: &mut Graph, x: TensorId, which: &str| -> Result<TensorId> {
            let w = p.linear_weight(g, &format!("{prefix}.in_proj_weight#{which}"))?;
            let b = p.c(g, &format!("{prefix}.in_proj_bias#{which}"))?;
            linear(g, x, w, Some(b), Act::None)
        };
        let q = proj(g, q_in, "q")?;
        let (k, v) = if k_in == v_in {
            let kv = proj(g, k_in, "kv")?;
            (Cols::new(kv, 0, d), Cols::new(kv, d, d))
        } else {
            let k = proj(g, k_in, "k")?;
            let v = proj(g, v_in, "v")?;
            (Cols::all(g, k), Cols::all(g, v))
        };
        let heads = self.cfg.heads;
        let scale = ((d / heads) as f32).powf(-0.5);
        let a = attention(g, Cols::all(g, q), k, v, Some(key_mask), heads, scale)?;
        dense(g, p, a, &format!("{prefix}.out_proj"), Act::None)
    }

    /// One Bi-CMF layer (§3.5): video ← text, text ← video, refined video ← refined text, then
    /// `LN(2f)` of the PReLU FFN. Only the video stream leaves the layer.
    #[allow(clippy::too_many_arguments)]
    fn bicmf_layer(
        &self,
        g: &mut Graph,
        i: usize,
        v: TensorId,
        t: TensorId,
        pos: TensorId,
        vmask: TensorId,
        tmask: TensorId,
    ) -> Result<TensorId> {
        let p = &self.params;
        let pre = format!("transformer.t2v_encoder.layers.{i}");
        let vq = add(g, v, pos)?;
        let a1 = self.mha(g, &format!("{pre}.cross_attn_1"), vq, t, t, tmask)?;
        let v1 = dense_residual(g, p, a1, &format!("{pre}.linear1"), Act::None, v)?;
        let v1 = norm(g, p, v1, &format!("{pre}.norm1"))?;
        let a2 = self.mha(g, &format!("{pre}.cross_attn_2"), t, vq, v, vmask)?;
        let t1 = dense_residual(g, p, a2, &format!("{pre}.linear2"), Act::None, t)?; // not normalised
        let a3 = self.mha(g, &format!("{pre}.cross_attn_3"), v1, t1, t1, tmask)?;
        let v2 = dense_residual(g, p, a3, &format!("{pre}.linear3"), Act::None, v1)?;
        let v2 = norm(g, p, v2, &format!("{pre}.norm3"))?;
        let act = prelu(g, p, &pre)?;
        let h = dense(g, p, v2, &format!("{pre}.linear4"), act)?;
        let f2 = dense(g, p, h, &format!("{pre}.linear5#doubled"), Act::None)?; // f + f
        norm(g, p, f2, &format!("{pre}.norm4"))
    }
}

impl Architecture for VideoLights {
    fn kind(&self) -> ModelKind {
        ModelKind::VideoLights
    }

    fn io(&self) -> &ModelIo {
        &self.io
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn prediction(&self, outputs: &Outputs, b: usize, clips: usize, video: &VideoInput) -> Prediction {
        detr_prediction(outputs, b, clips, video, &self.io, &self.post)
    }

    fn build(&self, g: &mut Graph, batch: usize, clips: usize, tokens: usize) -> Result<()> {
        let (p, cfg) = (&self.params, &self.cfg);
        let d = cfg.hidden;
        let video = g.input("video", &[batch, clips, self.io.video_width]);
        let vmask = g.input("video_mask", &[batch, clips]);
        let query = g.input("query", &[batch, tokens, self.io.query_width]);
        let tmask = g.input("query_mask", &[batch, tokens]);

        let v = self.conv_projection(g, video, "input_vid_proj")?;
        let t = self.conv_projection(g, query, "input_txt_proj")?;
        let mut v = self.feature_refinement(g, v, t, vmask, tmask)?;
        let pos = sine_position_from_mask(g, vmask, SineConfig::detr(d, 10000.0))?;

        // Bi-CMF: every layer re-reads the original text; only the video changes.
        for i in 0..cfg.bicmf_layers {
            v = self.bicmf_layer(g, i, v, t, pos, vmask, tmask)?;
        }

        // Encoder over [global token; video] (the text is dropped), the token always valid.
        let token = p.c(g, "global_rep_token#token")?;
        let token_pos = p.c(g, "global_rep_pos#token")?;
        let token_mask = p.c(g, "global_rep_token#mask")?;
        let mut x = concat(g, &[token, v], 1)?;
        let x_pos = concat(g, &[token_pos, pos], 1)?;
        let x_mask = concat(g, &[token_mask, vmask], 1)?;
        for i in 0..cfg.enc_layers {
            let prefix = format!("transformer.encoder.layers.{i}");
            x = encoder_layer(g, p, &prefix, x, x_pos, x_mask, cfg.heads)?;
        }
        let memory_global = select(g, x, 1, 0)?; // (B, d)
        let memory = slice(g, x, 1, 1, clips)?; // (B, L, d)

        let spec = DecoderSpec {
            prefix: "transformer.decoder",
            layers: cfg.dec_layers,
            heads: cfg.heads,
            queries: cfg.queries,
            anchors: "query_embed.weight",
        };
        let dec = dab_decoder(g, p, &spec, memory, pos, vmask)?;
        let logits = dense(g, p, dec.hs, "class_embed", Act::None)?;
        let delta = mlp(g, p, dec.hs, "span_embed", 3, Act::None)?;
        let spans =
            binary_fused(g, Binary::Add, delta, dec.reference, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;

        // Saliency: per clip, ⟨saliency_proj1(memory), saliency_proj2(memory_global)⟩ / √d.
        let clip_keys = dense(g, p, memory, "saliency_proj1", Act::None)?;
        let global = g.reshape(memory_global, &[batch, 1, d])?;
        let global = dense(g, p, global, "saliency_proj2#scaled", Act::None)?;
        let saliency = matmul(g, clip_keys, global, true)?; // (B, L, 1)
        let saliency = g.reshape(saliency, &[batch, clips])?;

        g.output("pred_logits", logits);
        g.output("pred_spans", spans);
        g.output("saliency", saliency);
        Ok(())
    }
}

/// Official keys that only training reads (§4.3): they may be present or absent.
fn training_only(key: &str) -> bool {
    key.starts_with("contrastive_align_projection_")
        || key.starts_with("gru_extractor.")
        || key.starts_with("saliency_proj_mr.")
        || key.starts_with("txt_position_embed.")
        || (key.starts_with("transformer.t2v_encoder.layers.") && key.contains(".norm2."))
}

/// Every inference key of the official state_dict with its shape (videolights.md §4.3).
fn expected_keys(cfg: &VideoLightsConfig, video_width: usize, query_width: usize) -> Vec<(String, Vec<usize>)> {
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
    let mha = |keys: &mut Vec<(String, Vec<usize>)>, prefix: String| {
        keys.push((format!("{prefix}.in_proj_weight"), vec![3 * d, d]));
        keys.push((format!("{prefix}.in_proj_bias"), vec![3 * d]));
        keys.push((format!("{prefix}.out_proj.weight"), vec![d, d]));
        keys.push((format!("{prefix}.out_proj.bias"), vec![d]));
    };
    keys.push(("global_rep_token".into(), vec![d]));
    keys.push(("global_rep_pos".into(), vec![d]));
    for i in 0..cfg.bicmf_layers {
        let pre = format!("transformer.t2v_encoder.layers.{i}");
        for j in 1..=3 {
            mha(&mut keys, format!("{pre}.cross_attn_{j}"));
        }
        for j in 1..=3 {
            lin(&mut keys, format!("{pre}.linear{j}"), d, d);
        }
        lin(&mut keys, format!("{pre}.linear4"), f, d);
        lin(&mut keys, format!("{pre}.linear5"), d, f);
        for n in ["norm1", "norm3", "norm4"] {
            ln(&mut keys, format!("{pre}.{n}"), d);
        }
        keys.push((format!("{pre}.activation.weight"), vec![1]));
    }
    for i in 0..cfg.enc_layers {
        let pre = format!("transformer.encoder.layers.{i}");
        mha(&mut keys, format!("{pre}.self_attn"));
        lin(&mut keys, format!("{pre}.linear1"), f, d);
        lin(&mut keys, format!("{pre}.linear2"), d, f);
        ln(&mut keys, format!("{pre}.norm1"), d);
        ln(&mut keys, format!("{pre}.norm2"), d);
        keys.push((format!("{pre}.activation.weight"), vec![1]));
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
            keys.push((format!("{prefix}.{k}.net.1.conv1d.weight"), vec![d, input, 1]));
            keys.push((format!("{prefix}.{k}.net.1.conv1d.bias"), vec![d]));
        }
    }
    let fra = "feature_refinement";
    keys.push((format!("{fra}.sim_w"), vec![d, 1]));
    keys.push((format!("{fra}.cor_v_w"), vec![1, d]));
    keys.push((format!("{fra}.cor_q_w"), vec![1, 1]));
    keys.push((format!("{fra}.word_to_sentence_pool.weight"), vec![d, 1]));
    keys.push((format!("{fra}.mixer.conv1d.weight"), vec![d, 4 * d, 1]));
    keys.push((format!("{fra}.mixer.conv1d.bias"), vec![d]));
    lin(&mut keys, "saliency_proj1".into(), d, d);
    lin(&mut keys, "saliency_proj2".into(), d, d);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    /// float32 `log(0 + 1e-45)` as PyTorch computes it (the value the spec quotes).
    #[test]
    fn padded_clip_log_is_the_float32_denormal_log() {
        assert_eq!(f32::from_bits(1), 1e-45f32);
        assert!((padded_clip_log() - -103.27893).abs() < 1e-5, "{}", padded_clip_log());
    }
}
