//! Pieces the DETR-style models share: the parameter store, PyTorch-layout layers (LinearLayer
//! input projections, MLPs, `nn.MultiheadAttention` with its packed `in_proj`), post-norm encoder
//! layers, the VSLNet context–query block, the DAB-DETR anchor decoder and the GRU highlight head.
//! Each takes the official key prefix, so a model reads like its state_dict.

use std::collections::HashMap;
use std::f32::consts::TAU;
use std::sync::Arc;
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};
use crate::ops::attention::{attention, Cols};
use crate::ops::elementwise::{add, binary_fused, mul, Binary, Unary};
use crate::ops::gru::{gru, GruWeights};
use crate::ops::layout::{concat, gather_rows, slice, transpose};
use crate::ops::matmul::{linear, linear_residual, matmul};
use crate::ops::moment_rows::moment_rows;
use crate::ops::norm::layer_norm;
use crate::ops::position::sine_embed_coords;
use crate::ops::softmax::{softmax, MaskMode};
use crate::ops::{gemm, Act};
use crate::weights::{Tensor, Weights};

/// LayerNorm epsilon of every official model.
pub const LN_EPS: f32 = 1e-5;

/// VSLNet's `mask_logits`: masked logits get −1e30 added (not −∞).
const VSL_MASK: MaskMode = MaskMode::Additive(-1e30);

