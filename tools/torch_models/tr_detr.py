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


def TRAINING_ONLY(cfg):
    """Key prefixes a checkpoint may carry that inference never reads (spec §0): the unused text
    position table."""
    return ("txt_position_embed.",)


def _l2n(x):
    """Row L2 normalisation, the official eps ADDED to the norm (x / (‖x‖ + 1e-5)), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + np.float32(1e-5))


def preprocess(cfg, videos, queries):
    """Raw sources of one sample → (video, video_mask, query, query_mask), batch dimension 1
    (spec §2): each video source truncated to max_v_l and L2-normalised separately, all cut to
    the shortest, concatenated, TEF appended; the query tokens L2-normalised, cut to max_q_l."""
    mv = cfg.get("max_v_l", 75)
    mq = cfg.get("max_q_l", 32)
    srcs = [np.asarray(v, dtype=np.float32)[:mv] for v in videos]
    if not cfg.get("no_norm_vfeat", False):
        srcs = [_l2n(s) for s in srcs]
    n = min(len(s) for s in srcs)
    parts = [s[:n] for s in srcs]
    if "tef" in cfg.get("ctx_mode", "video_tef"):
        st = np.arange(n, dtype=np.float32) / np.float32(n)
        parts.append(np.stack([st, st + np.float32(1.0 / n)], 1))
    vid = np.concatenate(parts, 1)
    q = np.concatenate([np.asarray(s, dtype=np.float32) for s in queries], 1)[:mq]
    if not cfg.get("no_norm_tfeat", False):
        q = _l2n(q)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]
    return t(vid), torch.ones(1, len(vid)), t(q), torch.ones(1, len(q))


def build(cfg):
    """The eval/training model for a TR-DETR config (official state_dict keys)."""

    d, H = cfg["hidden_dim"], cfg["nheads"]

    class LinearLayer(nn.Module):
        """[ReLU](Linear(Dropout(LayerNorm(x)))): LayerNorm on the layer input (keys LayerNorm.*, net.1.*)."""

        def __init__(self, i, o, relu, p):
            super().__init__()
            self.relu = relu
            self.LayerNorm = nn.LayerNorm(i)
            self.net = nn.Sequential(nn.Dropout(p), nn.Linear(i, o))

        def forward(self, x):
            x = self.net(self.LayerNorm(x))
            return F.relu(x) if self.relu else x

    class MLP(nn.Module):
        def __init__(self, dims):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

        def forward(self, x):
            for i, lin in enumerate(self.layers):
                x = lin(x)
                if i < len(self.layers) - 1:
                    x = F.relu(x)
            return x

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
            a = self.cq_attention
            S = V @ a.w4C + (T @ a.w4Q).transpose(1, 2) + (V * a.w4mlu) @ T.transpose(1, 2)
            S_r = torch.softmax(S + (1 - tm[:, None, :]) * -1e30, dim=2)
            S_c = torch.softmax(S + (1 - vm[:, :, None]) * -1e30, dim=1)
            C2Q = S_r @ T
            Q2C = (S_r @ S_c.transpose(1, 2)) @ V
            X1 = a.cqa_linear(torch.cat([V, C2Q, V * C2Q, V * Q2C], -1))
            c = self.cq_concat
            alpha = torch.softmax((T @ c.weighted_pool.weight)[..., 0] + (1 - tm) * -1e30, dim=1)
            qbar = (alpha[:, :, None] * T).sum(1, keepdim=True).expand(-1, V.shape[1], -1)
            return F.relu(c.conv1d(torch.cat([X1, qbar], -1)))

    class T2VLayer(nn.Module):
        """Video rows attend to the text; out = LN2(x + FFN(LN1(x))), x = vid + attn."""

        def __init__(self):
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d, H, batch_first=True)
            self.linear1 = nn.Linear(d, cfg["dim_feedforward"])
            self.linear2 = nn.Linear(cfg["dim_feedforward"], d)
            self.norm1 = nn.LayerNorm(d)
            self.norm2 = nn.LayerNorm(d)
            self.activation = nn.PReLU()

        def forward(self, vid, txt, pos, tpad):
            a = self.self_attn(vid + pos, txt, txt, key_padding_mask=tpad, need_weights=False)[0]
            x = vid + a
            return self.norm2(x + self.linear2(self.activation(self.linear1(self.norm1(x)))))

    class EncoderLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = nn.MultiheadAttention(d, H, batch_first=True)
            self.linear1 = nn.Linear(d, cfg["dim_feedforward"])
            self.linear2 = nn.Linear(cfg["dim_feedforward"], d)
            self.norm1 = nn.LayerNorm(d)
            self.norm2 = nn.LayerNorm(d)
            self.activation = nn.PReLU()

        def forward(self, x, pos, vpad):
            q = x + pos
            x = self.norm1(x + self.self_attn(q, q, x, key_padding_mask=vpad, need_weights=False)[0])
            return self.norm2(x + self.linear2(self.activation(self.linear1(x))))

    class Attn(nn.Module):
        """Attention on already-projected q, k, v (only an output projection)."""

        def __init__(self):
            super().__init__()
            self.out_proj = nn.Linear(d, d)

        def forward(self, q, k, v, pad=None):
            B, Lq, E = q.shape
            Lk = k.shape[1]
            hd, vd = E // H, v.shape[-1] // H
            qh = q.view(B, Lq, H, hd).transpose(1, 2) * hd ** -0.5
            kh = k.view(B, Lk, H, hd).transpose(1, 2)
            vh = v.view(B, Lk, H, vd).transpose(1, 2)
            logits = qh @ kh.transpose(2, 3)
            if pad is not None:
                logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
            out = torch.softmax(logits, -1) @ vh
            return self.out_proj(out.transpose(1, 2).reshape(B, Lq, H * vd))

    class DecoderLayer(nn.Module):
        def __init__(self, first):
            super().__init__()
            lin = lambda: nn.Linear(d, d)
            self.first = first
            self.sa_qcontent_proj, self.sa_qpos_proj = lin(), lin()
            self.sa_kcontent_proj, self.sa_kpos_proj = lin(), lin()
            self.sa_v_proj = lin()
            self.self_attn = Attn()
            self.norm1 = nn.LayerNorm(d)
            self.ca_qcontent_proj = lin()
            if first:
                self.ca_qpos_proj = lin()
            self.ca_kcontent_proj, self.ca_kpos_proj = lin(), lin()
            self.ca_v_proj = lin()
            self.ca_qpos_sine_proj = lin()
            self.cross_attn = Attn()
            self.linear1 = nn.Linear(d, cfg["dim_feedforward"])
            self.linear2 = nn.Linear(cfg["dim_feedforward"], d)
            self.norm2 = nn.LayerNorm(d)
            self.norm3 = nn.LayerNorm(d)
            self.activation = nn.PReLU()

        def forward(self, out, mem, pos, vpad, qpos, sine):
            q = self.sa_qcontent_proj(out) + self.sa_qpos_proj(qpos)
            k = self.sa_kcontent_proj(out) + self.sa_kpos_proj(qpos)
            out = self.norm1(out + self.self_attn(q, k, self.sa_v_proj(out)))
            qc = self.ca_qcontent_proj(out)
            kc = self.ca_kcontent_proj(mem)
            v = self.ca_v_proj(mem)
            kp = self.ca_kpos_proj(pos)
            if self.first:
                qc = qc + self.ca_qpos_proj(qpos)
                kc = kc + kp
            qs = self.ca_qpos_sine_proj(sine)
            B, Q, _ = qc.shape
            L = kc.shape[1]
            hd = d // H
            q = torch.cat([qc.view(B, Q, H, hd), qs.view(B, Q, H, hd)], -1).reshape(B, Q, 2 * d)
            k = torch.cat([kc.view(B, L, H, hd), kp.view(B, L, H, hd)], -1).reshape(B, L, 2 * d)
            out = self.norm2(out + self.cross_attn(q, k, v, vpad))
            return self.norm3(out + self.linear2(self.activation(self.linear1(out))))

    def inverse_sigmoid(x, eps=1e-3):
        x = x.clamp(0, 1)
        return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))

    def sine_1d(x, n, scale):
        """Interleaved sin/cos of x[..., None] * scale / 10000 ** (2 floor(k/2) / n), k < n."""
        k = torch.arange(n, dtype=torch.float32)
        dim_t = 10000.0 ** (2 * torch.div(k, 2, rounding_mode="floor") / n)
        p = x[..., None] * scale / dim_t
        return torch.stack([p[..., 0::2].sin(), p[..., 1::2].cos()], -1).flatten(-2)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(DecoderLayer(l == 0) for l in range(cfg["dec_layers"]))
            self.norm = nn.LayerNorm(d)
            self.query_scale = MLP([d, d, d])
            self.ref_point_head = MLP([d, d, d])
            self.bbox_embed = MLP([d, d, d, 2])
            self.ref_anchor_head = MLP([d, d, 1])

        def forward(self, mem, pos, vpad, anchors):
            B = mem.shape[0]
            ref = torch.sigmoid(anchors)[None].expand(B, -1, -1)
            out = torch.zeros(B, anchors.shape[0], d)
            hs, refs = [], []
            for l, layer in enumerate(self.layers):
                refs.append(ref)
                sine = torch.cat([sine_1d(ref[..., 0], 128, 2 * math.pi), sine_1d(ref[..., 1], 128, 2 * math.pi)], -1)
                qpos = self.ref_point_head(sine)
                if l > 0:
                    sine = sine * self.query_scale(out)
                rc = torch.sigmoid(self.ref_anchor_head(out))
                sine = sine * (rc[..., 0] / ref[..., 1])[..., None]
                out = layer(out, mem, pos, vpad, qpos, sine)
                # DAB-DETR training detaches the refined anchor; no effect on the eval forward.
                ref = torch.sigmoid(self.bbox_embed(out) + inverse_sigmoid(ref)).detach()
                hs.append(self.norm(out))
            return torch.stack(hs), torch.stack(refs)

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.t2v_encoder = nn.Module()
            self.t2v_encoder.layers = nn.ModuleList(T2VLayer() for _ in range(cfg["enc_layers"]))
            self.encoder = nn.Module()
            self.encoder.layers = nn.ModuleList(EncoderLayer() for _ in range(cfg["enc_layers"]))
            self.decoder = Decoder()

    class TxtPos(nn.Module):
        """Unused at inference (use_txt_pos = False); present in the official state_dict."""

        def __init__(self):
            super().__init__()
            self.position_embeddings = nn.Embedding(cfg["max_q_l"], d)
            self.LayerNorm = nn.LayerNorm(d)

    class GruExtractor(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(d, d, num_layers=1, batch_first=True)

    class TRDETR(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = Transformer()
            self.txt_position_embed = TxtPos()
            self.span_embed = MLP([d, d, d, 2])
            self.class_embed = nn.Linear(d, 2)
            self.query_embed = nn.Embedding(cfg["num_queries"], 2)
            n = cfg["n_input_proj"]
            vin = cfg["v_feat_dim"] + 2
            tin = cfg["t_feat_dim"]
            p = cfg["input_dropout"]
            self.input_txt_proj = nn.Sequential(*[LinearLayer(tin if k == 0 else d, d, k < n - 1, p) for k in range(n)])
            self.input_vid_proj = nn.Sequential(*[LinearLayer(vin if k == 0 else d, d, k < n - 1, p) for k in range(n)])
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
            x = torch.cumsum(vid_mask, 1)
            x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
            pos = sine_1d(x, d, 1.0)
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
            hs, refs = tr.decoder(m2, pos, vpad, self.query_embed.weight)
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
