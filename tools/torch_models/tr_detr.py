"""TR-DETR in PyTorch eager, written from ../shared/specs/tr-detr.md with the official
state_dict keys: the model `tools/train_demo.py` trains the demo with, and the TR-DETR side of
`tools/bench_pytorch.py`. The forward handles batches whose videos share one length (text may be
padded); see `torch_models/__init__.py` for the module interface.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .preprocessing import l2_normalize, one_sample, tef
from .blocks import (DABDecoder, EncoderLayer, Layers, MLP, T2VLayer, TextPositionEmbedding,
                     context_query_attention, input_projection, inverse_sigmoid, pooled_sentence,
                     position_embedding_sine)


def TRAINING_ONLY(cfg):
    """Key prefixes a checkpoint may carry that inference never reads (spec §0): the unused text
    position table."""
    return ("txt_position_embed.",)


def preprocess(cfg, videos, queries):
    """Raw sources of one sample → (video, video_mask, query, query_mask), batch dimension 1
    (spec §2): each video source truncated to max_v_l and L2-normalised separately, all cut to
    the shortest, concatenated, TEF appended; the query tokens L2-normalised, cut to max_q_l."""
    mv = cfg.get("max_v_l", 75)
    mq = cfg.get("max_q_l", 32)
    srcs = [np.asarray(v, dtype=np.float32)[:mv] for v in videos]
    if not cfg.get("no_norm_vfeat", False):
        srcs = [l2_normalize(s) for s in srcs]
    n = min(len(s) for s in srcs)
    parts = [s[:n] for s in srcs]
    if "tef" in cfg.get("ctx_mode", "video_tef"):
        parts.append(tef(n))
    vid = np.concatenate(parts, 1)
    q = np.concatenate([np.asarray(s, dtype=np.float32) for s in queries], 1)[:mq]
    if not cfg.get("no_norm_tfeat", False):
        q = l2_normalize(q)
    return one_sample(vid, q)


def build(cfg):
    """The eval/training model for a TR-DETR config (official state_dict keys)."""

    d, H, ff = cfg["hidden_dim"], cfg["nheads"], cfg["dim_feedforward"]

    class Vec(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(*shape) * shape[0] ** -0.5)

    class Conv1x1(nn.Module):
        """Conv1d with kernel size 1 (weight (out, in, 1)) applied to (B, L, in) rows."""

        def __init__(self, i, o):
            super().__init__()
            lin = nn.Linear(i, o)
            self.weight = nn.Parameter(lin.weight.detach()[:, :, None].clone())
            self.bias = nn.Parameter(lin.bias.detach().clone())

        def forward(self, x):
            return F.linear(x, self.weight[:, :, 0], self.bias)

    class Wrap(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.conv1d = inner

        def forward(self, x):
            return self.conv1d(x)

    class CQAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.w4C = nn.Parameter(torch.randn(d, 1) * d ** -0.5)
            self.w4Q = nn.Parameter(torch.randn(d, 1) * d ** -0.5)
            self.w4mlu = nn.Parameter(torch.randn(1, 1, d) * d ** -0.5)
            self.cqa_linear = Wrap(Conv1x1(4 * d, d))

    class CQConcat(nn.Module):
        def __init__(self):
            super().__init__()
            self.weighted_pool = Vec((d, 1))
            self.conv1d = Wrap(Conv1x1(2 * d, d))

    class Fuser(nn.Module):
        """VSLNet context-query attention + query-pooled concat (spec §3.2)."""

        def __init__(self):
            super().__init__()
            self.cq_attention = CQAttention()
            self.cq_concat = CQConcat()

        def forward(self, V, T, vm, tm):
            a, c = self.cq_attention, self.cq_concat
            X1 = a.cqa_linear(context_query_attention(V, T, vm, tm, a.w4C, a.w4Q, a.w4mlu))
            qbar = pooled_sentence(T, tm, c.weighted_pool.weight, V.shape[1])
            return F.relu(c.conv1d(torch.cat([X1, qbar], -1)))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.t2v_encoder = Layers(cfg["enc_layers"], lambda: T2VLayer(d, H, ff))
            self.encoder = Layers(cfg["enc_layers"], lambda: EncoderLayer(d, H, ff))
            self.decoder = DABDecoder(d, H, ff, cfg["dec_layers"])

    class GruExtractor(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(d, d, num_layers=1, batch_first=True)

    class TRDETR(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = Transformer()
            self.txt_position_embed = TextPositionEmbedding(cfg["max_q_l"], d)   # unused (use_txt_pos = False)
            self.span_embed = MLP([d, d, d, 2])
            self.class_embed = nn.Linear(d, 2)
            self.query_embed = nn.Embedding(cfg["num_queries"], 2)
            n, p = cfg["n_input_proj"], cfg["input_dropout"]
            self.input_txt_proj = input_projection(cfg["t_feat_dim"], d, n, p)
            self.input_vid_proj = input_projection(cfg["v_feat_dim"] + 2, d, n, p)
            self.saliency_proj1 = nn.Linear(d, d)
            self.fuser = Fuser()
            self.gru_extractor = GruExtractor()
            with torch.no_grad():     # anchors spread over the video (DAB-style init)
                Q = cfg["num_queries"]
                cx = (torch.arange(Q, dtype=torch.float32) + 0.5) / Q
                w = torch.tensor([0.1, 0.2, 0.3] * Q)[:Q]
                self.query_embed.weight.copy_(inverse_sigmoid(torch.stack([cx, w], -1)))

        def saliency(self, x):
            return self.saliency_proj1(x).sum(-1) / math.sqrt(d)

        def forward(self, src_vid, vid_mask, src_txt, txt_mask):
            """Forward of spec §3 for batches WITHOUT video padding (every video of a batch has the
            same L; text padding is masked): the last decoder layer's "pred_logits" / "pred_spans",
            every layer's ("all_logits", "all_spans", for the training losses) and the saliency."""
            tr = self.transformer
            vpad, tpad = vid_mask < 0.5, txt_mask < 0.5
            V = self.input_vid_proj(src_vid)
            T = self.input_txt_proj(src_txt)
            Vf = self.fuser(V, T, vid_mask, txt_mask)
            pos = position_embedding_sine(vid_mask, d)
            s = Vf
            for layer in tr.t2v_encoder.layers:
                s = layer(s, T, pos, tpad)

            def encoder(h):
                for layer in tr.encoder.layers:
                    h = layer(h, pos, vpad)
                return h

            m1 = encoder(s)
            w = torch.softmax(self.saliency(m1), 1)
            m2 = encoder(m1 + s * w[:, :, None])
            hs, refs = map(torch.stack, tr.decoder(m2, pos, vpad, self.query_embed.weight))
            logits = self.class_embed(hs)
            spans = torch.sigmoid(self.span_embed(hs) + inverse_sigmoid(refs))
            # MR2HD on the last layer's top-1 span
            B, L, _ = m2.shape
            with torch.no_grad():
                top = torch.softmax(logits[-1], -1)[..., 0].argmax(-1)
                sp = spans[-1][torch.arange(B), top]
                x1, x2 = sp[:, 0] - sp[:, 1] / 2, sp[:, 0] + sp[:, 1] / 2
                Lc = torch.tensor(L * cfg["clip_length"], dtype=torch.float32)
                st = torch.floor(x1 * Lc / cfg["clip_length"]).long().tolist()
                ed = torch.floor(x2 * Lc / cfg["clip_length"]).long().tolist()
            rows = []
            for b in range(B):
                r = V[b][st[b]:ed[b] + 1]          # Python slice semantics (negative start wraps)
                r = r[:L]
                rows.append(torch.cat([r, V.new_zeros(L - r.shape[0], d)], 0))
            g = self.gru_extractor.gru(torch.stack(rows))[1][0]         # final hidden (B, d)
            wt = torch.einsum("bd,bld->bl", g, V)
            m3 = m2 * wt[:, :, None] + m2
            return {"pred_logits": logits[-1], "pred_spans": spans[-1], "saliency_scores": self.saliency(m3),
                    "all_logits": logits, "all_spans": spans}

    return TRDETR()
