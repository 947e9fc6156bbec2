"""Our own PyTorch eager implementations of the four models, written from the specs in the
style of the official code (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, ...), with the
official state_dict keys. `tools/bench_pytorch.py` times them and checks them against
moment-gpu; `tools/train_demo.py` trains the demo TR-DETR with `tr_detr`. `blocks.py` holds the
modules several models share (DAB-DETR decoder, encoder layers, sine embeddings, ...),
`preprocessing.py` the loaders' shared feature arithmetic (L2 normalisation, TEF).

Every model module provides:

    build(cfg) -> torch.nn.Module
        The model for a config dict (the safetensors "config" metadata). Its state_dict keys are
        the official keys; `TRAINING_ONLY(cfg)` lists the prefixes of keys a checkpoint may carry
        that inference never reads (loaded with strict=False and checked).
    preprocess(cfg, videos, queries) -> (video, video_mask, query, query_mask)
        One sample's raw feature sources (lists of float32 arrays (L_k, D_k) / (N_k, D_k), in the
        official order) to the model inputs with batch dimension 1, exactly as moment-gpu and the
        reference specs prepare them (truncation, L2 normalisation, TEF, padding).
    model(video, video_mask, query, query_mask) -> dict
        Eval forward of a batch (float32 tensors): "pred_logits", "pred_spans", "saliency_scores"
        (plus model-specific outputs such as "pred_quality_scores").
"""

import importlib
import json

MODELS = ("tr_detr", "ld_detr", "videolights", "sg_detr")


def module(name):
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    return importlib.import_module(f"torch_models.{name}")


def read_config(path):
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise SystemExit(f"{path}: no `config` metadata")
    return json.loads(meta["config"])


def load(path, device="cpu"):
    """(model name, model in eval mode on `device`, cfg) for a moment-gpu weights file."""
    from safetensors.torch import load_file

    cfg = read_config(path)
    name = cfg.get("model")
    mod = module(name)
    model = mod.build(cfg)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing:
        raise SystemExit(f"{path}: {len(missing)} keys missing for {name}, e.g. {missing[:3]}")
    skip = tuple(getattr(mod, "TRAINING_ONLY", lambda c: ())(cfg))
    stray = [k for k in unexpected if not k.startswith(skip)]
    if stray:
        raise SystemExit(f"{path}: {len(stray)} keys {name} does not know, e.g. {stray[:3]}")
    return name, model.to(device).eval(), cfg

