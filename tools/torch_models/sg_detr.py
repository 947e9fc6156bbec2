"""SG-DETR (Saliency-Guided DETR, class `MRDETR` of the official code base) in eager PyTorch.

Written from `specs/sg-detr.md` (section numbers below refer to it) in the style of the official
modules: nn.Linear / nn.LayerNorm / nn.Conv1d / nn.MultiheadAttention, the official module
hierarchy, so `state_dict()` keys are the official keys (§5).

    input projections (§3.2) → sentence token by class-attention pooling (§3.3) → local saliency
    (§3.4) → modality / sine position embeddings (§3.5) → saliency-guided cross-attention (§3.6)
    → video self-attention encoder (§3.7) → saliency amplifier and global saliency (§3.8)
    → temporal FPN (§3.9) → two-stage query selection (§3.10) → DAB decoder with IoU head (§3.11)

Left out (their keys are in `TRAINING_ONLY`, 69 tensors for the released config): the ATSS
auxiliary head (§3.12, only feeds the AUX / COMB metrics), `sent_encoder` / `moment_encoder`
(training losses), `txt_position_embed` (`use_txt_pos = false`) and `main_det_head.co_mapper`
(collaborative queries, training only) — the same set moment-gpu ignores.

One deliberate deviation, shared with moment-gpu: in a padded batch the FPN's convolution inputs
are zeroed past each sample's own length, so every sample gets its B = 1 result (the official code
convolves over the batch padding, §7.1; set `model.fpn.mask_padding = False` for that behaviour).
Everything else follows the official masking: key-padding masks in every attention, level masks in
the query selector.

Config: `build(cfg)` takes the safetensors "config" metadata in either layout of §8 (flat dotted
keys, or nested Hydra-style); missing options take the released QVHighlights values.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .preprocessing import l2_normalize
from .blocks import (Layers, ProjectedAttention, anchor_sine_embed, head_concat, inverse_sigmoid,
                     position_embedding_sine)

HEADS = 8          # every attention block of the official code uses its default of 8 heads

# Options read here (flat dotted names of §8) with the released QVHighlights values.
DEFAULTS = {
    "model_dim": 256,
    "num_queries": 25,
    "pos_temp": 10000,
    "cont_pos_tradeoff": 0,
    "use_cross_attn_wo_dummy": True,
    "weight_attn_with_saliency": True,
    "use_global_saliency_head": True,
    "predict_quality_score": True,
    "use_rpn": True,
    "use_encoder_features": True,
    "txt2vis_encoder.num_t2v_layers": 2,
    "det_encoder.num_encoder_layers": 3,
    "detr_detector.num_decoder_layers": 3,
    "query_selector.default_widths": [0.05, 0.2, 0.4, 0.85],
    "local_saliency_head.logit_mode": "exp_b",
    "local_saliency_head.use_projections": False,
    "local_saliency_head.use_gamma": False,
    "local_saliency_head.num_aggregation_layers": 2,
    "saliency_amplifier.mode": "sigmoid",
    "saliency_amplifier.use_mha": False,
    "saliency_amplifier.use_norm": False,
    "runner.model.vid_dim": 514,
    "runner.model.txt_dim": 512,
    "runner.model.num_input_proj_layers": 2,
    "runner.model.use_txt_pos": False,
    "data.dataset.max_query_length": 40,
    "data.dataset.max_video_length": 75,
    "data.dataset.normalize_video": True,
    "data.dataset.normalize_query": True,
    "data.dataset.use_tef": True,
}

# Nested copies the Hydra config interpolates from a top-level option (§8 step 4): a copy fills a
# missing top-level value and must agree with a present one.
NESTED_COPIES = {
    "txt2vis_encoder.d_model": "model_dim",
    "txt2vis_encoder.use_cross_attn_wo_dummy": "use_cross_attn_wo_dummy",
    "txt2vis_encoder.weight_attn_with_saliency": "weight_attn_with_saliency",
    "query_selector.model_dim": "model_dim",
    "query_selector.num_queries": "num_queries",
    "det_encoder.model_dim": "model_dim",
    "aux_det_head.in_channels": "model_dim",
    "detr_detector.model_dim": "model_dim",
    "detr_detector.num_queries": "num_queries",
    "detr_detector.cont_pos_tradeoff": "cont_pos_tradeoff",
    "detr_detector.use_rpn": "use_rpn",
    "detr_detector.use_encoder_features": "use_encoder_features",
    "detr_detector.predict_quality_score": "predict_quality_score",
    "detr_detector.temperature": "pos_temp",
    "local_saliency_head.model_dim": "model_dim",
    "saliency_amplifier.d_model": "model_dim",
    "runner.model.model_dim": "model_dim",
    "runner.model.pos_temp": "pos_temp",
    "runner.model.use_global_saliency_head": "use_global_saliency_head",
}


def TRAINING_ONLY(cfg):
    """Key prefixes a checkpoint carries that the eval forward never reads (§3.13, §5)."""
    return ("txt_position_embed.", "sent_encoder.", "moment_encoder.", "main_det_head.co_mapper.",
            "main_det_head.dn_label_enc.", "aux_det_head.")


# ----------------------------------------------------------------------------------------------
# configuration (§8)
# ----------------------------------------------------------------------------------------------

def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def resolve_config(cfg):
    """Metadata config (flat or nested, §8) -> flat dict of DEFAULTS' keys. Options this module
    does not read (training-only, post-processing, ATSS) are ignored."""
    cfg = dict(cfg or {})
    name = cfg.pop("model", None)
    if isinstance(name, dict):                  # full Hydra config: lift the model group
        cfg, name = {**name, **cfg}, None
    if name not in (None, "sg_detr"):
        raise ValueError(f'config "model" is {name!r}, not "sg_detr"')
    if any(isinstance(v, dict) for v in cfg.values()):
        raw = _flatten(cfg)

        def resolve(v, depth=0):    # "${a.b}" interpolations, looked up in the same config
            if isinstance(v, str) and v.startswith("${") and v.endswith("}") and depth < 10:
                path = v[2:-1]
                for cand in (path, path[len("model."):]):
                    if cand in raw:
                        return resolve(raw[cand], depth + 1)
                raise ValueError(f"cannot resolve the interpolation {v}")
            return v

        found = {}
        for key, v in raw.items():
            k = key
            if k.startswith("mrdetr."):
                k = "runner.model." + k[len("mrdetr."):]
            elif k.startswith("data.") and not k.startswith("data.dataset."):
                k = "data.dataset." + k[len("data."):]
            if k in NESTED_COPIES:
                if not (isinstance(v, str) and v.startswith("${")):
                    found.setdefault(NESTED_COPIES[k], []).append(v)
            elif k in DEFAULTS:
                found.setdefault(k, []).append(resolve(v))
        flat = {}
        for k, vals in found.items():
            if any(v != vals[0] for v in vals[1:]):
                raise ValueError(f"nested config sets {k} inconsistently: {vals}")
            flat[k] = vals[0]
    else:
        flat = {k: v for k, v in cfg.items() if k in DEFAULTS}
    c = dict(DEFAULTS)
    c.update(flat)
    # Only the inference path the spec describes (and moment-gpu supports).
    checks = [
        (c["model_dim"] % (2 * HEADS) == 0, "model_dim must be a multiple of 16"),
        (c["cont_pos_tradeoff"] == 0, "only cont_pos_tradeoff = 0"),
        (c["use_cross_attn_wo_dummy"], "only use_cross_attn_wo_dummy = true (no dummy tokens)"),
        (c["use_rpn"] and c["use_encoder_features"], "only use_rpn = use_encoder_features = true"),
        (c["predict_quality_score"], "only predict_quality_score = true"),
        (c["saliency_amplifier.mode"] == "sigmoid" and not c["saliency_amplifier.use_mha"]
         and not c["saliency_amplifier.use_norm"], "only the parameter-free sigmoid amplifier"),
        (not c["local_saliency_head.use_projections"] and not c["local_saliency_head.use_gamma"],
         "local_saliency_head.use_projections / use_gamma must be false"),
        (c["local_saliency_head.logit_mode"] in ("exp_b", "exp", "linear"), "bad logit_mode"),
        (not c["runner.model.use_txt_pos"], "only use_txt_pos = false"),
        (len(c["query_selector.default_widths"]) == 4, "the FPN has exactly 4 levels"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"sg_detr config: {msg}")
    return c


# ----------------------------------------------------------------------------------------------
# building blocks (§3.1)
# ----------------------------------------------------------------------------------------------

class LinearLayer(nn.Module):
    """LN -> Dropout -> Linear [-> ReLU] (keys mapper.0 = LN, mapper.2 = Linear)."""

    def __init__(self, n_in, n_out, relu, dropout=0.5):
        super().__init__()
        self.relu = relu
        self.mapper = nn.Sequential(nn.LayerNorm(n_in), nn.Dropout(dropout), nn.Linear(n_in, n_out))

    def forward(self, x):
        x = self.mapper(x)
        return F.relu(x) if self.relu else x


class MLPProj(nn.Module):
    """Input projection: n LinearLayers, ReLU after all but the last (keys linear_mapper.{i})."""

    def __init__(self, n_in, d, n_layers):
        super().__init__()
        self.linear_mapper = nn.ModuleList(
            LinearLayer(n_in if i == 0 else d, d, relu=i < n_layers - 1) for i in range(n_layers))

    def forward(self, x):
        for layer in self.linear_mapper:
            x = layer(x)
        return x


class SlimMLP(nn.Module):
    """Linear, ReLU, ..., Linear (keys linear_mapper.{2i})."""

    def __init__(self, n_in, hidden, n_out, n_layers):
        super().__init__()
        mods = []
        for i in range(n_layers):
            mods.append(nn.Linear(n_in if i == 0 else hidden, n_out if i == n_layers - 1 else hidden))
            if i < n_layers - 1:
                mods.append(nn.ReLU())
        self.linear_mapper = nn.Sequential(*mods)

    def forward(self, x):
        return self.linear_mapper(x)


class FFN(nn.Module):
    """Linear(d, 4d) -> PReLU (one slope) -> Dropout -> Linear(4d, d) (keys mapping.{0,1,3})."""

    def __init__(self, d, dropout=0.1):
        super().__init__()
        self.mapping = nn.Sequential(nn.Linear(d, 4 * d), nn.PReLU(), nn.Dropout(dropout), nn.Linear(4 * d, d))

    def forward(self, x):
        return self.mapping(x)


# ----------------------------------------------------------------------------------------------
# sentence token and local saliency (§3.3, §3.4)
# ----------------------------------------------------------------------------------------------

class AggregationLayer(nn.Module):
    """CaiT class-attention block (use_projections = use_gamma = false): the class token attends
    to LN(text) used directly as keys and values."""

    def __init__(self, d):
        super().__init__()
        self.attn = ProjectedAttention(d, HEADS)
        self.attn_norm = nn.LayerNorm(d)
        self.ffn_norm = nn.LayerNorm(d)
        self.ffn = FFN(d)

    def forward(self, c, txt, txt_pad):
        e = self.attn_norm(txt)
        c = c + self.attn(c, e, e, key_padding_mask=txt_pad)
        return c + self.ffn(self.ffn_norm(c))


class LearnedAggregation(nn.Module):
    def __init__(self, d, n_layers):
        super().__init__()
        self.cls_q = nn.Parameter(torch.zeros(d))
        self.layers = nn.ModuleList(AggregationLayer(d) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, txt, txt_pad):
        c = self.cls_q.expand(txt.shape[0], 1, -1)
        for j, layer in enumerate(self.layers):
            c = layer(c, txt, txt_pad)
            if j < len(self.layers) - 1:       # the shared norm sits between layers, not after the last
                c = self.norm(c)
        return c[:, 0]


class LocalSaliencyHead(nn.Module):
    """S_loc = e^temp * cos(V, s) + a (logit_mode exp_b; exp: no offset; linear: b * cos + a)."""

    def __init__(self, d, mode, n_layers):
        super().__init__()
        self.mode = mode
        if mode in ("exp", "exp_b"):
            self.temp = nn.Parameter(torch.tensor(3.0))
        if mode in ("exp_b", "linear"):
            self.a_param = nn.Parameter(torch.tensor(0.0))
        if mode == "linear":
            self.b_param = nn.Parameter(torch.tensor(1.0))
        self.sentence_pooling = LearnedAggregation(d, n_layers)

    def forward(self, vid, txt, txt_pad):
        sent = self.sentence_pooling(txt, txt_pad)
        cos = (F.normalize(vid, dim=-1) * F.normalize(sent, dim=-1)[:, None, :]).sum(-1)
        if self.mode == "exp_b":
            return cos * self.temp.exp() + self.a_param
        if self.mode == "exp":
            return cos * self.temp.exp()
        return cos * self.b_param + self.a_param


# ----------------------------------------------------------------------------------------------
# encoders (§3.6, §3.7)
# ----------------------------------------------------------------------------------------------

class T2VLayer(nn.Module):
    """SGCA layer: video rows attend to the text (no q/k/v projections), rows gated by
    σ(S_loc) after the softmax; norm1 acts on the FFN output inside the residual."""

    def __init__(self, d):
        super().__init__()
        self.self_attn = ProjectedAttention(d, HEADS)
        self.ffn = FFN(d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, vid, txt, pos, txt_pad, gate):
        y = vid + self.self_attn(vid + pos, txt, txt, key_padding_mask=txt_pad, row_scale=gate)
        y = y + self.norm1(self.ffn(y))
        return self.norm2(y)


class T2VEncoder(nn.Module):
    def __init__(self, d, n_layers):
        super().__init__()
        self.layers = nn.ModuleList(T2VLayer(d) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, vid, txt, pos, txt_pad, gate):
        for layer in self.layers:
            vid = layer(vid, txt, pos, txt_pad, gate)
            # the shared norm runs over the whole [video; text] sequence after every layer, so
            # the next layer's text keys/values are normalised too
            vid, txt = self.norm(vid), self.norm(txt)
        return self.norm(vid)                  # and once more at the end


class Text2VisionEncoder(nn.Module):
    def __init__(self, d, n_layers):
        super().__init__()
        self.t2v_encoder = T2VEncoder(d, n_layers)

    def forward(self, vid, txt, pos, txt_pad, gate):
        return self.t2v_encoder(vid, txt, pos, txt_pad, gate)


class EncoderLayer(nn.Module):
    """Post-norm self-attention layer: q = k = x + pos, v = x."""

    def __init__(self, d):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, HEADS, dropout=0.1, batch_first=True)
        self.ffn = FFN(d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x, pos, pad):
        qk = x + pos
        x = self.norm1(x + self.self_attn(qk, qk, x, key_padding_mask=pad, need_weights=False)[0])
        return self.norm2(x + self.ffn(x))


class DetEncoder(nn.Module):
    def __init__(self, d, n_layers):
        super().__init__()
        self.encoder = Layers(n_layers, lambda: EncoderLayer(d))

    def forward(self, x, pos, pad):
        for layer in self.encoder.layers:
            x = layer(x, pos, pad)
        return x


# ----------------------------------------------------------------------------------------------
# FPN (§3.9)
# ----------------------------------------------------------------------------------------------

class DepthwiseSeparableConv(nn.Module):
    def __init__(self, d, stride=1):
        super().__init__()
        self.depthwise = nn.Conv1d(d, d, 3, stride=stride, padding=1, groups=d, bias=False)
        self.pointwise = nn.Conv1d(d, d, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class TemporalLayerNorm(nn.Module):
    """LayerNorm over the channels of a channels-first (B, C, T) tensor."""

    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class FPN(nn.Module):
    """Four levels (strides 0.5, 1, 2, 4 clips); level2 is built on level1's output."""

    def __init__(self, d):
        super().__init__()
        dws, tln = DepthwiseSeparableConv, TemporalLayerNorm
        self.upscale = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), dws(d), tln(d), nn.GELU(),
                                     dws(d), tln(d))
        self.level0 = nn.Sequential(dws(d), tln(d), nn.GELU(), dws(d), tln(d))
        self.level1 = nn.Sequential(dws(d, 2), tln(d), nn.GELU(), dws(d), tln(d))
        self.level2 = nn.Sequential(nn.GELU(), dws(d, 2), tln(d), nn.GELU(), dws(d), tln(d))
        # Zero every convolution input past the sample's own length (moment-gpu's choice, see
        # the module docstring); False = the official unmasked convolution over batch padding.
        self.mask_padding = True

    def _run(self, seq, x, masks):
        for m in seq:
            if self.mask_padding and isinstance(m, DepthwiseSeparableConv):
                x = x * masks[x.shape[-1]][:, None, :]     # the level whose length x has
            x = m(x)
        return x

    def forward(self, memory, level_masks):
        """memory (B, L, d), level_masks [(B, 2L), (B, L), (B, L/2), (B, L/4)] float ->
        [(B, n_l, d)] for the levels F0..F3."""
        masks = {m.shape[1]: m for m in level_masks}
        x = memory.transpose(1, 2)
        f0 = self._run(self.upscale, x, masks)
        f1 = self._run(self.level0, x, masks)
        f2 = self._run(self.level1, x, masks)
        f3 = self._run(self.level2, f2, masks)
        return [f.transpose(1, 2) for f in (f0, f1, f2, f3)]