/// The keys of a VSLNet context–query block ([`vsl_context_query`]); `#row` / `#linear` forms
/// are the ones the model derives at load.
pub struct VslKeys<'a> {
    /// `w4C`, `w4Q` (as rows) and `w4mlu` of the trilinear similarity.
    pub w4c: &'a str,
    pub w4q: &'a str,
    pub w4mlu: &'a str,
    /// The linear over `[v | c2q | v⊙c2q | v⊙q2c]` (weight as a Linear, bias).
    pub cqa: [&'a str; 2],
    /// The token-pooling weight (as a row).
    pub pool: &'a str,
    /// The linear + ReLU over `[cqa | pooled query]` (weight as a Linear, bias).
    pub out: [&'a str; 2],
}

/// VSLNet context–query attention followed by the query-pooled concat (TR-DETR's fuser,
/// LD-DETR's V2T extractor): `S[b,i,j] = V_i·w4C + T_j·w4Q + Σ_k V_ik w4mlu_k T_jk` (no
/// scaling), `c2q = softmax_j(S) T`, `q2c = softmax_j(S) softmax_i(S)ᵀ V`, then
/// `relu(W_out [W_cqa [v | c2q | v⊙c2q | v⊙q2c] | α T])` with `α = softmax(T w_pool)`.
#[allow(clippy::too_many_arguments)]
pub fn vsl_context_query(
    g: &mut Graph,
    p: &Params,
    v: TensorId,
    t: TensorId,
    vmask: TensorId,
    tmask: TensorId,
    keys: &VslKeys,
) -> Result<TensorId> {
    let [b, _, _] = *g.shape(v) else { unreachable!("video features are (B, L, D)") };
    let n = g.shape(t)[1];
    let (w4c, w4q, w4mlu) = (p.c(g, keys.w4c)?, p.c(g, keys.w4q)?, p.c(g, keys.w4mlu)?);
    let sv = linear(g, v, w4c, None, Act::None)?; // (B, L, 1)
    let st = linear(g, t, w4q, None, Act::None)?; // (B, N, 1)
    let st = g.reshape(st, &[b, 1, n])?;
    let vm = mul(g, v, w4mlu)?;
    let s = matmul(g, vm, t, true)?;
    let s = add(g, s, sv)?;
    let s = add(g, s, st)?;
    let s_r = softmax(g, s, Some(tmask), VSL_MASK, 1.0)?; // over tokens
    let s_t = transpose(g, s, 1, 2)?;
    let s_c_t = softmax(g, s_t, Some(vmask), VSL_MASK, 1.0)?; // over clips, as (B, N, L)
    let c2q = matmul(g, s_r, t, false)?;
    let a = matmul(g, s_r, s_c_t, false)?;
    let q2c = matmul(g, a, v, false)?;
    let v_c2q = mul(g, v, c2q)?;
    let v_q2c = mul(g, v, q2c)?;
    let x = concat(g, &[v, c2q, v_c2q, v_q2c], 2)?;
    let (w, bias) = (p.linear_weight(g, keys.cqa[0])?, p.c(g, keys.cqa[1])?);
    let x1 = linear(g, x, w, Some(bias), Act::None)?;
    let wp = p.c(g, keys.pool)?;
    let alpha = linear(g, t, wp, None, Act::None)?;
    let alpha = g.reshape(alpha, &[b, 1, n])?;
    let alpha = softmax(g, alpha, Some(tmask), VSL_MASK, 1.0)?;
    let pooled = matmul(g, alpha, t, false)?; // (B, 1, d), broadcast to every clip by concat
    let x = concat(g, &[x1, pooled], 2)?;
    let (w, bias) = (p.linear_weight(g, keys.out[0])?, p.c(g, keys.out[1])?);
    linear(g, x, w, Some(bias), Act::Relu)
}

/// The tensors a model reads: the weights file's tensors by official key, plus tensors derived
/// from them once at load (split or folded weights) under `<key>#<what>` names. Graphs built for
/// different input shapes take the same `Arc`s, so each weight is uploaded once per device.
pub(crate) struct Params {
    store: Mutex<Store>,
    path: std::path::PathBuf,
}

#[derive(Default)]
struct Store {
    dense: HashMap<String, Tensor>,
    /// `Linear` weights `(N, K)` moved to the CPU GEMM's panels by [`Params::linear_weight`]
    /// (their dense copy is dropped, so a CPU model holds each weight once).
    panels: HashMap<String, (usize, usize, gemm::Panels)>,
}

impl Params {
    pub fn new(weights: &Weights) -> Self {
        let dense = weights.keys().map(|k| (k.to_string(), weights.get_any(k).unwrap().clone())).collect();
        Params { store: Mutex::new(Store { dense, panels: HashMap::new() }), path: weights.path.clone() }
    }

    /// The dense tensor `key` (made again from its panels if it was moved there).
    pub fn get(&self, key: &str) -> Result<Tensor> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        self.dense(&mut store, key, false)
    }

    pub fn insert(&mut self, key: String, tensor: Tensor) {
        self.store.get_mut().unwrap_or_else(|e| e.into_inner()).dense.insert(key, tensor);
    }

    /// Forgets `key`: a weight whose folded form (`<key>#<what>`) replaces it in every graph,
    /// so its values are not held twice.
    pub fn remove(&mut self, key: &str) {
        self.store.get_mut().unwrap_or_else(|e| e.into_inner()).dense.remove(key);
    }

    /// The constant `key` in graph `g`. `<prefix>.in_proj_{weight,bias}#{q,k,v,qk,kv}` is that
    /// slice of `nn.MultiheadAttention`'s packed `[W_q; W_k; W_v]` (`in_proj_weight (3d, d)`):
    /// self-attention reads `#qk` and `#v` (q and k share an input), cross-attention `#q` and
    /// `#kv`. Slices are made on first use (a graph reads two of the five; making all of them
    /// would triple that weight's memory), then shared by every graph.
    pub fn c(&self, g: &mut Graph, key: &str) -> Result<TensorId> {
        let t = self.get(key)?;
        g.constant(t.data, &t.shape)
    }

    /// The `Linear` weight `key` `(N, K)` for [`linear`]: [`Params::c`], except in graphs for
    /// the CPU backend, which read it as the GEMM's panels. The first such use packs it and
    /// drops the dense copy; later graphs share the panels.
    pub fn linear_weight(&self, g: &mut Graph, key: &str) -> Result<TensorId> {
        if !g.takes_weight_panels() {
            return self.c(g, key);
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if !store.panels.contains_key(key) {
            let w = self.dense(&mut store, key, true)?;
            let &[n, k] = &w.shape[..] else {
                // Not a Linear weight: left dense, for `linear` to report.
                store.dense.insert(key.to_string(), w.clone());
                drop(store);
                return g.constant(w.data, &w.shape);
            };
            store.panels.insert(key.to_string(), (n, k, gemm::linear_panels(&w.data, n, k)));
        }
        let (n, k, data) = store.panels[key].clone();
        g.panels(data, n, k)
    }

    /// The dense tensor `key`: stored, made from its panels, or an in_proj slice. `take` moves
    /// it out of the store (it is about to be held as panels).
    fn dense(&self, store: &mut Store, key: &str, take: bool) -> Result<Tensor> {
        let found = if take { store.dense.remove(key) } else { store.dense.get(key).cloned() };
        if let Some(t) = found {
            return Ok(t);
        }
        let made = if let Some((n, k, data)) = store.panels.get(key) {
            Tensor::new(vec![*n, *k], gemm::linear_from_panels(data.as_ref(), *n, *k))
        } else {
            self.in_proj_slice(store, key)?
        };
        if !take {
            store.dense.insert(key.to_string(), made.clone());
        }
        Ok(made)
    }

    fn in_proj_slice(&self, store: &mut Store, key: &str) -> Result<Tensor> {
        let missing = || Error::MissingTensor { path: self.path.clone(), key: key.into(), hint: String::new() };
        let Some((packed, slice)) =
            key.split_once('#').filter(|(k, _)| k.ends_with(".in_proj_weight") || k.ends_with(".in_proj_bias"))
        else {
            return Err(missing());
        };
        let w = self.dense(store, packed, false)?;
        let d = w.shape[0] / 3;
        let rows = match slice {
            "q" => 0..d,
            "k" => d..2 * d,
            "v" => 2 * d..3 * d,
            "qk" => 0..2 * d,
            "kv" => d..3 * d,
            _ => return Err(missing()),
        };
        let cols: usize = w.shape[1..].iter().product();
        let mut shape = w.shape.clone();
        shape[0] = rows.len();
        Ok(Tensor::new(shape, w.data[rows.start * cols..rows.end * cols].to_vec()))
    }

    /// A kernel-size-1 `Conv1d` weight `(out, in, 1)` as the `Linear` weight `(out, in)` it is,
    /// under `<key>#linear`; the conv-shaped key is dropped (graphs read only the Linear), so
    /// moving the Linear to panels frees its values.
    pub fn conv1x1_as_linear(&mut self, key: &str) -> Result<()> {
        let w = self.get(key)?;
        let [o, i, 1] = w.shape[..] else {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                key: key.into(),
                expected: vec![0, 0, 1],
                found: w.shape.clone(),
            });
        };
        let store = self.store.get_mut().unwrap_or_else(|e| e.into_inner());
        store.dense.remove(key);
        store.dense.insert(format!("{key}#linear"), Tensor { shape: vec![o, i], data: w.data });
        Ok(())
    }

    /// The saliency head `Σ_c Linear(x)_c / √d` is one dot product: fold the channel sum into a
    /// `(1, d)` weight and a scalar bias (`#sum`), computed in f64.
    pub fn fold_channel_sum(&mut self, prefix: &str, scale: f64) -> Result<()> {
        let w = self.get(&format!("{prefix}.weight"))?.clone();
        let b = self.get(&format!("{prefix}.bias"))?.clone();
        let (o, i) = (w.shape[0], w.shape[1]);
        let folded: Vec<f32> =
            (0..i).map(|k| ((0..o).map(|c| w.data[c * i + k] as f64).sum::<f64>() * scale) as f32).collect();
        let bias = (b.data.iter().map(|&x| x as f64).sum::<f64>() * scale) as f32;
        self.insert(format!("{prefix}.weight#sum"), Tensor::new(vec![1, i], folded));
        self.insert(format!("{prefix}.bias#sum"), Tensor::new(vec![1], vec![bias]));
        Ok(())
    }
}

