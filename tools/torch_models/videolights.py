"""VideoLights (Paul et al., arXiv 2412.01558) as a plain PyTorch eager model, written from
`shared/specs/videolights.md` in the style of the official code (nn.Linear, nn.LayerNorm,
nn.MultiheadAttention, nn.Conv1d, nn.PReLU); state_dict keys are the official keys (spec §4.3).

Pipeline (spec §1): 1×1-conv input projections (§3.2) → FRA feature refinement of the video (§3.3)
→ Bi-CMF cross-modal layers, video stream only (§3.5) → post-norm encoder over [global token; video]
(§3.6) → DAB-style anchor decoder (§3.7) → heads (§3.8). Only the eval forward is implemented: the
negative-pair pass, Uni-JFM (GRU), contrastive projections and aux outputs are training-only (§3.9)
and their keys are skipped on load (`TRAINING_ONLY`).

Padded batches: by default every attention masks only its own sample's padded keys, so each sample
gets its B = 1 result (what moment-gpu and the fixtures do). The official Bi-CMF additionally
passes an `attn_mask` whose `repeat(H, 1, 1)` layout mixes samples (§6.1);
`build(cfg, official_batch_masks=True)` reproduces that, e.g. to match an official batched file.

nn.MultiheadAttention is called with need_weights=False: the official calls keep the default (True)
and discard the averaged attention weights; the outputs are the same, the SDPA path is cheaper.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .preprocessing import l2_normalize, one_sample, tef
from .blocks import (DABDecoder, EncoderLayer, Layers, LinearLayer, MLP, TextPositionEmbedding,
                     input_projection, inverse_sigmoid, position_embedding_sine)


def TRAINING_ONLY(cfg):
    """Key prefixes a checkpoint carries for losses only (spec §3.9, §4.3 "training only")."""
    out = []
    if cfg.get("contrastive_align_loss", False):
        out.append("contrastive_align_projection_")
    if cfg.get("mr_to_hd_loss", False):
        out += ["gru_extractor.", "saliency_proj_mr."]
    return tuple(out)


def _check_config(cfg):
    """Options this eval forward implements (spec §4.2); anything else would silently differ."""
    checks = [
        (cfg.get("hidden_dim", 256) == 256, "hidden_dim must be 256 (the span sine embedding is 2x128)"),
        (cfg.get("hidden_dim", 256) % cfg.get("nheads", 8) == 0, "hidden_dim must be divisible by nheads"),
        (not cfg.get("pre_norm", False), "pre_norm=True is not supported"),
        (cfg.get("position_embedding", "sine") == "sine", "only position_embedding='sine' exists"),
        (not cfg.get("use_txt_pos", False), "use_txt_pos=True is not supported"),
        (cfg.get("span_loss_type", "l1") == "l1", "only span_loss_type='l1' is supported"),
        (cfg.get("a_feat_dim", 0) == 0, "audio input is not supported"),
        (1 <= cfg.get("n_input_proj", 2) <= 3, "n_input_proj must be 1, 2 or 3"),
        (cfg.get("dec_layers", 2) >= 1, "dec_layers must be >= 1"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ValueError(f"videolights: {msg}")


def _has_tef(cfg):
    return "tef" in cfg.get("ctx_mode", "video_tef")


def build(cfg, official_batch_masks=False):
    _check_config(cfg)
    return VideoLights(cfg, official_batch_masks)


# ------------------------------------------------------------------------------------------------
# Pre-processing (spec §2)
# ------------------------------------------------------------------------------------------------

def _merge_sources(sources, limit, normalise, what):
    """Truncate each source to `limit` rows, L2-normalise it on its own, cut all to the shortest
    source and concatenate along channels (§2.1 / §2.2)."""
    parts = [np.asarray(s, dtype=np.float32)[:limit] for s in sources]
    if not parts:
        raise ValueError(f"videolights: no {what} feature sources")
    if normalise:
        parts = [l2_normalize(p) for p in parts]
    n = min(len(p) for p in parts)
    if n == 0:
        # A zero-token query makes the official forward exit(-1) (§2.2); an empty video is unusable.
        raise ValueError(f"videolights: empty {what}")
    return np.concatenate([p[:n] for p in parts], axis=1), n


def preprocess(cfg, videos, queries):
    # no_norm_vfeat switches the normalisation of video AND text (no_norm_tfeat is unused, §2.2).
    normalise = not cfg.get("no_norm_vfeat", False)
    video, L = _merge_sources(videos, cfg.get("max_v_l", 75), normalise, "video")
    if _has_tef(cfg):
        video = np.concatenate([video, tef(L)], axis=1)  # TEF last
    query, _ = _merge_sources(queries, cfg.get("max_q_l", 32), normalise, "query")
    return one_sample(video, query)


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------

class Conv1D(nn.Module):
    """The official 1×1 Conv1d wrapper (key `conv1d.*`) applied to (B, L, C) rows."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.conv1d = nn.Conv1d(in_dim, out_dim, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x):
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class WeightedPool(nn.Module):
    """Word → sentence attention pooling with the text mask (−1e30 on padded words), §3.3."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, 1))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x, mask):
        alpha = torch.matmul(x, self.weight)[..., 0] + (1.0 - mask) * -1e30
        alpha = torch.softmax(alpha, dim=1)
        return torch.matmul(alpha[:, None, :], x)[:, 0]                  # (B, d)


class FeatureRefinement(nn.Module):
    """FRA (spec §3.3): refines the video with word–clip correlation, a sentence feature and the
    clip–sentence cosine similarity; its output REPLACES the video (no residual)."""

    def __init__(self, d):
        super().__init__()
        self.sim_w = nn.Parameter(torch.empty(d, 1))
        self.cor_v_w = nn.Parameter(torch.empty(1, d))
        self.cor_q_w = nn.Parameter(torch.empty(1, 1))
        for p in (self.sim_w, self.cor_v_w, self.cor_q_w):
            nn.init.xavier_uniform_(p)
        self.word_to_sentence_pool = WeightedPool(d)
        self.mixer = Conv1D(4 * d, d)

    def forward(self, vid, txt, vid_mask, txt_mask):
        B, L, d = vid.shape
        N = txt.shape[1]
        # Softmax over the words of the word–clip dot products, WITHOUT the text mask (quirk 6.2.2).
        scores = torch.softmax(torch.matmul(txt, vid.transpose(1, 2)), dim=1)       # (B, N, L)
        # Every word carries the same correlation row cor_v_w * cor_q_w, so this is that row for
        # every clip up to rounding; computed literally as the official matmul.
        cor_w = (self.cor_v_w * self.cor_q_w).expand(N, d)
        corr = torch.matmul(scores.transpose(1, 2), cor_w)                          # (B, L, d)
        sentence = self.word_to_sentence_pool(txt, txt_mask)                        # (B, d)
        sim = F.cosine_similarity(vid, sentence[:, None, :], dim=-1, eps=1e-8)
        # log(mask + 1e-45): 0 for valid clips, float32 log(2^-149) = −103.28 for padded ones.
        sim = sim + torch.log(vid_mask + 1e-45)
        sim_feat = sim[..., None] * self.sim_w[:, 0]                                # (B, L, d)
        x = torch.cat([vid, sim_feat, sentence[:, None, :].expand(B, L, d), corr], dim=-1)
        return F.relu(self.mixer(x))


def _crossed_masks(q_pad, k_pad, H):
    """The official Bi-CMF attn_mask: outer AND of query and key padding per sample, tiled with
    repeat(H, 1, 1) → (H·B, T, S). nn.MultiheadAttention reads entry b·H + h, i.e. sample b head h
    gets the mask of sample (b·H + h) mod B (spec §6.1)."""
    return (q_pad[:, :, None] & k_pad[:, None, :]).repeat(H, 1, 1)


class BiCMFLayer(nn.Module):
    """Bi-directional cross-modal fusion layer (spec §3.5). Only the video stream is updated; the
    refined text t1 is used as keys/values of cross_attn_3 and then dropped. norm2 exists in the
    official layer but is never called."""

    def __init__(self, d, H, ff, dropout):
        super().__init__()
        mha = lambda: nn.MultiheadAttention(d, H, dropout=dropout, batch_first=True)
        self.cross_attn_1, self.cross_attn_2, self.cross_attn_3 = mha(), mha(), mha()
        self.linear1, self.linear2, self.linear3 = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.linear4 = nn.Linear(d, ff)
        self.linear5 = nn.Linear(ff, d)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(d) for _ in range(4))
        self.activation = nn.PReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, vid, txt, pos, vid_pad, txt_pad, m_vt=None, m_tv=None):
        vq = vid + pos
        a1 = self.cross_attn_1(vq, txt, txt, key_padding_mask=txt_pad, attn_mask=m_vt, need_weights=False)[0]
        v1 = self.norm1(vid + self.linear1(a1))
        a2 = self.cross_attn_2(txt, vq, vid, key_padding_mask=vid_pad, attn_mask=m_tv, need_weights=False)[0]
        t1 = txt + self.linear2(a2)                                                  # not normalised
        a3 = self.cross_attn_3(v1, t1, t1, key_padding_mask=txt_pad, attn_mask=m_vt, need_weights=False)[0]
        v2 = self.norm3(v1 + self.linear3(a3))
        f = self.linear5(self.activation(self.linear4(v2)))
        # Official "f + dropout(f)": LN(2f), no residual from v2 (quirk 6.2.4).
        return self.norm4(f + self.dropout(f))


class Transformer(nn.Module):
    def __init__(self, cfg, d, H, ff, dropout):
        super().__init__()
        self.t2v_encoder = Layers(cfg.get("bicmf_layers", 2), lambda: BiCMFLayer(d, H, ff, dropout))
        self.encoder = Layers(cfg.get("enc_layers", 2), lambda: EncoderLayer(d, H, ff, dropout))
        # §3.7: ca_qpos_proj and the added positions in layer 0 only (quirk 6.2.6)
        self.decoder = DABDecoder(d, H, ff, cfg.get("dec_layers", 2))


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------

class VideoLights(nn.Module):
    def __init__(self, cfg, official_batch_masks=False):
        super().__init__()
        d = cfg.get("hidden_dim", 256)
        H = cfg.get("nheads", 8)
        ff = cfg.get("dim_feedforward", 1024)
        dropout = cfg.get("dropout", 0.1)
        self.hidden_dim, self.nheads = d, H
        self.official_batch_masks = official_batch_masks
        # v_feat_dim follows opt.json (without TEF); a TEF-including value is reconciled on load.
        self.video_width = cfg["v_feat_dim"] + (2 if _has_tef(cfg) else 0)
        self.tef = _has_tef(cfg)
        n_proj, in_drop = cfg.get("n_input_proj", 2), cfg.get("input_dropout", 0.5)

        # Registration order = official state_dict order (§4.3), training-only modules left out.
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))
        self.transformer = Transformer(cfg, d, H, ff, dropout)
        self.txt_position_embed = TextPositionEmbedding(cfg.get("max_q_l", 32), d)
        self.span_embed = MLP([d, d, d, 2])
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(cfg.get("num_queries", 10), 2)
        # 1×1 convs where TR-DETR has nn.Linear (keys net.1.conv1d.*), §3.2
        self.input_txt_proj = input_projection(cfg["t_feat_dim"], d, n_proj, in_drop, Conv1D)
        self.input_vid_proj = input_projection(self.video_width, d, n_proj, in_drop, Conv1D)
        self.feature_refinement = FeatureRefinement(d)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        # §4.1: a config may carry the pickled v_feat_dim that already counts the TEF; then the
        # weights' video width is 2 less than built, and the weights decide.
        w = state_dict.get("input_vid_proj.0.LayerNorm.weight")
        if w is not None and self.tef and w.shape[0] == self.video_width - 2:
            first = self.input_vid_proj[0]
            self.video_width = w.shape[0]
            self.input_vid_proj[0] = LinearLayer(w.shape[0], self.hidden_dim, first.relu, first.net[0].p, Conv1D)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, video, video_mask, query, query_mask):
        if query.shape[1] == 0:
            raise ValueError("videolights: the query has no tokens (the official model exits)")
        B, L, _ = video.shape
        vid_pad, txt_pad = video_mask < 0.5, query_mask < 0.5

        vid = self.input_vid_proj(video)
        txt = self.input_txt_proj(query)
        vid = self.feature_refinement(vid, txt, video_mask, query_mask)
        # Text positions are zero. The table is float32 even in a float64 model (quirk 6.2.10).
        pos = position_embedding_sine(video_mask, self.hidden_dim).to(vid.dtype)

        m_vt = m_tv = None
        if self.official_batch_masks:
            m_vt = _crossed_masks(vid_pad, txt_pad, self.nheads)
            m_tv = _crossed_masks(txt_pad, vid_pad, self.nheads)
        for layer in self.transformer.t2v_encoder.layers:
            # Every layer reads the original text; the global token does not take part (§3.4).
            vid = layer(vid, txt, pos, vid_pad, txt_pad, m_vt, m_tv)

        # Encoder over [global token; video]; the text is dropped here (§3.6).
        x = torch.cat([self.global_rep_token.expand(B, 1, -1), vid], dim=1)
        x_pos = torch.cat([self.global_rep_pos.expand(B, 1, -1), pos], dim=1)
        x_pad = torch.cat([vid_pad.new_zeros(B, 1), vid_pad], dim=1)
        for layer in self.transformer.encoder.layers:
            x = layer(x, x_pos, x_pad)
        memory_global, memory = x[:, 0], x[:, 1:]

        hs, refs = self.transformer.decoder(memory, pos, vid_pad, self.query_embed.weight)
        pred_logits = self.class_embed(hs[-1])
        # span_embed on the normalised output, added to the anchor that was the last layer's input.
        pred_spans = torch.sigmoid(self.span_embed(hs[-1]) + inverse_sigmoid(refs[-1]))
        saliency = torch.sum(self.saliency_proj1(memory) * self.saliency_proj2(memory_global)[:, None], dim=-1)
        saliency = saliency / math.sqrt(self.hidden_dim)
        return {"pred_logits": pred_logits, "pred_spans": pred_spans, "saliency_scores": saliency}