# ----------------------------------------------------------------------------------------------
# query selection (§3.10)
# ----------------------------------------------------------------------------------------------

class QuerySelector(nn.Module):
    def __init__(self, d, num_queries, default_widths):
        super().__init__()
        self.num_queries = num_queries
        self.default_widths = list(default_widths)
        self.enc_output = nn.Linear(d, d)
        self.enc_output_norm = nn.LayerNorm(d)
        self.enc_out_span_embed = SlimMLP(d, d, 2, 3)
        self.enc_out_class_embed = nn.Linear(d, 1)
        self.enc_out_iou_embed = nn.Linear(d, 1)

    def forward(self, levels, level_masks):
        """-> content queries (B,Q,d), anchors (B,Q,2) in (0,1), selected token index (B,Q)."""
        props = []
        for f, m, w in zip(levels, level_masks, self.default_widths):
            # fixed proposals per token, float32: center (i + 0.5) / n_valid, one width per level
            n_valid = m.sum(1, keepdim=True)
            center = (torch.arange(f.shape[1], dtype=torch.float32, device=f.device)[None] + 0.5) / n_valid
            props.append(torch.stack((center, torch.full_like(center, w)), dim=-1))
        prop = torch.cat(props, 1)
        valid = torch.cat(level_masks, 1).bool() & ((prop > 0.0125) & (prop < 0.9875)).all(-1)
        prop_unsig = inverse_sigmoid(prop).masked_fill(~valid[..., None], float("inf"))
        mem = torch.cat(levels, 1).masked_fill(~valid[..., None], 0.0)
        mem = self.enc_output_norm(self.enc_output(mem))
        cls = self.enc_out_class_embed(mem)[..., 0]
        iou = self.enc_out_iou_embed(mem)[..., 0]
        score = torch.sqrt(cls.sigmoid() * iou.sigmoid()).masked_fill(~valid, float("-inf"))
        coord = prop_unsig + self.enc_out_span_embed(mem)
        if score.shape[1] < self.num_queries:
            raise ValueError(f"{score.shape[1]} proposal tokens for {self.num_queries} queries: video too short")
        top = torch.topk(score, self.num_queries, dim=1).indices
        tgt = torch.gather(mem, 1, top[..., None].expand(-1, -1, mem.shape[-1]))
        ref = torch.gather(coord, 1, top[..., None].expand(-1, -1, 2)).sigmoid()
        return tgt, ref, top