/// `Linear` by official prefix (`<prefix>.weight`, `<prefix>.bias`), with a fused activation.
pub fn dense(g: &mut Graph, p: &Params, x: TensorId, prefix: &str, act: Act) -> Result<TensorId> {
    let w = p.linear_weight(g, &format!("{prefix}.weight"))?;
    let b = p.c(g, &format!("{prefix}.bias"))?;
    linear(g, x, w, Some(b), act)
}

/// `Linear(x) + residual`.
pub fn dense_residual(
    g: &mut Graph,
    p: &Params,
    x: TensorId,
    prefix: &str,
    act: Act,
    residual: TensorId,
) -> Result<TensorId> {
    let w = p.linear_weight(g, &format!("{prefix}.weight"))?;
    let b = p.c(g, &format!("{prefix}.bias"))?;
    linear_residual(g, x, w, Some(b), act, Some(residual))
}

/// `LayerNorm` by official prefix.
pub fn norm(g: &mut Graph, p: &Params, x: TensorId, prefix: &str) -> Result<TensorId> {
    let gamma = p.c(g, &format!("{prefix}.weight"))?;
    let beta = p.c(g, &format!("{prefix}.bias"))?;
    layer_norm(g, x, gamma, beta, LN_EPS)
}

/// The official `MLP`: `n` Linear layers `<prefix>.layers.{i}`, ReLU between, `last` after the last.
pub fn mlp(g: &mut Graph, p: &Params, x: TensorId, prefix: &str, n: usize, last: Act) -> Result<TensorId> {
    let mut x = x;
    for i in 0..n {
        let act = if i + 1 < n { Act::Relu } else { last };
        x = dense(g, p, x, &format!("{prefix}.layers.{i}"), act)?;
    }
    Ok(x)
}

