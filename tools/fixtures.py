#!/usr/bin/env python3
"""Generate the model test fixtures of moment-gpu from the float64 NumPy reference specifications.

    python3 tools/fixtures.py [--out DIR] [--shared PATH] [--force] [--jobs N] [MODEL ...]

MODEL is any of tr_detr, ld_detr, videolights, sg_detr (default: all four). For each model this
writes, under DIR/<model>/ (DIR defaults to <repo>/target/fixtures):

* small.safetensors / default.safetensors: seeded random weights with the official keys, written
  by the reference's `random-weights` for a small config (every code path, small widths and layer
  counts) and for the official default config (VideoLights also gets `nonb.safetensors`, its
  released non-BLIP config, and a case for it);
* one folder per case holding the model inputs (video.npy, video_mask.npy, query.npy,
  query_mask.npy: float32, zero-padded, masks 1 = valid), the raw per-source features they were
  preprocessed from (raw_s<b>_video<k>.npy, raw_s<b>_query<k>.npy), expected.npz (the reference
  outputs, float64, sample axis first, NaN beyond a sample's own sizes) and expected.jsonl (the
  reference's prediction record per sample, joined by "\\n" like the official files);
* manifest.json describing every case (see tools/README.md for the full schema).

Each sample is run ALONE (B = 1) through the reference: the expected outputs of a padded batch are
the per-sample unpadded results, never the official batch quirks. Inputs are drawn from seeded
generators, so the output is deterministic. TR-DETR and LD-DETR report how close a sample is to a
discontinuity (top-1 query choice, span-to-clip floor); such samples are re-drawn with the next
seed until both margins are at least 1e-3 (a sample that never gets there is flagged).

The reference scripts are only run as subprocesses (never imported): <shared>/reference/<model>_ref.py,
where <shared> is --shared, else $MOMENT_SHARED, else the `shared` folder beside the repository
(for a git worktree also the one beside the main checkout). Needs numpy and safetensors.

A model whose manifest carries this generator's VERSION and the reference script's SHA-256 is
skipped unless --force. Generation happens in a temporary folder that replaces DIR/<model> at the
end, under a lock where the platform has one, so concurrent invocations are safe.

Exit status: 0 done, 1 generation failed, 2 bad arguments, 3 numpy/safetensors missing,
4 reference scripts not found.
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import numpy as np
    from safetensors.numpy import load_file
except ImportError as _e:   # reported by main() with the install hint
    np = load_file = None
    _IMPORT_ERROR = _e
else:
    _IMPORT_ERROR = None

# Bump whenever the script changes what it writes: existing fixtures are then regenerated.
VERSION = "1"

REPO = Path(__file__).resolve().parent.parent
MARGIN_GOAL = 1e-3     # re-draw a TR-DETR/LD-DETR sample whose top-1 or range margin is below this
MAX_ATTEMPTS = 25

QUERY_TEXT_ESCAPES = 'a man says "hi" to a café owner \u2014 na\u00efve \U0001F3AC back\\slash'

# --------------------------------------------------------------------------------------------------
# Models: reference script, configs, feature sources, how its `run` command is called
# --------------------------------------------------------------------------------------------------

MODELS = {
    "tr_detr": {
        "script": "tr_detr_ref.py",
        "seed": 101,
        # hidden_dim is fixed at 256 (decoder anchor sine embedding); enc_layers counts both the T2V
        # and the self-attention encoder (the encoder still runs twice around HD2MR); 2 decoder layers
        # exercise the layer > 0 path (query_scale, no ca_qpos_proj).
        "small": {"v_feat_dim": 40, "t_feat_dim": 16, "dim_feedforward": 32, "enc_layers": 1, "dec_layers": 2},
        "small_sources": ([24, 16], [16]),          # SlowFast-like + CLIP-like; + 2 TEF = 42
        "default_sources": ([2304, 512], [512]),    # + 2 TEF = 2818
        "max_v_l": 75, "max_q_l": 32,
        "batched_cli": True, "margins": True, "weights_args": {"default": []},
    },
    "ld_detr": {
        "script": "ld_detr_ref.py",
        "seed": 202,
        # dim_feedforward (1024) and hidden_dim (256) are fixed in the code. The small weights keep
        # the training-only tensors (momentum encoders, distill_align with a short queue) so that a
        # loader is tested on the full key set; the default weights are --inference-only (the two
        # 256 x 65536 queues would add 134 MB).
        "small": {"v_feat_dim": 40, "t_feat_dim": 16, "num_v2t_encoder_layers": 1, "num_encoder1_layers": 1,
                  "num_convolutional_blocks": 1, "num_encoder2_layers": 1, "num_decoder_layers": 2,
                  "queue_length": 8},
        "small_sources": ([24, 16], [16]),
        "default_sources": ([2304, 512], [512]),
        "max_v_l": 75, "max_q_l": 32,
        "batched_cli": True, "margins": True, "weights_args": {"default": ["--inference-only"]},
    },
    "videolights": {
        "script": "videolights_ref.py",
        "seed": 303,
        # hidden_dim fixed at 256; the training-only keys (contrastive_align_loss, mr_to_hd_loss) stay on
        # as in the release. Three video and two text sources like VideoLights-B.
        "small": {"v_feat_dim": 48, "t_feat_dim": 24, "dim_feedforward": 32, "bicmf_layers": 1,
                  "enc_layers": 1, "dec_layers": 2},
        "small_sources": ([24, 16, 8], [16, 8]),            # + 2 TEF = 50; text 24
        "default_sources": ([2304, 512, 768], [512, 768]),  # VideoLights-B: 3586 / 1280
        "max_v_l": 75, "max_q_l": 32,
        "batched_cli": False, "margins": False, "weights_args": {},
        # The official default is VideoLights-B (BLIP-2 features); the released non-B models take
        # SlowFast + CLIP video (2818 with TEF) and CLIP text (512): a third config and case.
        "version": "2",
        "extra_configs": {"nonb": {"v_feat_dim": 2816, "t_feat_dim": 512}},
        "nonb_sources": ([2304, 512], [512]),
    },
    "sg_detr": {
        "script": "sg_detr_ref.py",
        "seed": 404,
        # model_dim stays 256 (head dim 32 as in every official config). num_queries 10 instead of 25
        # so that L = 1 (padded to L_p = 4: 15 proposal tokens) is a valid input; 2 SGCA layers
        # exercise the shared text norm between layers, 2 pooling layers the pooling norm, 2 decoder
        # layers the anchor refinement.
        "small": {"num_queries": 10, "txt2vis_encoder.num_t2v_layers": 2, "det_encoder.num_encoder_layers": 1,
                  "detr_detector.num_decoder_layers": 2, "aux_det_head.num_convs": 1,
                  "runner.model.vid_dim": 34, "runner.model.txt_dim": 24},
        "small_sources": ([32], [24]),      # + 2 TEF = 34
        "default_sources": ([512], [512]),  # InternVideo2: 514 / 512
        "max_v_l": 75, "max_q_l": 40,
        "batched_cli": False, "margins": False, "weights_args": {},
        "pad_multiple": 4, "clip_len": 2,
    },
}

# The reference writes these decoder arrays layer-first, (layers, B, ...): moved to sample-first.
LAYER_FIRST = {"trace.dec_hs", "trace.dec_references", "trace.aux_logits", "trace.aux_spans"}
# Reference outputs that are not expected values: the inputs it used (stored as the case inputs)
# and the JSONL text (stored as expected.jsonl).
NOT_EXPECTED = {"src_vid", "src_txt", "src_vid_mask", "src_txt_mask", "prediction_json"}


def sample(L, N, duration, query="", trim=False):
    """One sample: L clips, N tokens, the annotated duration passed to `run`, the query text.
    trim: give the raw sources extra rows that the preprocessing removes (sources after the first
    are longer and cut to the shortest; all are longer when L or N is the truncation limit)."""
    return {"L": L, "N": N, "duration": float(duration), "query": query, "trim": trim}


# Cases: (name, config, samples). Every L in {1, 7, 30, 75} and every N in {1, 4, 32} occurs on the
# small config; durations are L x 2 s for some samples and a different annotation for others.
CASES = [
    ("small_l1_n4", "small", [sample(1, 4, 2, "a person opens a door")]),
    ("small_l7_n1", "small", [sample(7, 1, 14, "dog")]),
    ("small_l30_n32", "small", [sample(30, 32, 64, QUERY_TEXT_ESCAPES, trim=True)]),
    ("small_l75_n4", "small", [sample(75, 4, 150, "a woman is cooking pasta in a kitchen")]),
    ("small_l75_n32", "small", [sample(75, 32, 126, "two kids play football on the beach at sunset", trim=True)]),
    ("small_batch3", "small", [sample(75, 32, 150, "people dance at a wedding party", trim=True),
                               sample(30, 4, 60, "a cat jumps"),
                               sample(7, 1, 14, "rain")]),
    ("default_l75_n32", "default", [sample(75, 32, 150, "a chef explains how to cut onions", trim=True)]),
]

# Cases of one model's extra configs, after the shared ones (qids continue the running number).
MODELS["videolights"]["extra_cases"] = [
    ("nonb_batch2", "nonb", [sample(75, 32, 150, "a man rides a horse along the river", trim=True),
                             sample(45, 9, 96, "children build a sandcastle")]),
]


def model_cases(model):
    """The shared CASES, then the model's own extra cases (configs other than small/default)."""
    return CASES + MODELS[model].get("extra_cases", [])