# ----------------------------------------------------------------------------------------------
# DAB decoder and heads (§3.11)
# ----------------------------------------------------------------------------------------------

class DecoderSelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.query_content_proj = nn.Linear(d, d)
        self.query_pos_proj = nn.Linear(d, d)
        self.key_content_proj = nn.Linear(d, d)
        self.key_pos_proj = nn.Linear(d, d)
        self.value_proj = nn.Linear(d, d)
        self.self_attn = ProjectedAttention(d, HEADS)
        self.norm1 = nn.LayerNorm(d)

    def forward(self, tgt, qpos):
        qp = self.query_pos_proj(qpos)
        q = self.query_content_proj(tgt) + qp
        k = self.key_content_proj(tgt) + self.key_pos_proj(qp)   # the key position projects qp, not qpos
        return self.norm1(tgt + self.self_attn(q, k, self.value_proj(tgt)))


class DecoderLayer(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.self_attention = DecoderSelfAttention(d)
        self.ca_qcontent_proj = nn.Linear(d, d)
        self.ca_qpos_sine_proj = nn.Linear(d, d)
        self.ca_kcontent_proj = nn.Linear(d, d)
        self.ca_kpos_proj = nn.Linear(d, d)
        self.ca_value_proj = nn.Linear(d, d)
        self.cross_attn = ProjectedAttention(d, HEADS)
        self.ffn = FFN(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)

    def forward(self, tgt, memory, pos, vid_pad, qpos, sine):
        tgt = self.self_attention(tgt, qpos)
        # cont_pos_tradeoff = 0: per head, [content (hd) | position (hd)] -> head dim 2 hd
        q = head_concat(self.ca_qcontent_proj(tgt), self.ca_qpos_sine_proj(sine), HEADS)
        k = head_concat(self.ca_kcontent_proj(memory), self.ca_kpos_proj(pos), HEADS)
        tgt = self.norm2(tgt + self.cross_attn(q, k, self.ca_value_proj(memory), key_padding_mask=vid_pad))
        return self.norm3(tgt + self.ffn(tgt))


class Decoder(nn.Module):
    def __init__(self, d, n_layers, temperature):
        super().__init__()
        self.d, self.temperature = d, temperature
        self.layers = nn.ModuleList(DecoderLayer(d) for _ in range(n_layers))
        self.query_scale = SlimMLP(d, d, d, 2)
        self.quality_score_embed = SlimMLP(2 * d, d, 1, 3)
        self.ref_point_head = SlimMLP(d, d, d, 2)
        self.ref_anchor_head = SlimMLP(d, d, 1, 2)
        self.span_embed = SlimMLP(d, d, 2, 3)
        self.norm = nn.LayerNorm(d)

    def forward(self, tgt, ref, memory, pos, vid_pad):
        """-> per-layer normalised states hs, input anchors, IoU logits (lists)."""
        hs, refs_in, quality = [], [], []
        for layer in self.layers:
            refs_in.append(ref)
            sine = anchor_sine_embed(ref, self.d, self.temperature)
            qpos = self.ref_point_head(sine)
            sine = sine * self.query_scale(tgt)               # also in layer 0
            # width modulation: one scalar per query for all channels, divided by the anchor width
            sine = sine * (self.ref_anchor_head(tgt).sigmoid()[..., 0] / ref[..., 1])[..., None]
            tgt = layer(tgt, memory, pos, vid_pad, qpos, sine)
            new_ref = (self.span_embed(tgt) + inverse_sigmoid(ref)).sigmoid()   # on the un-normalised tgt
            new_sine = anchor_sine_embed(new_ref, self.d, self.temperature)
            quality.append(self.quality_score_embed(torch.cat((tgt, new_sine), -1)))
            hs.append(self.norm(tgt))
            ref = new_ref
        return hs, refs_in, quality


class DetrHead(nn.Module):
    def __init__(self, d, n_layers, temperature):
        super().__init__()
        self.decoder = Decoder(d, n_layers, temperature)
        self.span_embed = SlimMLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 1)

    def forward(self, tgt, ref, memory, pos, vid_pad):
        hs, refs_in, quality = self.decoder(tgt, ref, memory, pos, vid_pad)
        # the model outputs the last layer; its spans refine that layer's INPUT anchor
        return {
            "pred_logits": self.class_embed(hs[-1]),
            "pred_spans": (self.span_embed(hs[-1]) + inverse_sigmoid(refs_in[-1])).sigmoid(),
            "pred_quality_scores": quality[-1],
        }