/// The Moment-DETR `LinearLayer` stack: `n` × [LayerNorm(input) → Linear → ReLU], no ReLU after
/// the last (`<prefix>.{k}.LayerNorm`, `<prefix>.{k}.net.1`).
pub fn input_projection(g: &mut Graph, p: &Params, x: TensorId, prefix: &str, n: usize) -> Result<TensorId> {
    let mut x = x;
    for k in 0..n {
        x = norm(g, p, x, &format!("{prefix}.{k}.LayerNorm"))?;
        let act = if k + 1 < n { Act::Relu } else { Act::None };
        x = dense(g, p, x, &format!("{prefix}.{k}.net.1"), act)?;
    }
    Ok(x)
}

/// The PReLU slope of a layer (`<prefix>.activation.weight`).
pub fn prelu(g: &mut Graph, p: &Params, prefix: &str) -> Result<Act> {
    Ok(Act::Prelu(p.c(g, &format!("{prefix}.activation.weight"))?))
}

/// `nn.MultiheadAttention` self-attention: q = k from `qk_in` (content + position), v from
/// `v_in`; keys masked by `key_mask`; output projection with the residual `residual` fused.
#[allow(clippy::too_many_arguments)]
pub fn self_attention(
    g: &mut Graph,
    p: &Params,
    prefix: &str,
    qk_in: TensorId,
    v_in: TensorId,
    key_mask: Option<TensorId>,
    heads: usize,
    residual: TensorId,
) -> Result<TensorId> {
    let d = *g.shape(v_in).last().unwrap();
    let wqk = p.linear_weight(g, &format!("{prefix}.in_proj_weight#qk"))?;
    let bqk = p.c(g, &format!("{prefix}.in_proj_bias#qk"))?;
    let qk = linear(g, qk_in, wqk, Some(bqk), Act::None)?;
    let wv = p.linear_weight(g, &format!("{prefix}.in_proj_weight#v"))?;
    let bv = p.c(g, &format!("{prefix}.in_proj_bias#v"))?;
    let v = linear(g, v_in, wv, Some(bv), Act::None)?;
    let scale = ((d / heads) as f32).powf(-0.5);
    let a = attention(g, Cols::new(qk, 0, d), Cols::new(qk, d, d), Cols::all(g, v), key_mask, heads, scale)?;
    dense_residual(g, p, a, &format!("{prefix}.out_proj"), Act::None, residual)
}

/// `nn.MultiheadAttention` cross-attention: q from `q_in`, k = v from `kv_in` (no key position),
/// output projection with `residual` fused.
#[allow(clippy::too_many_arguments)]
pub fn cross_attention(
    g: &mut Graph,
    p: &Params,
    prefix: &str,
    q_in: TensorId,
    kv_in: TensorId,
    key_mask: Option<TensorId>,
    heads: usize,
    residual: TensorId,
) -> Result<TensorId> {
    let d = *g.shape(q_in).last().unwrap();
    let wq = p.linear_weight(g, &format!("{prefix}.in_proj_weight#q"))?;
    let bq = p.c(g, &format!("{prefix}.in_proj_bias#q"))?;
    let q = linear(g, q_in, wq, Some(bq), Act::None)?;
    let wkv = p.linear_weight(g, &format!("{prefix}.in_proj_weight#kv"))?;
    let bkv = p.c(g, &format!("{prefix}.in_proj_bias#kv"))?;
    let kv = linear(g, kv_in, wkv, Some(bkv), Act::None)?;
    let scale = ((d / heads) as f32).powf(-0.5);
    let a = attention(g, Cols::all(g, q), Cols::new(kv, 0, d), Cols::new(kv, d, d), key_mask, heads, scale)?;
    dense_residual(g, p, a, &format!("{prefix}.out_proj"), Act::None, residual)
}

