#!/usr/bin/env python3
"""The bundled demo model of moment-gpu: a small TR-DETR trained on a SYNTHETIC planted-moment task.

No trained checkpoint of the official models can be shipped with the crate, so the demo runs a model
trained here, on synthetic data, and says so. It is NOT a video model: its "clips" and "tokens" are
vectors drawn around random concept directions, not CLIP/SlowFast features of real frames or words.

    python3 tools/train_demo.py train [--out weights] [--steps N] [--seed S]    # needs torch (CPU)
    python3 tools/train_demo.py example [--out weights]                           # numpy only
    python3 tools/train_demo.py make-data --split val --out DIR [--n N]           # numpy only
    python3 tools/train_demo.py evaluate [--eval-dir DIR] [--preds P.jsonl] [--device cpu]

* `train` trains the model with PyTorch on the CPU (1500 steps: about 8 CPU-minutes on one thread;
  14 minutes wall on a busy 2-core machine) and writes
  weights/demo.safetensors (F16, official TR-DETR state_dict keys at reduced width, the config in the
  metadata with the official option names plus "model": "tr_detr"), then the example input and its
  ground truth (same as `example`). The module below is written from the TR-DETR inference
  specification (not from the official code); its eval forward is the forward moment-gpu runs.
* `example` regenerates weights/example_video.npy, weights/example_query.npy (raw per-source
  features: the model's single 64-d "video" source and 64-d "text" tokens; moment-gpu L2-normalises
  rows and appends the 2 TEF dims itself) and weights/example_truth.json (windows in seconds and
  per-clip highlight scores).
* `make-data` writes a split in the QVHighlights layout: DIR/<split>.jsonl (qid, query, duration, vid,
  relevant_windows, relevant_clip_ids, saliency_scores with 3 annotators in 0..4) plus features in the
  official directory layout DIR/video/<vid>.npz (key `features`) and DIR/text/qid<qid>.npz (key
  `last_hidden_state`). The default held-out evaluation set is `--split val --n 300` (seeded,
  deterministic; disjoint from the training queries by seed).
* `evaluate` scores a predictions JSONL (the official submission format, e.g. from
  `moment predict --annotations ...`) against a split: R1@0.5, R1@0.7, mAP@0.5 and HIT@1 (>= Very
  Good) as defined by the standard QVHighlights evaluator. Without --preds it first creates the
  held-out set (if missing) under target/demo-eval and runs `cargo run --release -- predict` on it.

The synthetic task ("planted moments"): a fixed world of 32 named concepts, each a random unit vector
in a 64-d space shared by clips and tokens. A video of L = 16..32 clips (2 s each) is a sequence of
background scenes (one concept each) plus noise; the query's concept is planted, with a per-clip
strength, in one or two contiguous spans (the relevant windows); one or two other concepts are
planted elsewhere as distractors. Per-clip highlight levels 2..4 (4 = the core of a span, strongest
signal) give three annotators' scores in the QVHighlights 0..4 scale. A query is a sequence of 5..16
token vectors: a start token, "function word" vectors, one or two noisy copies of the concept and an
end token that summarises it.
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # torch_models (imported where torch is needed)

REPO = Path(__file__).resolve().parent.parent
DIM = 64                # width of the synthetic clip features and token features
CLIP_LEN = 2.0
MIN_CLIPS, MAX_CLIPS = 16, 32
N_CONCEPTS = 32
CONCEPT_NAMES = [
    "dog", "beach", "guitar", "sunset", "cooking", "snow", "city street", "cat", "fireworks", "car",
    "forest", "dancing", "ocean waves", "birthday cake", "mountain", "rain", "soccer", "horse",
    "kitchen", "concert crowd", "airplane", "painting", "swimming pool", "bicycle", "baby", "market",
    "waterfall", "library", "skateboard", "garden", "train", "campfire",
]
SPLIT_SEEDS = {"train": 1, "val": 2, "example": 3, "dev": 4}     # dev: monitoring during training
WORLD_SEED = 20240109

# The demo model's configuration, official TR-DETR option names (tr-detr.md §1.1). hidden_dim must be
# 256; width is reduced elsewhere so that the F16 file stays under 10 MB.
CONFIG = {
    "model": "tr_detr",
    "dset_name": "hl",
    "ctx_mode": "video_tef",
    "v_feat_dim": DIM,            # without the 2 TEF dims (opt.json convention): model input DIM + 2
    "t_feat_dim": DIM,
    "a_feat_dim": None,
    "max_q_l": 32,
    "max_v_l": 75,
    "clip_length": 2,
    "no_norm_vfeat": False,
    "no_norm_tfeat": False,
    "hidden_dim": 256,
    "nheads": 8,
    "enc_layers": 1,
    "dec_layers": 2,
    "dim_feedforward": 256,
    "num_queries": 10,
    "n_input_proj": 2,
    "pre_norm": False,
    "position_embedding": "sine",
    "use_txt_pos": False,
    "span_loss_type": "l1",
    "contrastive_align_loss": False,
    "aux_loss": True,
    "input_dropout": 0.1,
    "dropout": 0.0,
    "eval_bsz": 100,
    "no_sort_results": False,
    "conf_thd": 0.0,
    "nms_thd": -1,
    "max_before_nms": 10,
    "max_after_nms": 10,
    # Not official options: provenance of this file.
    "demo_note": "moment-gpu demo model: trained on SYNTHETIC planted-moment data (tools/train_demo.py), "
                 "not on real video; 64-d synthetic features in, not CLIP/SlowFast",
}


# ----------------------------------------------------------------------------------------------
# the synthetic world and its samples (numpy only)
# ----------------------------------------------------------------------------------------------

def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


_WORLD = []


def world():
    """Concept directions, function-word directions, start-token direction (fixed by WORLD_SEED)."""
    if _WORLD:
        return _WORLD[0]
    rng = np.random.default_rng(WORLD_SEED)
    concepts = _unit(rng.standard_normal((N_CONCEPTS, DIM)))
    words = _unit(rng.standard_normal((12, DIM)))
    sot = _unit(rng.standard_normal(DIM))
    _WORLD.append((concepts, words, sot))
    return _WORLD[0]


def _place_spans(rng, L, lengths, taken):
    """Start clips for spans of the given lengths, non-overlapping with `taken` (bool (L,)) and with
    at least 2 free clips between spans. Returns None if they do not fit."""
    starts = []
    occ = taken.copy()
    for n in lengths:
        free = [s for s in range(0, L - n + 1) if not occ[max(0, s - 2):min(L, s + n + 2)].any()]
        if not free:
            return None
        s = int(rng.choice(free))
        starts.append(s)
        occ[s:s + n] = True
    return starts


def make_sample(split, index, n_clips=None):
    """One synthetic (video, query, ground truth) sample, deterministic in (split, index)."""
    concepts, words, sot = world()
    rng = np.random.default_rng([SPLIT_SEEDS[split], index])
    L = int(n_clips) if n_clips else int(rng.integers(MIN_CLIPS, MAX_CLIPS + 1))
    c = int(rng.integers(N_CONCEPTS))
    others = [k for k in range(N_CONCEPTS) if k != c]

    while True:
        n_spans = 1 if rng.random() < 0.65 else 2
        max_len = max(4, min(10, L // (2 * n_spans + 1)))
        lengths = [int(rng.integers(4, max_len + 1)) for _ in range(n_spans)]
        starts = _place_spans(rng, L, lengths, np.zeros(L, bool))
        if starts is None:
            continue
        taken = np.zeros(L, bool)
        for s, n in zip(starts, lengths):
            taken[s:s + n] = True
        d_lengths = [int(rng.integers(3, 9)) for _ in range(int(rng.integers(1, 3)))]
        d_starts = _place_spans(rng, L, d_lengths, taken)
        if d_starts is None:
            d_lengths, d_starts = [], []
        break

    # background scenes
    x = np.zeros((L, DIM))
    t = 0
    while t < L:
        n = int(rng.integers(4, 13))
        b = int(rng.choice(others))
        x[t:t + n] += 0.5 * concepts[b]
        t += n
    # planted query concept with per-clip highlight levels 2..4
    level = np.zeros(L, int)
    for s, n in zip(starts, lengths):
        core = max(1, n // 3)
        c0 = s + int(rng.integers(0, n - core + 1))
        for k in range(s, s + n):
            dist = 0 if c0 <= k < c0 + core else min(abs(k - c0), abs(k - (c0 + core - 1)))
            level[k] = 4 if dist == 0 else (3 if dist <= 2 else 2)
    amp = np.where(level > 0, 0.3 * level, 0.0)
    x += amp[:, None] * concepts[c]
    # distractor concepts
    for s, n in zip(d_starts, d_lengths):
        dc = int(rng.choice(others))
        x[s:s + n] += rng.uniform(0.7, 0.95) * concepts[dc]
    x += rng.standard_normal((L, DIM)) * (0.4 / math.sqrt(DIM))
    x *= rng.uniform(0.5, 2.0, size=(L, 1))        # raw feature norms vary; the model L2-normalises

    # query tokens
    n_words = int(rng.integers(2, 13))
    n_concept = 1 if rng.random() < 0.6 else 2
    body = [words[int(k)] + rng.standard_normal(DIM) * (0.2 / math.sqrt(DIM))
            for k in rng.integers(len(words), size=n_words)]
    for _ in range(n_concept):
        pos = int(rng.integers(0, len(body) + 1))
        body.insert(pos, concepts[c] + rng.standard_normal(DIM) * (0.4 / math.sqrt(DIM)))
    eot = concepts[c] + 0.3 * np.mean(body, 0) + rng.standard_normal(DIM) * (0.4 / math.sqrt(DIM))
    q = np.stack([sot] + body + [eot])

    # annotations (QVHighlights layout)
    clip_ids = [int(k) for k in np.flatnonzero(level)]
    scores = []
    for k in clip_ids:
        lv = int(level[k])
        a = [int(np.clip(lv + rng.choice([-1, 0, 0, 0, 0, 1]), 1, 4)) for _ in range(3)]
        if lv == 4:
            a[0] = 4
        scores.append(a)
    windows = sorted([[s * CLIP_LEN, (s + n) * CLIP_LEN] for s, n in zip(starts, lengths)])
    name = CONCEPT_NAMES[c]
    prefix = {"train": 0, "val": 100000, "example": 900000, "dev": 200000}[split]
    ann = {
        "qid": prefix + index,
        "query": f"[synthetic] {name}",
        "duration": int(L * CLIP_LEN),
        "vid": f"synth_{split}_{index:06d}",
        "relevant_clip_ids": clip_ids,
        "saliency_scores": scores,
        "relevant_windows": [[float(a), float(b)] for a, b in windows],
    }
    return x.astype(np.float32), q.astype(np.float32), ann, level


# ----------------------------------------------------------------------------------------------
# preprocessing as moment-gpu / the official data loader does it
# ----------------------------------------------------------------------------------------------

def l2n(x):
    x = np.asarray(x, np.float32)
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + np.float32(1e-5))


def model_video(x):
    """Raw (L, 64) -> model input (L, 66): L2-normalised rows + TEF [t/L, t/L + 1/L] (float32)."""
    L = x.shape[0]
    st = np.arange(L, dtype=np.float32) / np.float32(L)
    ed = st + np.float32(1.0 / L)
    return np.concatenate([l2n(x), st[:, None], ed[:, None]], 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# writing data sets, the example
# ----------------------------------------------------------------------------------------------

def write_split(split, n, out):
    out = Path(out)
    (out / "video").mkdir(parents=True, exist_ok=True)
    (out / "text").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        x, q, ann, _ = make_sample(split, i)
        np.savez(out / "video" / f"{ann['vid']}.npz", features=x)
        np.savez(out / "text" / f"qid{ann['qid']}.npz", last_hidden_state=q)
        lines.append(json.dumps(ann))
    (out / f"{split}.jsonl").write_text("\n".join(lines))
    return out / f"{split}.jsonl"


EXAMPLE_INDEX = 6      # picked for its two planted windows (by the truth only, before any model ran)


def write_example(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, q, ann, level = make_sample("example", EXAMPLE_INDEX, n_clips=MAX_CLIPS)
    np.save(out / "example_video.npy", x)
    np.save(out / "example_query.npy", q)
    per_clip = np.zeros(len(level))
    for k, s in zip(ann["relevant_clip_ids"], ann["saliency_scores"]):
        per_clip[k] = np.mean(s)
    truth = dict(ann)
    truth["clip_length"] = CLIP_LEN
    truth["highlight_scores"] = [round(float(v), 4) for v in per_clip]
    truth["note"] = ("synthetic: the query concept was planted in these windows by tools/train_demo.py "
                     "(`example`); highlight_scores = mean of the 3 annotators per clip, 0 outside")
    body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in truth.items())
    (out / "example_truth.json").write_text("{\n" + body + "\n}\n")
    print(f"wrote {out}/example_video.npy {x.shape}, example_query.npy {q.shape}, example_truth.json "
          f"(windows {ann['relevant_windows']})")


# ----------------------------------------------------------------------------------------------
# metrics (definitions of the standard QVHighlights evaluator, shared/guides/evaluation.md)
# ----------------------------------------------------------------------------------------------

def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _hull_iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    den = max(a[1], b[1]) - min(a[0], b[0])
    return inter / den if den > 0 else 0.0


def _ap(preds, gts, thd):
    preds = sorted(preds[:10], key=lambda p: -p[2])       # stable
    locked = [False] * len(gts)
    tp = []
    for p in preds:
        ious = [_iou(p, g) for g in gts]
        order = sorted(range(len(gts)), key=lambda j: (-ious[j], -j))
        hit = False
        for j in order:
            if ious[j] < thd:
                break
            if locked[j]:
                continue
            locked[j] = hit = True
            break
        tp.append(hit)
    rec, prec, ntp = [0.0], [0.0], 0
    for i, h in enumerate(tp):
        ntp += h
        rec.append(ntp / len(gts))
        prec.append(ntp / (i + 1))
    rec.append(1.0)
    prec.append(0.0)
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec)) if rec[i] != rec[i - 1])


def metrics(gt_records, pred_records):
    preds = {p["qid"]: p for p in pred_records}
    missing = [g["qid"] for g in gt_records if g["qid"] not in preds]
    if missing:
        raise SystemExit(f"predictions lack {len(missing)} qid(s), e.g. {missing[:5]}")
    r1 = {0.5: [], 0.7: []}
    ap5, hit = [], []
    for g in gt_records:
        p = preds[g["qid"]]
        gts = g["relevant_windows"]
        wins = p["pred_relevant_windows"]
        top = wins[0]
        best = max(range(len(gts)), key=lambda j: (_iou(top, gts[j]), -j))
        v = _hull_iou(top, gts[best])
        for t in r1:
            r1[t].append(v >= t)
        ap5.append(_ap(wins, gts, 0.5))
        n = int(g["duration"] // 2)
        label = np.zeros((n, 3))
        for k, s in zip(g["relevant_clip_ids"], g["saliency_scores"]):
            label[k] = s
        s = p["pred_saliency_scores"]
        k = int(np.argmax(s))
        hit.append(k < n and bool((label[k] >= 4).any()))
    pct = lambda v: float(f"{100 * float(np.mean(v)):.2f}")
    return {"queries": len(gt_records), "MR-full-R1@0.5": pct(r1[0.5]), "MR-full-R1@0.7": pct(r1[0.7]),
            "MR-full-mAP@0.5": pct(ap5), "HL-min-VeryGood-Hit1": pct(hit)}


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# the TR-DETR module (PyTorch), written from the inference specification
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------

_PERMS = {}


def _match(cost):
    """Minimum-cost assignment of G targets to distinct queries (G <= 3: exhaustive). cost (Q, G)."""
    Q, G = cost.shape
    if G not in _PERMS:
        _PERMS[G] = np.array(list(itertools.permutations(range(Q), G)))
    perms = _PERMS[G]
    best = perms[np.argmin(cost[perms, np.arange(G)].sum(1))]
    return best            # query index per target


def _giou(a, b):
    """Generalised IoU of (x1, x2) spans, elementwise; tensors (..., 2)."""
    import torch
    inter = (torch.min(a[..., 1], b[..., 1]) - torch.max(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    hull = torch.max(a[..., 1], b[..., 1]) - torch.min(a[..., 0], b[..., 0])
    iou = inter / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def make_batch(samples):
    """Samples of one video length -> tensors (text padded, masks)."""
    import torch
    L = samples[0][0].shape[0]
    N = max(s[1].shape[0] for s in samples)
    B = len(samples)
    vid = np.stack([model_video(s[0]) for s in samples])
    txt = np.zeros((B, N, DIM), np.float32)
    tm = np.zeros((B, N), np.float32)
    for b, s in enumerate(samples):
        txt[b, :len(s[1])] = l2n(s[1])
        tm[b, :len(s[1])] = 1
    return (torch.from_numpy(vid), torch.ones(B, L), torch.from_numpy(txt), torch.from_numpy(tm))


def losses(out, samples):
    import torch
    import torch.nn.functional as F
    logits_all, spans_all, sal = out["all_logits"], out["all_spans"], out["saliency_scores"]
    total = 0.0
    parts = {}
    B, L = sal.shape
    for layer in range(logits_all.shape[0]):
        logits, spans = logits_all[layer], spans_all[layer]
        prob = torch.softmax(logits, -1)[..., 0].detach().numpy()
        target_cls = torch.ones(logits.shape[:2], dtype=torch.long)        # 1 = background
        l1, gi = [], []
        for b, s in enumerate(samples):
            gts = np.array(s[2]["relevant_windows"], np.float32) / (L * CLIP_LEN)       # (G, 2) x1, x2
            gcxw = np.stack([(gts[:, 0] + gts[:, 1]) / 2, gts[:, 1] - gts[:, 0]], -1)
            sp = spans[b].detach().numpy()
            pxx = np.stack([sp[:, 0] - sp[:, 1] / 2, sp[:, 0] + sp[:, 1] / 2], -1)
            c_l1 = np.abs(sp[:, None, :] - gcxw[None]).sum(-1)
            inter = np.clip(np.minimum(pxx[:, None, 1], gts[None, :, 1]) - np.maximum(pxx[:, None, 0], gts[None, :, 0]), 0, None)
            union = (pxx[:, None, 1] - pxx[:, None, 0]) + (gts[None, :, 1] - gts[None, :, 0]) - inter
            hull = np.maximum(pxx[:, None, 1], gts[None, :, 1]) - np.minimum(pxx[:, None, 0], gts[None, :, 0])
            c_giou = -(inter / np.maximum(union, 1e-6) - (hull - union) / np.maximum(hull, 1e-6))
            cost = 10 * c_l1 + c_giou - 4 * prob[b][:, None]
            qi = _match(cost)
            target_cls[b, qi] = 0
            g = torch.from_numpy(gcxw)
            p = spans[b, qi]
            l1.append((p - g).abs().sum(-1))
            px = torch.stack([p[:, 0] - p[:, 1] / 2, p[:, 0] + p[:, 1] / 2], -1)
            gx = torch.from_numpy(gts)
            gi.append(1 - _giou(px, gx))
        l1 = torch.cat(l1).mean()
        gi = torch.cat(gi).mean()
        ce = F.cross_entropy(logits.reshape(-1, 2), target_cls.reshape(-1), weight=torch.tensor([1.0, 0.1]))
        total = total + 10 * l1 + gi + 4 * ce
        if layer == logits_all.shape[0] - 1:
            parts.update(l1=l1.item(), giou=gi.item(), ce=ce.item())
    # saliency: pairwise hinge on the per-clip target + listwise "find a very good clip"
    target = np.zeros((B, L), np.float32)
    best = np.zeros((B, L), bool)
    for b, s in enumerate(samples):
        for k, sc in zip(s[2]["relevant_clip_ids"], s[2]["saliency_scores"]):
            target[b, k] = np.mean(sc)
        best[b] = s[3] == 4
    t = torch.from_numpy(target)
    diff = t[:, :, None] - t[:, None, :]                 # (B, i, j) > 0: clip i should beat clip j
    pair = (diff > 0).float()
    hinge = F.relu(0.2 - (sal[:, :, None] - sal[:, None, :])) * pair
    l_rank = hinge.sum() / pair.sum().clamp(min=1)
    logp = torch.log_softmax(sal, 1)
    l_list = -(torch.logsumexp(logp.masked_fill(~torch.from_numpy(best), -1e9), 1)).mean()
    total = total + 4 * l_rank + l_list
    parts.update(rank=l_rank.item(), listwise=l_list.item())
    return total, parts


def torch_predict(model, samples, batch=64):
    """Eval-mode outputs for samples of mixed lengths (grouped by length: no video padding)."""
    import torch
    groups = {}
    for i, s in enumerate(samples):
        groups.setdefault(s[0].shape[0], []).append(i)
    res = [None] * len(samples)
    model.eval()
    with torch.no_grad():
        for L, idx in groups.items():
            for k in range(0, len(idx), batch):
                part = idx[k:k + batch]
                out = model(*make_batch([samples[i] for i in part]))
                for j, i in enumerate(part):
                    res[i] = tuple(out[k][j].numpy() for k in ("pred_logits", "pred_spans", "saliency_scores"))
    model.train()
    return res


def torch_records(samples, outs):
    """Prediction records (unrounded windows; fine for R1/HIT@1 monitoring)."""
    recs = []
    for s, (lg, sp, sal) in zip(samples, outs):
        p = np.exp(lg - lg.max(-1, keepdims=True))
        p = p[:, 0] / p.sum(-1)
        dur = s[2]["duration"]
        wins = [[float((c - w / 2) * dur), float((c + w / 2) * dur), float(pp)] for (c, w), pp in zip(sp, p)]
        wins.sort(key=lambda r: -r[2])
        recs.append({"qid": s[2]["qid"], "pred_relevant_windows": wins, "pred_saliency_scores": sal.tolist()})
    return recs


def export_safetensors(model, path, cfg):
    from safetensors.numpy import save_file
    sd = model.state_dict()
    tensors = {k: v.detach().float().numpy().astype(np.float16) for k, v in sd.items()}
    for k, v in tensors.items():
        if not np.isfinite(v).all():
            raise SystemExit(f"{k} is not finite in float16")
    save_file(tensors, str(path), metadata={"config": json.dumps(cfg, sort_keys=True)})
    return len(tensors), sum(v.size for v in tensors.values())


def cmd_train(args):
    # One thread: on a shared machine, OpenMP threads spin-waiting for each other cost ~10x.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import torch
    except ImportError:
        raise SystemExit("`train` needs PyTorch (CPU is enough): pip install torch")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    cfg = dict(CONFIG)
    from torch_models import tr_detr
    model = tr_detr.build(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"TR-DETR demo model: {n_params:,} parameters", flush=True)

    t0 = time.time()
    train = [make_sample("train", i) for i in range(args.n_train)]
    val = [make_sample("dev", i) for i in range(args.n_val)]
    print(f"generated {len(train)} training and {len(val)} dev (monitoring) queries in {time.time() - t0:.1f} s", flush=True)
    by_len = {}
    for i, s in enumerate(train):
        by_len.setdefault(s[0].shape[0], []).append(i)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warm = 100
    # Warm-up, constant, then a linear decay to 5% over the last --decay-steps steps.
    decay_from = args.steps - args.decay_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warm) * (1.0 - 0.95 * min(1.0, max(0, k - decay_from) / max(1, args.decay_steps))))
    rng = np.random.default_rng(args.seed)
    lengths = np.array(sorted(by_len))
    weights = np.array([len(by_len[L]) for L in lengths], float)
    weights /= weights.sum()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.time(), time.process_time()
    best = None
    for step in range(1, args.steps + 1):
        L = int(rng.choice(lengths, p=weights))
        idx = rng.choice(by_len[L], size=min(args.batch, len(by_len[L])), replace=False)
        samples = [train[i] for i in idx]
        loss, parts = losses(model(*make_batch(samples)), samples)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps:
            msg = " ".join(f"{k} {v:.3f}" for k, v in parts.items())
            print(f"step {step} loss {loss.item():.3f} ({msg}) {time.time() - t0:.0f} s wall, "
                  f"{time.process_time() - c0:.0f} s cpu", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            m = metrics([s[2] for s in val], torch_records(val, torch_predict(model, val)))
            print(f"  dev ({len(val)} queries, torch, unrounded windows): {m}", flush=True)
            score = m["MR-full-R1@0.5"] + m["HL-min-VeryGood-Hit1"]
            if best is None or score >= best:
                best = score
                wall, cpu = (time.time() - t0) / 60, (time.process_time() - c0) / 60
                cfg["demo_training"] = (f"step {step} of {args.steps} (lr {args.lr}, decay over the last {args.decay_steps}), "
                                        f"batch {args.batch}, {args.n_train} synthetic training queries "
                                        f"(seed {args.seed}); {wall:.1f} min wall, "
                                        f"{cpu:.1f} min CPU on {args.threads} thread(s)")
                n, p = export_safetensors(model, out / "demo.safetensors", cfg)
                size = (out / "demo.safetensors").stat().st_size
                print(f"  wrote {out / 'demo.safetensors'} (step {step}): {n} tensors, {p:,} numbers, "
                      f"{size / 1e6:.2f} MB (F16); {wall:.1f} min wall, {cpu:.1f} min CPU", flush=True)
    write_example(out)


def cmd_example(args):
    write_example(Path(args.out))


def cmd_make_data(args):
    path = write_split(args.split, args.n, args.out)
    print(f"wrote {path} and {args.n} video/text feature files under {args.out}")


def cmd_evaluate(args):
    eval_dir = Path(args.eval_dir)
    ann = eval_dir / "val.jsonl"
    if not ann.exists() or len(read_jsonl(ann)) != args.n:
        write_split("val", args.n, eval_dir)
    preds = args.preds
    if preds is None:
        preds = eval_dir / f"preds_{args.device}.jsonl"
        cmd = ["cargo", "run", "--release", "--quiet", "--", "--device", args.device, "predict",
               "--weights", str(args.weights), "--annotations", str(ann), "--video-dir", str(eval_dir / "video"),
               "--query-dir", str(eval_dir / "text"), "--out", str(preds)]
        print("+ " + " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    m = metrics(read_jsonl(ann), read_jsonl(preds))
    print(json.dumps(m, indent=1))
    ok = m["MR-full-R1@0.5"] >= 90 and m["HL-min-VeryGood-Hit1"] >= 90
    print("acceptance (R1@0.5 >= 90 and HIT@1 >= 90):", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train and export weights/demo.safetensors + the example (needs torch)")
    t.add_argument("--out", default=str(REPO / "weights"))
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--decay-steps", type=int, default=600, help="linear learning-rate decay over the last N steps")
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-train", type=int, default=3000)
    t.add_argument("--n-val", type=int, default=300, help="dev queries for model selection")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--log-every", type=int, default=20)
    t.add_argument("--eval-every", type=int, default=100)
    e = sub.add_parser("example", help="write the example input and its ground truth")
    e.add_argument("--out", default=str(REPO / "weights"))
    d = sub.add_parser("make-data", aliases=["make-eval"], help="write a split in the QVHighlights layout")
    d.add_argument("--split", default="val", choices=["train", "val"])
    d.add_argument("--n", type=int, default=300)
    d.add_argument("--out", required=True)
    v = sub.add_parser("evaluate", help="R1@0.5 / HIT@1 of moment-gpu's predictions on the held-out set")
    v.add_argument("--eval-dir", default=str(REPO / "target" / "demo-eval"))
    v.add_argument("--n", type=int, default=300)
    v.add_argument("--preds", help="score this predictions JSONL instead of running `moment predict`")
    v.add_argument("--weights", default=str(REPO / "weights" / "demo.safetensors"))
    v.add_argument("--device", default="cpu", choices=["auto", "gpu", "cpu"])
    a = p.parse_args(argv)
    fn = {"train": cmd_train, "example": cmd_example, "make-data": cmd_make_data, "make-eval": cmd_make_data,
          "evaluate": cmd_evaluate}[a.cmd]
    return fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