def model_version(model):
    """VERSION, or the model's own version where only its fixtures changed (the others keep theirs)."""
    return MODELS.get(model, {}).get("version", VERSION)


# --------------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------------

def fail(code, msg):
    print(f"fixtures.py: error: {msg}", file=sys.stderr)
    sys.exit(code)


def check_deps():
    if _IMPORT_ERROR is not None:
        name = (_IMPORT_ERROR.name or str(_IMPORT_ERROR)).split(".")[0]
        fail(3, f"{name} is not installed: pip install numpy safetensors")


def shared_candidates(cli_value):
    if cli_value:
        return [Path(cli_value)]
    if os.environ.get("MOMENT_SHARED"):
        return [Path(os.environ["MOMENT_SHARED"])]
    cands = [REPO.parent / "shared"]
    git = REPO / ".git"
    if git.is_file():   # a worktree: .git holds "gitdir: <main>/.git/worktrees/<name>"
        text = git.read_text().strip()
        if text.startswith("gitdir:"):
            gitdir = Path(text[len("gitdir:"):].strip())
            if gitdir.parent.name == "worktrees":
                cands.append(gitdir.parent.parent.parent.parent / "shared")
    return cands


def find_shared(cli_value, models):
    tried = []
    for cand in shared_candidates(cli_value):
        ref = cand / "reference"
        if all((ref / MODELS[m]["script"]).is_file() for m in models):
            return cand.resolve()
        tried.append(str(ref))
    fail(4, "reference scripts not found (looked in " + ", ".join(tried) + "); "
            "pass --shared PATH or set MOMENT_SHARED to the folder that holds reference/<model>_ref.py")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class RefError(RuntimeError):
    pass