/// The T2V layer of TR-DETR and LD-DETR (`pre` = `….t2v_encoder.layers.{i}`): video queries
/// (+ PE) attend to the text, only the text padding masked; `LN2(x + FFN(LN1(x)))` with
/// `x = vid + attn`.
#[allow(clippy::too_many_arguments)]
pub fn t2v_layer(
    g: &mut Graph,
    p: &Params,
    pre: &str,
    vid: TensorId,
    txt: TensorId,
    pos: TensorId,
    tmask: TensorId,
    heads: usize,
) -> Result<TensorId> {
    let q_in = add(g, vid, pos)?;
    let x = cross_attention(g, p, &format!("{pre}.self_attn"), q_in, txt, Some(tmask), heads, vid)?;
    let h = norm(g, p, x, &format!("{pre}.norm1"))?;
    let act = prelu(g, p, pre)?;
    let h = dense(g, p, h, &format!("{pre}.linear1"), act)?;
    let y = dense_residual(g, p, h, &format!("{pre}.linear2"), Act::None, x)?;
    norm(g, p, y, &format!("{pre}.norm2"))
}

/// Post-norm transformer encoder layer with a PReLU FFN (TR-DETR / LD-DETR `TransformerEncoderLayer`):
/// `x = norm1(x + SA(x + pos, x)); x = norm2(x + linear2(prelu(linear1(x))))`.
pub fn encoder_layer(
    g: &mut Graph,
    p: &Params,
    prefix: &str,
    x: TensorId,
    pos: TensorId,
    mask: TensorId,
    heads: usize,
) -> Result<TensorId> {
    let with_pos = add(g, x, pos)?;
    let a = self_attention(g, p, &format!("{prefix}.self_attn"), with_pos, x, Some(mask), heads, x)?;
    let x = norm(g, p, a, &format!("{prefix}.norm1"))?;
    let act = prelu(g, p, prefix)?;
    let h = dense(g, p, x, &format!("{prefix}.linear1"), act)?;
    let y = dense_residual(g, p, h, &format!("{prefix}.linear2"), Act::None, x)?;
    norm(g, p, y, &format!("{prefix}.norm2"))
}

/// Output of the DAB decoder.
pub struct Decoded {
    /// `decoder.norm` of the last layer's output `(B, Q, d)`.
    pub hs: TensorId,
    /// The anchor `(B, Q, 2)` that entered the last layer (DAB convention for the final spans).
    pub reference: TensorId,
}

/// Shapes and switches of a DAB-DETR 1-D anchor decoder.
pub struct DecoderSpec<'a> {
    pub prefix: &'a str,
    pub layers: usize,
    pub heads: usize,
    pub queries: usize,
    /// Key of the learnt anchors `(Q, 2)` before the sigmoid.
    pub anchors: &'a str,
}

/// The DAB-DETR conditional decoder with 1-D (center, width) anchors (tr-detr.md §3.7).
/// `memory (B, L, d)`, `pos (B, L, d)`, `mask (B, L)`; the content queries start from zeros.
pub fn dab_decoder(
    g: &mut Graph,
    p: &Params,
    s: &DecoderSpec,
    memory: TensorId,
    pos: TensorId,
    mask: TensorId,
) -> Result<Decoded> {
    let [b, _, d] = *g.shape(memory) else { return Err(Error::Graph("dab_decoder: memory must be (B, L, d)".into())) };
    let zeros = g.constant(Arc::from(vec![0.0f32; b * s.queries * d]), &[b, s.queries, d])?;
    dab_decoder_from(g, p, s, zeros, memory, pos, mask)
}