# ----------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------

class SGDETR(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = self.cfg = resolve_config(cfg)
        d = self.d = c["model_dim"]
        self.pos_temp = c["pos_temp"]
        n_proj = c["runner.model.num_input_proj_layers"]
        # attribute order = official state_dict order (§5), training-only modules left out
        self.input_txt_proj = MLPProj(c["runner.model.txt_dim"], d, n_proj)
        self.input_vid_proj = MLPProj(c["runner.model.vid_dim"], d, n_proj)
        self.modality_embeddings = nn.Embedding(2, d)                  # row 0 text, row 1 video
        self.txt2vis_sal_encoder = Text2VisionEncoder(d, c["txt2vis_encoder.num_t2v_layers"])
        self.fpn = FPN(d)
        self.query_selector = QuerySelector(d, c["num_queries"], c["query_selector.default_widths"])
        self.det_encoder = DetEncoder(d, c["det_encoder.num_encoder_layers"])
        self.main_det_head = DetrHead(d, c["detr_detector.num_decoder_layers"], c["pos_temp"])
        self.local_saliency_head = LocalSaliencyHead(d, c["local_saliency_head.logit_mode"],
                                                     c["local_saliency_head.num_aggregation_layers"])
        self.weight_attn_with_saliency = c["weight_attn_with_saliency"]
        if c["use_global_saliency_head"]:
            self.global_saliency_head = nn.Linear(d, 1)
        else:
            self.global_saliency_head = None

    def forward(self, video, video_mask, query, query_mask):
        B, L, _ = video.shape
        if L % 4:
            raise ValueError(f"video length {L} is not a multiple of 4 (the preprocessing pads it)")
        vid_pad, txt_pad = video_mask < 0.5, query_mask < 0.5

        # §3.2 – §3.4: projections, sentence token, local saliency (before any embedding)
        V = self.input_vid_proj(video)
        T = self.input_txt_proj(query)
        s_loc = self.local_saliency_head(V, T, txt_pad)

        # §3.5 – §3.7
        pos = position_embedding_sine(video_mask, self.d, self.pos_temp)
        T = T + self.modality_embeddings.weight[0]
        V = V + self.modality_embeddings.weight[1]
        gate = s_loc.sigmoid() if self.weight_attn_with_saliency else None
        X = self.txt2vis_sal_encoder(V, T, pos, txt_pad, gate)
        M = self.det_encoder(X, pos, vid_pad)

        # §3.8: amplify with σ(S_loc) for the global head, then re-amplify the raw M with σ(S_glob)
        if self.global_saliency_head is not None:
            s_glob = s_loc + self.global_saliency_head(M + M * s_loc.sigmoid()[..., None])[..., 0]
        else:
            s_glob = s_loc
        M2 = M + M * s_glob.sigmoid()[..., None]

        # §3.9 – §3.10
        m1 = video_mask.float()
        level_masks = [m1.repeat_interleave(2, dim=1), m1,
                       F.max_pool1d(m1[:, None], 2, 2)[:, 0], F.max_pool1d(m1[:, None], 4, 4)[:, 0]]
        levels = self.fpn(M2, level_masks)
        tgt, ref, _ = self.query_selector(levels, level_masks)

        # §3.11
        out = self.main_det_head(tgt, ref, M2, pos, vid_pad)
        out["saliency_scores"] = s_glob
        out["local_saliency_scores"] = s_loc
        return out


def build(cfg):
    return SGDETR(cfg)


# ----------------------------------------------------------------------------------------------
# pre-processing (§2)
# ----------------------------------------------------------------------------------------------

def preprocess(cfg, videos, queries):
    """One sample: [video (L_raw, 512)], [query (N, 512) or (1, N, 512)] -> float32 tensors with
    batch dimension 1. The zero rows that pad the video to a multiple of 4 count as valid clips."""
    c = resolve_config(cfg)
    if len(videos) != 1 or len(queries) != 1:
        raise ValueError("SG-DETR takes one video and one query feature source")
    q = np.asarray(queries[0], dtype=np.float32)
    if q.ndim == 3:
        q = q[0]
    q = q[: c["data.dataset.max_query_length"]]
    if c["data.dataset.normalize_query"]:      # NumPy in the official loader; epsilon added to the norm
        q = l2_normalize(q)
    v = torch.from_numpy(np.asarray(videos[0], dtype=np.float32)[: c["data.dataset.max_video_length"]].copy())
    if c["data.dataset.normalize_video"]:      # torch in the official loader
        v = v / (torch.linalg.vector_norm(v, dim=-1, keepdim=True) + 1e-5)
    n = v.shape[0]
    if n == 0 or len(q) == 0:
        raise ValueError("empty video or query")
    if c["data.dataset.use_tef"]:
        start = torch.arange(n, dtype=torch.float32) / n
        v = torch.cat((v, start[:, None], (start + np.float32(1.0 / n))[:, None]), 1)
    if n % 4:
        v = torch.cat((v, torch.zeros(4 - n % 4, v.shape[1])), 0)
    q = torch.from_numpy(np.ascontiguousarray(q))
    return v[None], torch.ones(1, v.shape[0]), q[None], torch.ones(1, q.shape[0])