def run_ref(script, args, cwd):
    """Runs the reference script; returns its stderr lines (warnings, notes)."""
    env = dict(os.environ, PYTHONUTF8="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(script)] + [str(a) for a in args]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, encoding="utf-8")
    if p.returncode != 0:
        raise RefError(f"{script.name} {args[0]} failed (exit {p.returncode}):\n  " + " ".join(cmd)
                       + "\n" + p.stderr.strip())
    return [line.strip() for line in p.stderr.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------

def make_weights(model, which, ref, mdir):
    """Writes <which>.safetensors (and small_config.json); returns the manifest entry of the config."""
    spec = MODELS[model]
    out = mdir / f"{which}.safetensors"
    seed = spec["seed"] + (0 if which == "small" else 1)
    args = ["random-weights", "--out", out.name, "--seed", seed]
    entry = {"weights": out.name, "seed": seed}
    overrides = spec["small"] if which == "small" else spec.get("extra_configs", {}).get(which)
    if overrides is not None:
        cfg = mdir / f"{which}_config.json"
        cfg.write_text(json.dumps(overrides, indent=1) + "\n")
        args += ["--config", cfg.name]
        entry.update(config_file=cfg.name, overrides=overrides)
    else:
        entry.update(config_file=None, overrides={})
    args += spec["weights_args"].get(which, [])
    entry["random_weights_args"] = [str(a) for a in args[3:]]
    run_ref(ref, args, mdir)

    tensors = load_file(str(out))
    bad, flat = [], []
    for k, v in tensors.items():
        if v.dtype.kind == "f" and not np.all(np.isfinite(v)):
            bad.append(k)
        elif v.size > 1 and v.dtype.kind == "f" and float(v.max()) == float(v.min()):
            flat.append(k)
    if bad:
        raise RefError(f"{out}: non-finite values in {bad[:5]}")
    sources = spec[f"{which}_sources"]
    entry.update(tensors=len(tensors), numbers=int(sum(v.size for v in tensors.values())),
                 video_sources=sources[0], query_sources=sources[1],
                 Dv=sum(sources[0]) + 2, Dt=sum(sources[1]), constant_tensors=flat)
    return entry


# --------------------------------------------------------------------------------------------------
# One sample through the reference
# --------------------------------------------------------------------------------------------------

def raw_rows(base, n_sources, limit, trim):
    """Rows of each raw source so that the preprocessing (truncation to `limit`, cut to the shortest
    source) gives exactly `base` rows."""
    if not trim:
        return [base] * n_sources
    if base == limit:
        return [base + 3 + k for k in range(n_sources)]          # all truncated
    return [base] + [base + 1 + k for k in range(n_sources - 1)]  # later sources cut to the first


def run_sample(model, case_idx, b, smp, meta, which, ref, mdir, work):
    """Draws raw inputs (re-drawing while a reported margin is below MARGIN_GOAL), runs the reference
    alone on them and returns everything the case assembly needs."""
    spec = MODELS[model]
    vsrc, qsrc = spec[f"{which}_sources"]
    weights = mdir / f"{which}.safetensors"
    vrows = raw_rows(smp["L"], len(vsrc), spec["max_v_l"], smp["trim"])
    qrows = raw_rows(smp["N"], len(qsrc), spec["max_q_l"], smp["trim"])
    best, t0 = None, time.time()
    for attempt in range(MAX_ATTEMPTS):
        seed = [spec["seed"], case_idx, b, attempt]
        rng = np.random.default_rng(seed)
        video = [rng.standard_normal((r, w)).astype(np.float32) for r, w in zip(vrows, vsrc)]
        query = [rng.standard_normal((r, w)).astype(np.float32) for r, w in zip(qrows, qsrc)]
        d = Path(tempfile.mkdtemp(prefix=f"s{b}_", dir=work))
        vfiles, qfiles = [], []
        for k, a in enumerate(video):
            vfiles.append(f"raw_s{b}_video{k}.npy")
            np.save(d / vfiles[-1], a)
        for k, a in enumerate(query):
            qfiles.append(f"raw_s{b}_query{k}.npy")
            np.save(d / qfiles[-1], a)
        common = ["--weights", weights, "--out", "out.npz", "--qid", meta["qid"], "--query-text", meta["query"],
                  "--vid", meta["vid"], "--duration", repr(meta["duration"])]
        if spec["batched_cli"]:
            args = ["run", "--preprocess", "--video", *vfiles, "--query", *qfiles, *common,
                    "--intermediates", "--json", "out.jsonl"]
        else:
            args = ["run", "--video", *vfiles, "--query", *qfiles, *common,
                    "--dump-intermediates", "--jsonl", "out.jsonl"]
        messages = run_ref(ref, args, d)
        with np.load(d / "out.npz") as z:
            out = {k: z[k] for k in z.files}
        jsonl = (d / "out.jsonl").read_text(encoding="utf-8")
        margins = None
        if spec["margins"]:
            top1 = float(out["check.top1_margin"].reshape(-1)[0])
            rng_m = [float(x) for x in out["check.range_margin"].reshape(-1)]
            # With one clip every query attends to the same single memory row, so all queries get
            # the same logits (the top-1 choice is a tie), but every possible top-1 span then slices
            # exactly row 0 (start floor in {-1, 0}, end floor in {0, 1}): the choice cannot matter.
            relevant = smp["L"] > 1
            margins = {"top1_margin": top1, "range_margin": rng_m,
                       "min": min([top1] + rng_m) if relevant else None}
        res = {"dir": d, "out": out, "jsonl": jsonl, "messages": messages, "margins": margins,
               "seed": seed, "attempts": attempt + 1, "raw": {"video": vfiles, "query": qfiles},
               "raw_rows": {"video": vrows, "query": qrows}, "seconds": time.time() - t0}
        if margins is None or margins["min"] is None or margins["min"] >= MARGIN_GOAL:
            return res
        if best is None or margins["min"] > best["margins"]["min"]:
            best = res
    best["attempts"] = MAX_ATTEMPTS
    return best


def per_sample_arrays(model, out):
    """Reference outputs of a B = 1 run -> {name: array with a leading sample axis of 1}, float64."""
    batched = MODELS[model]["batched_cli"]
    arrays = {}
    for k, v in out.items():
        if k in NOT_EXPECTED:
            continue
        v = np.asarray(v, dtype=np.float64)
        if batched:
            if k in LAYER_FIRST:
                v = np.moveaxis(v, 1, 0)
        else:
            v = v[None]
        arrays[k] = np.ascontiguousarray(v)
    return arrays


def stack_nan(parts):
    """Stacks (1, ...) arrays on axis 0, padding each axis at the end with NaN to the largest size."""
    shape = [max(p.shape[i] for p in parts) for i in range(1, parts[0].ndim)]
    out = np.full([len(parts)] + shape, np.nan)
    for b, p in enumerate(parts):
        out[(b,) + tuple(slice(0, s) for s in p.shape[1:])] = p[0]
    return out


def foreground_scores(model, logits):
    """The score the post-processing sorts by: softmax class 0, or sigmoid of the single logit."""
    logits = np.asarray(logits, dtype=np.float64)
    if model == "sg_detr":
        return 1.0 / (1.0 + np.exp(-logits[..., 0]))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[..., 0]


# --------------------------------------------------------------------------------------------------
# Case assembly
# --------------------------------------------------------------------------------------------------

def write_inputs(cdir, vids, txts):
    """Zero-pads the per-sample model inputs into (B, L, Dv) / (B, N, Dt) with float masks."""
    B, Ls, Ns = len(vids), [v.shape[0] for v in vids], [t.shape[0] for t in txts]
    arrays = {
        "video": np.zeros((B, max(Ls), vids[0].shape[1]), np.float32),
        "video_mask": np.zeros((B, max(Ls)), np.float32),
        "query": np.zeros((B, max(Ns), txts[0].shape[1]), np.float32),
        "query_mask": np.zeros((B, max(Ns)), np.float32),
    }
    for b in range(B):
        arrays["video"][b, :Ls[b]] = vids[b]
        arrays["video_mask"][b, :Ls[b]] = 1
        arrays["query"][b, :Ns[b]] = txts[b]
        arrays["query_mask"][b, :Ns[b]] = 1
    for k, a in arrays.items():
        np.save(cdir / f"{k}.npy", a)
    return {k: f"{k}.npy" for k in arrays}, {k: list(a.shape) for k, a in arrays.items()}


def assemble_case(model, name, which, samples, metas, results, mdir):
    """Writes one case folder from its per-sample reference runs; returns (manifest entry, seconds)."""
    spec = MODELS[model]
    B = len(samples)
    vids, txts, clips = [], [], []
    for r in results:
        v, t = np.asarray(r["out"]["src_vid"], np.float32), np.asarray(r["out"]["src_txt"], np.float32)
        if spec["batched_cli"]:
            v, t = v[0], t[0]
        vids.append(v)
        txts.append(t)
        clips.append(int(r["out"]["num_real_clips"]) if "num_real_clips" in r["out"] else v.shape[0])
    Ls = [v.shape[0] for v in vids]
    Ns = [t.shape[0] for t in txts]
    mult = spec.get("pad_multiple", 1)
    for smp, L, n, c in zip(samples, Ls, Ns, clips):
        if c != smp["L"] or n != smp["N"] or L != -(-c // mult) * mult:
            raise RefError(f"{model}/{name}: reference preprocessing gave L={L} (clips {c}), N={n}; "
                           f"expected {smp['L']} clips, {smp['N']} tokens")

    parts = [per_sample_arrays(model, r["out"]) for r in results]
    for b, p in enumerate(parts):
        bad = [k for k, v in p.items() if not np.all(np.isfinite(v))]
        if bad:
            raise RefError(f"{model}/{name} sample {b}: non-finite reference outputs {bad}")
        sal = p["saliency_scores"][0]
        if sal.size > 1 and np.ptp(sal) < 1e-6:
            raise RefError(f"{model}/{name} sample {b}: constant saliency scores")
        if np.ptp(p["pred_spans"][0], axis=0).min() < 1e-6:
            raise RefError(f"{model}/{name} sample {b}: all queries predict the same span")

    cdir = mdir / name
    cdir.mkdir()
    inputs, input_shapes = write_inputs(cdir, vids, txts)
    for r in results:
        for f in r["raw"]["video"] + r["raw"]["query"]:
            shutil.copyfile(r["dir"] / f, cdir / f)
    expected = {k: stack_nan([p[k] for p in parts]) for k in parts[0]}
    np.savez(cdir / "expected.npz", **expected)
    lines = [r["jsonl"].strip("\n") for r in results]
    (cdir / "expected.jsonl").write_text("\n".join(lines), encoding="utf-8")

    score_gaps = []
    for p in parts:
        s = np.sort(foreground_scores(model, p["pred_logits"][0]))
        score_gaps.append(float(np.diff(s).min()))
    margins = [r["margins"] for r in results]
    relevant = [m["min"] for m in margins if m is not None and m["min"] is not None]
    min_margin = min(relevant) if relevant else None
    notes = []
    if model != "sg_detr" and 1 in Ls:
        notes.append("L = 1: every query attends to the one memory row, so all queries get the same logits "
                     "(score_gap 0) and the window order in the JSON follows float rounding")
        if spec["margins"]:
            notes.append("L = 1: the top-1 query is a tie (top1_margin ~0, the selected index is arbitrary), "
                         "but every top-1 span slices clip 0, so the saliency scores are well-conditioned")
    post_dur = [float(L * spec["clip_len"]) for L in Ls] if model == "sg_detr" else [m["duration"] for m in metas]
    return {
        "name": name,
        "dir": name,
        "config": which,
        "weights": f"{which}.safetensors",
        "B": B,
        "L": Ls,
        "N": Ns,
        "clips": clips,
        "inputs": inputs,
        "input_shapes": input_shapes,
        "raw_inputs": [r["raw"] for r in results],
        "raw_rows": [r["raw_rows"] for r in results],
        "meta": metas,
        "postprocess_duration": post_dur,
        "expected": "expected.npz",
        "expected_jsonl": "expected.jsonl",
        "arrays": {k: list(v.shape) for k, v in expected.items()},
        "margins": margins if spec["margins"] else None,
        "min_margin": min_margin,
        "ill_conditioned": min_margin is not None and min_margin < MARGIN_GOAL,
        "score_gap": score_gaps,
        "attempts": [r["attempts"] for r in results],
        "seeds": [r["seed"] for r in results],
        "reference_messages": [m for r in results for m in r["messages"]],
        "notes": notes,
    }, sum(r["seconds"] for r in results)


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------

_SCALAR = r'(?:-?[0-9][0-9.eE+-]*|null|true|false|"[^"\\,\[\]{}]*")'
_SCALAR_LIST = re.compile(r"\[\s*(" + _SCALAR + r"(?:,\s*" + _SCALAR + r")*)\s*\]")


def compact_json(obj):
    """Indented JSON with lists of plain scalars (shapes, lengths, file names) kept on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    return _SCALAR_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def up_to_date(mdir, ref_sha):
    """Whether mdir holds fixtures of this VERSION from this reference script, all files present."""
    try:
        man = json.loads((mdir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if man.get("version") != model_version(man.get("model")) or man.get("reference_sha256") != ref_sha:
        return False
    files = [c["weights"] for c in man["configs"].values()]
    for case in man["cases"]:
        files += [f"{case['dir']}/{f}" for f in list(case["inputs"].values()) + ["expected.npz", "expected.jsonl"]]
    return all((mdir / f).is_file() for f in files)


class Lock:
    """An exclusive lock on a file (no-op where fcntl is missing): concurrent invocations for the
    same model wait for each other instead of generating twice."""

    def __init__(self, path):
        self.path, self.fh = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:
            return self
        self.fh = open(self.path, "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh:
            self.fh.close()


def generate_model(model, out_root, ref, ref_sha, jobs):
    """Generates all fixtures of one model into a temporary folder, then swaps it in."""
    spec = MODELS[model]
    final = out_root / model
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix=f".{model}.tmp-", dir=out_root))
    try:
        mdir = tmp / "fixtures"
        work = tmp / "work"
        mdir.mkdir()
        work.mkdir()
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            which_configs = ("small", "default") + tuple(spec.get("extra_configs", {}))
            wfut = {w: pool.submit(make_weights, model, w, ref, mdir) for w in which_configs}
            configs = {w: f.result() for w, f in wfut.items()}
            qid = 0
            jobs_by_case = []
            for ci, (name, which, samples) in enumerate(model_cases(model)):
                metas, futs = [], []
                for b, smp in enumerate(samples):
                    vid = f"vid_{name}" + (f"_s{b}" if len(samples) > 1 else "")
                    meta = {"qid": qid, "query": smp["query"], "vid": vid, "duration": smp["duration"]}
                    qid += 1
                    metas.append(meta)
                    futs.append(pool.submit(run_sample, model, ci, b, smp, meta, which, ref, mdir, work))
                jobs_by_case.append((name, which, samples, metas, futs))
            cases = []
            for name, which, samples, metas, futs in jobs_by_case:
                results = [f.result() for f in futs]
                case, seconds = assemble_case(model, name, which, samples, metas, results, mdir)
                cases.append(case)
                cond = "" if case["min_margin"] is None else f" min margin {case['min_margin']:.2e}"
                if case["ill_conditioned"]:
                    cond += " ILL-CONDITIONED"
                redraws = sum(case["attempts"]) - case["B"]
                print(f"{model}/{name}: B={case['B']} L={case['L']} N={case['N']}{cond}"
                      f"{f' ({redraws} re-draw(s))' if redraws else ''} [{seconds:.1f}s of reference runs]",
                      flush=True)
        manifest = {
            "version": model_version(model),
            "model": model,
            "generator": "tools/fixtures.py",
            "reference": f"reference/{spec['script']}",
            "reference_sha256": ref_sha,
            "margin_goal": MARGIN_GOAL if spec["margins"] else None,
            "layout": {
                "inputs": "float32 model inputs (after the reference preprocessing), zero-padded to the "
                          "largest sample; masks float32 1 = valid",
                "expected": "float64; every array has the sample axis first; a batch stacks the B = 1 "
                            "results, NaN beyond each sample's own sizes; integer outputs stored as float64",
                "expected_jsonl": "one reference prediction record per sample, joined by \\n, no trailing newline",
            },
            "configs": configs,
            "cases": cases,
        }
        (mdir / "manifest.json").write_text(compact_json(manifest) + "\n", encoding="utf-8")
        old = None
        if final.exists():
            old = out_root / f".{model}.old-{os.getpid()}"
            final.rename(old)
        mdir.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{model}: {len(cases)} cases written to {final} [{time.time() - t0:.1f}s]", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(MODELS)} (default: all)")
    ap.add_argument("--out", type=Path, default=REPO / "target" / "fixtures",
                    help="output folder (default: <repo>/target/fixtures)")
    ap.add_argument("--shared", help="folder holding reference/<model>_ref.py (default: $MOMENT_SHARED, "
                                     "else <repo>/../shared)")
    ap.add_argument("--force", action="store_true", help="regenerate even if the fixtures are up to date")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="reference processes run in parallel (default: min(2, cores))")
    args = ap.parse_args(argv)
    models = [m.replace("-", "_").lower() for m in args.models] or list(MODELS)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        ap.print_usage(sys.stderr)
        fail(2, f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    check_deps()
    shared = find_shared(args.shared, models)
    args.out.mkdir(parents=True, exist_ok=True)
    out_root = args.out.resolve()
    for model in dict.fromkeys(models):
        ref = shared / "reference" / MODELS[model]["script"]
        ref_sha = sha256(ref)
        with Lock(out_root / f".{model}.lock"):
            if not args.force and up_to_date(out_root / model, ref_sha):
                print(f"{model}: up to date (version {model_version(model)}), skipped", flush=True)
                continue
            try:
                generate_model(model, out_root, ref, ref_sha, max(1, args.jobs))
            except RefError as e:
                fail(1, f"{model}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