/// [`dab_decoder`] from the content queries `tgt (B, Q, d)` (LD-DETR's paper loop decoder starts
/// later passes from the previous pass's output).
pub fn dab_decoder_from(
    g: &mut Graph,
    p: &Params,
    s: &DecoderSpec,
    tgt: TensorId,
    memory: TensorId,
    pos: TensorId,
    mask: TensorId,
) -> Result<Decoded> {
    let [b, _, d] = *g.shape(memory) else { return Err(Error::Graph("dab_decoder: memory must be (B, L, d)".into())) };
    let pre = s.prefix;
    // Every sample starts from the same anchors.
    let anchors = p.get(s.anchors)?;
    let ref0: Vec<f32> = (0..b).flat_map(|_| anchors.data.iter().map(|&x| crate::ops::sigmoid(x))).collect();
    let mut reference = g.constant(ref0.into(), &[b, s.queries, 2])?;
    let mut out = tgt;
    let mut input_reference = reference;
    for l in 0..s.layers {
        input_reference = reference;
        let sine = sine_embed_coords(g, reference, d / 2, 10000.0, TAU)?;
        let qpos = mlp(g, p, sine, &format!("{pre}.ref_point_head"), 2, Act::None)?;
        let mut sine = sine;
        if l > 0 {
            let scale = mlp(g, p, out, &format!("{pre}.query_scale"), 2, Act::None)?;
            sine = mul(g, sine, scale)?;
        }
        let rc = mlp(g, p, out, &format!("{pre}.ref_anchor_head"), 2, Act::Sigmoid)?;
        let width = slice(g, reference, 2, 1, 1)?;
        let ratio = binary_fused(g, Binary::Div, rc, width, Unary::Identity, Unary::Identity)?;
        sine = mul(g, sine, ratio)?;
        out =
            dab_decoder_layer(g, p, &format!("{pre}.layers.{l}"), out, memory, pos, mask, qpos, sine, l == 0, s.heads)?;
        if l + 1 < s.layers {
            // The refinement after the last layer is unused.
            let delta = mlp(g, p, out, &format!("{pre}.bbox_embed"), 3, Act::None)?;
            reference =
                binary_fused(g, Binary::Add, delta, reference, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid)?;
        }
    }
    let hs = norm(g, p, out, &format!("{pre}.norm"))?;
    Ok(Decoded { hs, reference: input_reference })
}

/// The official state_dict keys (with shapes) of a [`dab_decoder`] of `layers` layers under
/// `pre`: the layers (`ffn`-wide PReLU FFN; `ca_qpos_proj` in the first only), the final norm
/// and the anchor MLPs.
pub fn dab_decoder_keys(keys: &mut Vec<(String, Vec<usize>)>, pre: &str, layers: usize, d: usize, ffn: usize) {
    let lin = |keys: &mut Vec<(String, Vec<usize>)>, prefix: String, o: usize, i: usize| {
        keys.push((format!("{prefix}.weight"), vec![o, i]));
        keys.push((format!("{prefix}.bias"), vec![o]));
    };
    for l in 0..layers {
        let layer = format!("{pre}.layers.{l}");
        let mut projs = vec!["sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj"];
        projs.extend(["self_attn.out_proj", "ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj"]);
        projs.extend(["ca_qpos_sine_proj", "cross_attn.out_proj"]);
        if l == 0 {
            projs.push("ca_qpos_proj");
        }
        for name in projs {
            lin(keys, format!("{layer}.{name}"), d, d);
        }
        lin(keys, format!("{layer}.linear1"), ffn, d);
        lin(keys, format!("{layer}.linear2"), d, ffn);
        for n in ["norm1", "norm2", "norm3"] {
            keys.push((format!("{layer}.{n}.weight"), vec![d]));
            keys.push((format!("{layer}.{n}.bias"), vec![d]));
        }
        keys.push((format!("{layer}.activation.weight"), vec![1]));
    }
    keys.push((format!("{pre}.norm.weight"), vec![d]));
    keys.push((format!("{pre}.norm.bias"), vec![d]));
    for (mlp, dims) in [
        ("query_scale", [d, d, d].as_slice()),
        ("ref_point_head", &[d, d, d]),
        ("bbox_embed", &[d, d, d, 2]),
        ("ref_anchor_head", &[d, d, 1]),
    ] {
        for (i, io) in dims.windows(2).enumerate() {
            lin(keys, format!("{pre}.{mlp}.layers.{i}"), io[1], io[0]);
        }
    }
}

