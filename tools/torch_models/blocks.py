"""Building blocks that several of our PyTorch models share, written once: the DETR MLP and sine
embeddings, the DAB-DETR attention / decoder layer / anchor decoder, the post-norm encoder and
T2V layers with a PReLU FFN, the Moment-DETR input projection and VSLNet's context-query attention.

Every module keeps the official attribute names, so a model that uses one has the same
state_dict keys as the official code; per-model differences (head count, FFN width, dropout, the
input projection's linear map) are constructor arguments. Modules create their submodules in the
official order, so a model built under a given seed draws the same initial weights.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

VSL_NEG = -1e30     # VSLNet's mask_logits: ADDED to the masked logits (not −inf)


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

class MLP(nn.Module):
    """DETR MLP: Linear layers with ReLU between them, none after the last (keys layers.{i})."""

    def __init__(self, dims):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Layers(nn.Module):
    """A `layers` ModuleList holder (an official encoder without a final norm)."""

    def __init__(self, n, make):
        super().__init__()
        self.layers = nn.ModuleList(make() for _ in range(n))


def inverse_sigmoid(x, eps=1e-3):
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def sine_embed(x, n, scale=1.0, temperature=10000):
    """Interleaved sin/cos of x·scale / temperature^(2⌊k/2⌋/n), k < n (the DETR sine embedding),
    float32 like the official code."""
    k = torch.arange(n, dtype=torch.float32, device=x.device)
    dim_t = float(temperature) ** (2 * torch.div(k, 2, rounding_mode="floor") / n)
    p = x[..., None] * scale / dim_t
    return torch.stack([p[..., 0::2].sin(), p[..., 1::2].cos()], -1).flatten(-2)


def position_embedding_sine(mask, d, temperature=10000):
    """PositionEmbeddingSine(d, normalize=True, scale 2π) over the clip axis of a (B, L) mask.
    Mask-based cumsum: valid clips get the same PE as in an unpadded run, padded ones repeat the
    last valid angle. Always float32 (the official table is, even in a float64 model)."""
    x = mask.float().cumsum(1)
    x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
    return sine_embed(x, d, 1.0, temperature)


def anchor_sine_embed(ref, d=256, temperature=10000):
    """(center, width) anchors → [sine_{d/2}(center) | sine_{d/2}(width)] (DAB-DETR
    `gen_sineembed_for_position`)."""
    return torch.cat([sine_embed(ref[..., 0], d // 2, 2 * math.pi, temperature),
                      sine_embed(ref[..., 1], d // 2, 2 * math.pi, temperature)], -1)


# ----------------------------------------------------------------------------------------------
# input projection and VSLNet context-query attention
# ----------------------------------------------------------------------------------------------

class LinearLayer(nn.Module):
    """LayerNorm → Dropout → projection [→ ReLU] (keys LayerNorm.*, net.1.*): one layer of the
    Moment-DETR input projection. `projection(in_dim, out_dim)` builds its linear map (nn.Linear,
    or a 1×1-conv module where the official code uses one)."""

    def __init__(self, in_dim, out_dim, relu, dropout, projection=nn.Linear):
        super().__init__()
        self.relu = relu
        self.LayerNorm = nn.LayerNorm(in_dim)
        self.net = nn.Sequential(nn.Dropout(dropout), projection(in_dim, out_dim))

    def forward(self, x):
        x = self.net(self.LayerNorm(x))
        return F.relu(x) if self.relu else x


def input_projection(in_dim, d, n_layers, dropout, projection=nn.Linear):
    # ReLU after every layer except the last (relu_args[n-1] = False).
    return nn.Sequential(*[LinearLayer(in_dim if i == 0 else d, d, i < n_layers - 1, dropout, projection)
                           for i in range(n_layers)])


def context_query_attention(V, T, vid_mask, txt_mask, w4C, w4Q, w4mlu):
    """VSLNet context-query attention → [V | C2Q | V⊙C2Q | V⊙Q2C] (B, L, 4d), before `cqa_linear`.
    Masks are float (1 = valid), added as −1e30 like the official mask_logits."""
    # trilinear similarity, no scaling: S[b,i,j] = V·w4C + T·w4Q + (V ⊙ w4mlu)·T
    S = V @ w4C + (T @ w4Q).transpose(1, 2) + (V * w4mlu) @ T.transpose(1, 2)
    S_r = torch.softmax(S + (1 - txt_mask[:, None, :]) * VSL_NEG, dim=2)         # over tokens
    S_c = torch.softmax(S + (1 - vid_mask[:, :, None]) * VSL_NEG, dim=1)         # over clips
    c2q = S_r @ T
    q2c = (S_r @ S_c.transpose(1, 2)) @ V
    return torch.cat([V, c2q, V * c2q, V * q2c], -1)


def pooled_sentence(T, txt_mask, weight, L):
    """VSLNet CQ-concatenate's attention-pooled sentence vector (pooling vector `weight` (d, 1)),
    broadcast to L clips: (B, L, d)."""
    a = torch.softmax((T @ weight)[..., 0] + (1 - txt_mask) * VSL_NEG, dim=1)
    return (a[:, :, None] * T).sum(1, keepdim=True).expand(-1, L, -1)


# ----------------------------------------------------------------------------------------------
# encoder layers (post-norm, PReLU FFN)
# ----------------------------------------------------------------------------------------------

class _AttentionFFNLayer(nn.Module):
    """Parameters of the post-norm layers below: one nn.MultiheadAttention, a PReLU FFN (one
    slope) and two LayerNorms (keys self_attn, linear1, linear2, norm1, norm2, activation)."""

    def __init__(self, d, nheads, dim_feedforward, dropout=0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nheads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.activation = nn.PReLU()

    def ffn(self, x):
        return self.linear2(self.activation(self.linear1(x)))


class EncoderLayer(_AttentionFFNLayer):
    """Post-norm DETR encoder layer: q = k = x + pos, v = x."""

    def forward(self, x, pos, pad):
        qk = x + pos
        x = self.norm1(x + self.self_attn(qk, qk, x, key_padding_mask=pad, need_weights=False)[0])
        return self.norm2(x + self.ffn(x))


class T2VLayer(_AttentionFFNLayer):
    """`T2V_TransformerEncoderLayer`: video rows attend to the text (keys/values, text padding
    masked). Norm placement LN2(x + FFN(LN1(x))) with x = video + attn."""

    def forward(self, vid, txt, pos, txt_pad):
        x = vid + self.self_attn(vid + pos, txt, txt, key_padding_mask=txt_pad, need_weights=False)[0]
        return self.norm2(x + self.ffn(self.norm1(x)))


# ----------------------------------------------------------------------------------------------
# DAB-DETR decoder
# ----------------------------------------------------------------------------------------------

class ProjectedAttention(nn.Module):
    """DAB-DETR's custom MultiheadAttention: q, k, v arrive projected (no in-projection); head h
    takes the contiguous channel slice h of q/k (E/H wide, scale (E/H)^-1/2) and of v (its own
    width Ev/H); only `out_proj` is a parameter. `row_scale` (B, T) multiplies each post-softmax
    row without renormalising (SG-DETR's saliency gating)."""

    def __init__(self, d, nheads):
        super().__init__()
        self.nheads = nheads
        self.out_proj = nn.Linear(d, d)

    def forward(self, q, k, v, key_padding_mask=None, row_scale=None):
        B, T, E = q.shape
        S, Ev, H = k.shape[1], v.shape[-1], self.nheads
        qh = q.reshape(B, T, H, E // H).transpose(1, 2) * (E // H) ** -0.5
        kh = k.reshape(B, S, H, E // H).transpose(1, 2)
        vh = v.reshape(B, S, H, Ev // H).transpose(1, 2)
        logits = qh @ kh.transpose(2, 3)                                    # (B, H, T, S)
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        w = torch.softmax(logits, dim=-1)
        if row_scale is not None:
            w = w * row_scale[:, None, :, None]
        return self.out_proj((w @ vh).transpose(1, 2).reshape(B, T, Ev))


def head_concat(content, position, nheads):
    """Per head, [content | position] channels: (B, n, d) twice → (B, n, 2d), head width 2d/H."""
    B, n, d = content.shape
    hd = d // nheads
    return torch.cat([content.view(B, n, nheads, hd), position.view(B, n, nheads, hd)], -1).reshape(B, n, 2 * d)


class DABDecoderLayer(nn.Module):
    """DAB / QD-DETR conditional decoder layer: separate content/position projections, per-head
    [content | sine] concatenation in the cross-attention, post-norm PReLU FFN. `ca_qpos_proj`
    exists in the first layer only, and only there are positions added to the content query and
    key (keep_query_pos = False)."""

    def __init__(self, d, nheads, dim_feedforward, first):
        super().__init__()
        lin = lambda: nn.Linear(d, d)
        self.nheads, self.first = nheads, first
        self.sa_qcontent_proj, self.sa_qpos_proj = lin(), lin()
        self.sa_kcontent_proj, self.sa_kpos_proj = lin(), lin()
        self.sa_v_proj = lin()
        self.self_attn = ProjectedAttention(d, nheads)
        self.norm1 = nn.LayerNorm(d)
        self.ca_qcontent_proj = lin()
        if first:
            self.ca_qpos_proj = lin()
        self.ca_kcontent_proj, self.ca_kpos_proj = lin(), lin()
        self.ca_v_proj = lin()
        self.ca_qpos_sine_proj = lin()
        self.cross_attn = ProjectedAttention(d, nheads)
        self.linear1 = nn.Linear(d, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.activation = nn.PReLU()

    def forward(self, tgt, memory, pos, vid_pad, query_pos, query_sine):
        # self-attention among the queries (no mask)
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.self_attn(q, k, self.sa_v_proj(tgt)))
        # cross-attention to the memory: q/k heads twice as wide as the value heads
        qc = self.ca_qcontent_proj(tgt)
        kc = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        kp = self.ca_kpos_proj(pos)
        if self.first:
            qc = qc + self.ca_qpos_proj(query_pos)
            kc = kc + kp
        q = head_concat(qc, self.ca_qpos_sine_proj(query_sine), self.nheads)
        k = head_concat(kc, kp, self.nheads)
        tgt = self.norm2(tgt + self.cross_attn(q, k, v, key_padding_mask=vid_pad))
        return self.norm3(tgt + self.linear2(self.activation(self.linear1(tgt))))


class DABDecoder(nn.Module):
    """DAB-DETR anchor decoder: sigmoid (center, width) anchors, refined after every layer by
    `bbox_embed` on the UN-normalised output; `norm` gives each layer's output."""

    def __init__(self, d, nheads, dim_feedforward, n_layers):
        super().__init__()
        self.layers = nn.ModuleList(DABDecoderLayer(d, nheads, dim_feedforward, l == 0) for l in range(n_layers))
        self.norm = nn.LayerNorm(d)
        self.query_scale = MLP([d, d, d])                  # cond_elewise
        self.ref_point_head = MLP([d, d, d])
        self.bbox_embed = MLP([d, d, d, 2])                # decoder-internal, NOT the span head
        self.ref_anchor_head = MLP([d, d, 1])              # modulate_t_attn

    def forward(self, memory, pos, vid_pad, anchors):
        """→ (hs, refs): per layer, the normalised output and the anchor that ENTERED the layer."""
        B, d = memory.shape[0], memory.shape[2]
        ref = torch.sigmoid(anchors)[None].expand(B, -1, -1)
        out = memory.new_zeros(B, anchors.shape[0], d)
        hs, refs = [], []
        for l, layer in enumerate(self.layers):
            if l > 0:
                # DAB-DETR training detaches the refined anchor; no effect on the eval forward.
                # (The refinement after the last layer is never used, so it is not computed.)
                ref = torch.sigmoid(self.bbox_embed(out) + inverse_sigmoid(ref)).detach()
            refs.append(ref)
            sine = anchor_sine_embed(ref, d)
            qpos = self.ref_point_head(sine)               # of the unscaled sine embedding
            if l > 0:                                      # layer 0: scale 1
                sine = sine * self.query_scale(out)
            # one scalar per query, divided by the anchor width, modulates all channels
            sine = sine * (torch.sigmoid(self.ref_anchor_head(out))[..., 0] / ref[..., 1])[..., None]
            out = layer(out, memory, pos, vid_pad, qpos, sine)
            hs.append(self.norm(out))
        return hs, refs


class TextPositionEmbedding(nn.Module):
    """Built by the official model but unused (use_txt_pos = False); kept for the state_dict."""

    def __init__(self, n, d):
        super().__init__()
        self.position_embeddings = nn.Embedding(n, d)
        self.LayerNorm = nn.LayerNorm(d)