/// One DAB-DETR decoder layer: conditional self-attention over the queries, cross-attention with
/// per-head [content | position] query and key halves, PReLU FFN; post-norm.
#[allow(clippy::too_many_arguments)]
fn dab_decoder_layer(
    g: &mut Graph,
    p: &Params,
    pre: &str,
    out: TensorId,
    memory: TensorId,
    pos: TensorId,
    mask: TensorId,
    qpos: TensorId,
    sine: TensorId,
    first: bool,
    heads: usize,
) -> Result<TensorId> {
    let [b, q, d] = *g.shape(out) else { unreachable!() };
    let l = g.shape(memory)[1];
    let dh = d / heads;
    // Self-attention: no input projection inside the attention module; q, k, v come from here.
    let qc = dense(g, p, out, &format!("{pre}.sa_qcontent_proj"), Act::None)?;
    let sq = dense_residual(g, p, qpos, &format!("{pre}.sa_qpos_proj"), Act::None, qc)?;
    let kc = dense(g, p, out, &format!("{pre}.sa_kcontent_proj"), Act::None)?;
    let sk = dense_residual(g, p, qpos, &format!("{pre}.sa_kpos_proj"), Act::None, kc)?;
    let sv = dense(g, p, out, &format!("{pre}.sa_v_proj"), Act::None)?;
    let a = attention(g, Cols::all(g, sq), Cols::all(g, sk), Cols::all(g, sv), None, heads, (dh as f32).powf(-0.5))?;
    let out = dense_residual(g, p, a, &format!("{pre}.self_attn.out_proj"), Act::None, out)?;
    let out = norm(g, p, out, &format!("{pre}.norm1"))?;

    // Cross-attention to the memory.
    let mut qc = dense(g, p, out, &format!("{pre}.ca_qcontent_proj"), Act::None)?;
    let mut kc = dense(g, p, memory, &format!("{pre}.ca_kcontent_proj"), Act::None)?;
    let kp = dense(g, p, pos, &format!("{pre}.ca_kpos_proj"), Act::None)?;
    if first {
        qc = dense_residual(g, p, qpos, &format!("{pre}.ca_qpos_proj"), Act::None, qc)?;
        kc = add(g, kc, kp)?;
    }
    let v = dense(g, p, memory, &format!("{pre}.ca_v_proj"), Act::None)?;
    let qs = dense(g, p, sine, &format!("{pre}.ca_qpos_sine_proj"), Act::None)?;
    let per_head = |g: &mut Graph, content: TensorId, position: TensorId, rows: usize| -> Result<TensorId> {
        let c = g.reshape(content, &[b, rows, heads, dh])?;
        let ps = g.reshape(position, &[b, rows, heads, dh])?;
        let both = concat(g, &[c, ps], 3)?;
        g.reshape(both, &[b, rows, heads * 2 * dh])
    };
    let cq = per_head(g, qc, qs, q)?;
    let ck = per_head(g, kc, kp, l)?;
    let a = attention(
        g,
        Cols::all(g, cq),
        Cols::all(g, ck),
        Cols::all(g, v),
        Some(mask),
        heads,
        ((2 * dh) as f32).powf(-0.5),
    )?;
    let out = dense_residual(g, p, a, &format!("{pre}.cross_attn.out_proj"), Act::None, out)?;
    let out = norm(g, p, out, &format!("{pre}.norm2"))?;

    let act = prelu(g, p, pre)?;
    let h = dense(g, p, out, &format!("{pre}.linear1"), act)?;
    let out = dense_residual(g, p, h, &format!("{pre}.linear2"), Act::None, out)?;
    norm(g, p, out, &format!("{pre}.norm3"))
}

/// The GRU highlight head of TR-DETR (MR2HD) and LD-DETR: a GRU over the projected clips `v` of
/// the top-1 moment weights the memory, `M3 = M2·(g·v_t) + M2`, and the saliency is the folded
/// channel sum of `saliency` (`<saliency>.weight#sum`). Each sample uses its own valid length.
#[allow(clippy::too_many_arguments)]
pub fn gru_highlight_head(
    g: &mut Graph,
    p: &Params,
    gru_weights: &GruWeights,
    saliency: &str,
    logits: TensorId,
    spans: TensorId,
    v: TensorId,
    memory: TensorId,
    mask: TensorId,
    clip_len: f32,
) -> Result<TensorId> {
    let [b, l, _] = *g.shape(memory) else {
        return Err(Error::Graph("highlight head: memory must be (B, L, d)".into()));
    };
    let (rows, steps) = moment_rows(g, logits, spans, mask, clip_len)?;
    let moment = gather_rows(g, v, rows)?;
    let (_, h) = gru(g, moment, std::slice::from_ref(gru_weights), Some(steps))?;
    let d = g.shape(h)[1];
    let h = g.reshape(h, &[b, 1, d])?;
    let wt = matmul(g, v, h, true)?; // (B, L, 1) = g · v_t
    let weighted = mul(g, memory, wt)?;
    let m3 = add(g, weighted, memory)?;
    let w = p.c(g, &format!("{saliency}.weight#sum"))?;
    let bias = p.c(g, &format!("{saliency}.bias#sum"))?;
    let s = linear(g, m3, w, Some(bias), Act::None)?;
    g.reshape(s, &[b, l])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::graph::{ConstCache, Executable};
    use crate::testing::Rng;
    use safetensors::tensor::TensorView;

    fn weights(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Weights {
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| bytemuck::cast_slice(v).to_vec()).collect();
        let views: Vec<(&str, TensorView)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((k, s, _), b)| (*k, TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        Weights::from_bytes("test.safetensors", &safetensors::serialize(views, None).unwrap()).unwrap()
    }

    /// On the CPU backend a Linear weight is packed on first use and its dense copy dropped;
    /// later graphs share the panels, the result matches the dense product computed in f64,
    /// and the dense values come back exactly when asked for. Other graphs get it dense.
    #[test]
    fn cpu_graphs_hold_linear_weights_once_as_panels() {
        let mut rng = Rng::new(11);
        let (m, k, n, d) = (3, 7, 20, 8);
        let (x, w, b) = (rng.vec(m * k, -1.0, 1.0), rng.vec(n * k, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
        let in_proj = rng.vec(3 * d * d, -1.0, 1.0);
        let p = Params::new(&weights(&[
            ("lin.weight", vec![n, k], w.clone()),
            ("lin.bias", vec![n], b.clone()),
            ("attn.in_proj_weight", vec![3 * d, d], in_proj.clone()),
        ]));
        let build = |g: &mut Graph| {
            let xt = g.input("x", &[m, k]);
            let wt = p.linear_weight(g, "lin.weight").unwrap();
            let bt = p.c(g, "lin.bias").unwrap();
            let y = linear(g, xt, wt, Some(bt), Act::None).unwrap();
            g.output("y", y);
            wt
        };
        let mut first = Graph::for_device(&Device::Cpu);
        let wt = build(&mut first);
        assert!(first.is_panels(wt));
        assert!(!p.store.lock().unwrap().dense.contains_key("lin.weight"), "the dense copy is dropped");
        let mut second = Graph::for_device(&Device::Cpu);
        let wt2 = build(&mut second);
        let ptr = |g: &Graph, t: TensorId| match &g.tensors[t.0].source {
            crate::graph::Source::Panels(data) => data.as_ptr(),
            other => panic!("not panels: {other:?}"),
        };
        assert_eq!(ptr(&first, wt), ptr(&second, wt2), "graphs share one packed copy");

        let want: Vec<f64> = (0..m * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                b[j] as f64 + (0..k).map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64).sum::<f64>()
            })
            .collect();
        let fast = Executable::new(first, &Device::Cpu, &ConstCache::new()).unwrap().run(&[("x", &x)]).unwrap();
        let twin = Executable::new_cpu_reference(second).unwrap().run(&[("x", &x)]).unwrap();
        for (what, out) in [("CPU backend", &fast), ("reference twin", &twin)] {
            for (got, want) in out.get("y").iter().zip(&want) {
                assert!((*got as f64 - want).abs() < 1e-5, "{what}: {got} vs {want}");
            }
        }
        assert_eq!(&p.get("lin.weight").unwrap().data[..], &w[..], "dense values made back exactly");

        let mut dense_graph = Graph::new();
        let wd = p.linear_weight(&mut dense_graph, "lin.weight").unwrap();
        assert!(!dense_graph.is_panels(wd));

        // An in_proj slice is packed on its own; the packed in_proj stays for the other slices.
        let mut g = Graph::for_device(&Device::Cpu);
        let qk = p.linear_weight(&mut g, "attn.in_proj_weight#qk").unwrap();
        assert!(g.is_panels(qk) && g.shape(qk) == [2 * d, d]);
        assert_eq!(&p.get("attn.in_proj_weight#v").unwrap().data[..], &in_proj[2 * d * d..]);
        assert_eq!(&p.get("attn.in_proj_weight#qk").unwrap().data[..], &in_proj[..2 * d * d]);
    }

    /// A kernel that does not read panels never gets them: planning names the node.
    #[test]
    fn panels_read_as_a_dense_operand_are_a_graph_error() {
        let p = Params::new(&weights(&[("lin.weight", vec![4, 3], vec![0.5; 12])]));
        let mut g = Graph::for_device(&Device::Cpu);
        let x = g.input("x", &[2, 3]);
        let w = p.linear_weight(&mut g, "lin.weight").unwrap();
        let y = matmul(&mut g, x, w, true).unwrap();
        g.output("y", y);
        let err = Executable::new(g, &Device::Cpu, &ConstCache::new()).err().expect("a graph error");
        assert!(err.to_string().contains("reads weight panels"), "{err}");
    }
}
