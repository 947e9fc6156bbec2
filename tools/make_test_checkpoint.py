#!/usr/bin/env python3
"""Write the small PyTorch checkpoints that test `moment convert` (tests/convert.rs).

    python3 tools/make_test_checkpoint.py [--out DIR]      # DIR defaults to tests/fixtures/convert

Needs torch, numpy and omegaconf (pip install torch numpy omegaconf). The files are committed; torch is not needed to run the tests. Written:

* tr_detr.ckpt: the official layout of TR-DETR's train.py, torch.save({"model": state_dict,
  "optimizer": AdamW state (with tensors), "lr_scheduler": ..., "epoch": 154, "opt":
  argparse.Namespace}) with a handful of tensors under official TR-DETR keys that exercise the
  reader: float32, float16, bfloat16 and float64 tensors, a transposed and a permuted
  (non-contiguous) view, a view at a storage offset, two views of one shared storage, a 0-d
  tensor. The namespace holds a torch.device, a NaN, a tuple, None and a numpy float64.
* tr_detr_expected.json: what the converter must produce, computed by torch itself: for every
  state_dict key the torch dtype, the shape and the values (row-major, as float64), and the
  expected `config` metadata (the JSON-serialisable options plus "model").
* opt.json: an official-style opt.json for the same run (v_feat_dim without TEF, 2816).
* ld_detr.ckpt: official layout, LD-DETR keys, with the int64 buffers (queue_ptr,
  num_batches_tracked) and a float32 training-only queue; `opt` is a plain dict.
* sg_detr.ckpt: a PyTorch-Lightning checkpoint (SG-DETR): "state_dict" with "model."-prefixed keys
  (a float64 anchor buffer, a 0-d scalar) plus a key outside "model.", "hyper_parameters" with a
  functools.partial, a nested Hydra-style config and plain values; sg_detr_omegaconf.ckpt: the
  same with a full Hydra config as an OmegaConf DictConfig (model group under `model`).
* state_dict.ckpt: a bare torch.save(model.state_dict()) with VideoLights keys and a "module."
  (DataParallel) prefix.
* Bad files: legacy.ckpt (_use_new_zipfile_serialization=False), no_model.ckpt (no state dict),
  complex.ckpt (a complex64 tensor), bad_global.ckpt (a zip whose data.pkl calls posix.system:
  never executed, must be refused), bad_opcode.ckpt (tr_detr.ckpt's pickle with an unknown
  opcode), module.ckpt (a whole pickled nn.Module under "model"), torchscript.pt (torch.jit.save).

Everything is seeded; file bytes may still differ between torch versions.
"""

import argparse
import collections
import functools
import io
import json
import math
import os
import pickle
import warnings
import zipfile

import numpy as np
import torch
from omegaconf import OmegaConf


def values(t):
    """Row-major values of a tensor as float64 Python floats (exact for every dtype used)."""
    return t.detach().to(torch.float64).contiguous().reshape(-1).tolist()


def json_options(ns):
    """The JSON-serialisable entries of an options namespace, as the converter must write them."""
    out = {}
    for k, v in vars(ns).items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, tuple):
            v = list(v)
        if isinstance(v, float) and not math.isfinite(v):
            continue
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def tr_detr(out):
    torch.manual_seed(0)
    sd = collections.OrderedDict()
    p = "transformer.t2v_encoder.layers.0."
    sd[p + "self_attn.in_proj_weight"] = torch.randn(6, 4)  # contiguous
    sd[p + "self_attn.in_proj_bias"] = torch.randn(6).half()  # float16
    sd[p + "linear1.weight"] = torch.randn(5, 3).t()  # (3, 5), stride (1, 3): transposed
    big = torch.randn(20)
    sd[p + "linear1.bias"] = big[7:12]  # storage offset 7 into a 20-element storage
    base = torch.randn(8)
    sd[p + "norm1.weight"] = base[:4]  # two views of one storage
    sd[p + "norm1.bias"] = base[4:]
    sd[p + "activation.weight"] = torch.tensor([0.25])
    sd["fuser.cq_attention.w4C"] = torch.randn(4, 1)
    sd["fuser.cq_attention.w4mlu"] = torch.randn(1, 1, 4).to(torch.bfloat16)  # bfloat16
    sd["fuser.cq_attention.cqa_linear.conv1d.weight"] = torch.randn(2, 3, 4).permute(2, 0, 1)  # (4, 2, 3) permuted
    sd["input_vid_proj.0.LayerNorm.weight"] = torch.randn(3, dtype=torch.float64)  # float64 -> float32
    sd["query_embed.weight"] = torch.randn(10, 2)[::2]  # (5, 2), row stride 4: strided rows
    sd["saliency_proj1.bias"] = torch.tensor(0.5)  # 0-d
    assert not sd[p + "linear1.weight"].is_contiguous()
    assert not sd["fuser.cq_attention.cqa_linear.conv1d.weight"].is_contiguous()
    assert sd[p + "norm1.bias"].untyped_storage().data_ptr() == sd[p + "norm1.weight"].untyped_storage().data_ptr()

    # A real AdamW state after one step: tensors the converter must parse through and skip.
    params = [torch.nn.Parameter(torch.randn(3, 3)), torch.nn.Parameter(torch.randn(3))]
    optim = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    sum((q * q).sum() for q in params).backward()
    optim.step()
    sched = torch.optim.lr_scheduler.StepLR(optim, step_size=400, gamma=0.1)

    opt = argparse.Namespace(
        dset_name="hl",
        ctx_mode="video_tef",
        v_feat_dim=2818,
        t_feat_dim=512,
        a_feat_dim=None,
        hidden_dim=256,
        nheads=8,
        enc_layers=2,
        dec_layers=2,
        dim_feedforward=1024,
        num_queries=10,
        n_input_proj=2,
        pre_norm=False,
        position_embedding="sine",
        max_q_l=32,
        max_v_l=75,
        clip_length=2,
        lr=1e-4,
        eval_split_name="val",
        results_dir="results/hl-video_tef-exp",
        device=torch.device("cuda"),
        betas=(0.9, 0.999),
        not_a_number=float("nan"),
        np_scale=np.float64(0.5),
        tag="é — 🎬",
    )
    ckpt = {
        "model": sd,
        "optimizer": optim.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "epoch": 154,
        "opt": opt,
    }
    torch.save(ckpt, os.path.join(out, "tr_detr.ckpt"))

    config = json_options(opt)
    config["model"] = "tr_detr"
    expected = {
        "torch_version": torch.__version__,
        "model": "tr_detr",
        "config": config,
        "dropped_options": ["device", "not_a_number"],
        "tensors": {
            k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "values": values(v)}
            for k, v in sd.items()
        },
        "key_order": list(sd.keys()),
    }
    with open(os.path.join(out, "tr_detr_expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")

    opt_json = json_options(opt)
    opt_json["v_feat_dim"] = 2816  # opt.json stores it without the 2 TEF dims
    opt_json["results_dir"] = "results/from-opt-json"
    opt_json["seed"] = 2017  # only in opt.json
    with open(os.path.join(out, "opt.json"), "w") as f:
        json.dump(opt_json, f, indent=4)
        f.write("\n")

    # Same pickle with an unknown opcode (0xff) right after PROTO.
    with zipfile.ZipFile(os.path.join(out, "tr_detr.ckpt")) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl"))
        records = {n: z.read(n) for n in names}
    data = records[pkl]
    assert data[0] == 0x80
    records[pkl] = data[:2] + b"\xff" + data[2:]
    write_zip(os.path.join(out, "bad_opcode.ckpt"), records)


def write_zip(path, records):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in records.items():
            z.writestr(name, data)


def ld_detr(out):
    torch.manual_seed(1)
    sd = collections.OrderedDict()
    sd["video_encoder.linear1.weight"] = torch.randn(4, 3)
    sd["distill_align.vid_queue"] = torch.randn(4, 8)  # training-only queue, kept as it is
    sd["distill_align.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    sd["convolutional_fuser.convolutional_block.blocks.0.bn1.num_batches_tracked"] = torch.tensor(1234)
    sd["convolutional_fuser.convolutional_block.blocks.0.bn1.running_mean"] = torch.randn(4)
    opt = {"v_feat_dim": 2818, "t_feat_dim": 512, "queue_length": 8, "device": torch.device("cpu")}
    torch.save({"model": sd, "epoch": 3, "opt": opt}, os.path.join(out, "ld_detr.ckpt"))


def sg_detr(out):
    torch.manual_seed(2)
    sd = collections.OrderedDict()
    sd["model.local_saliency_head.temp"] = torch.tensor(0.07)  # 0-d
    sd["model.aux_det_head.anchor_generator.cell_anchors.0"] = torch.tensor([[-1.25, 1.75]], dtype=torch.float64)
    sd["model.input_vid_proj.linear_mapper.0.weight"] = torch.randn(4, 3)
    sd["losses.empty_weight"] = torch.ones(2)  # outside the model: dropped
    nested = {
        "model_dim": 256,
        "num_queries": 10,
        "mrdetr": {"_target_": "src.model.model.MRDETR", "vid_dim": 34, "txt_dim": 24, "pos_temp": "${pos_temp}"},
        "detr_detector": {"num_queries": 10, "num_decoder_layers": 2},
        "data": {"clip_len": 2},
    }
    hparams = {
        "optimizer": functools.partial(torch.optim.AdamW, lr=1e-4, weight_decay=1e-4),
        "metrics_mode": "qvhighlights",
        "checkpoint_path": None,
        "check_train_every_n_epoch": 5,
        "cfg": nested,
    }
    ckpt = {
        "epoch": 7,
        "global_step": 700,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": sd,
        "hyper_parameters": hparams,
        "optimizer_states": [],
    }
    torch.save(ckpt, os.path.join(out, "sg_detr.ckpt"))

    # The same with a full Hydra config as an OmegaConf DictConfig (model group under `model`,
    # interpolations left unresolved), as a Hydra + Lightning run may save it.
    hydra = OmegaConf.create({"model": nested, "data": {"batch_size": 128}, "trainer": {"max_epochs": 150}})
    hydra.model.detr_detector.num_queries = "${model.num_queries}"
    ckpt["hyper_parameters"] = {"optimizer": hparams["optimizer"], "cfg": hydra}
    torch.save(ckpt, os.path.join(out, "sg_detr_omegaconf.ckpt"))


def state_dict_only(out):
    torch.manual_seed(3)
    sd = collections.OrderedDict()
    sd["module.feature_refinement.sim_w"] = torch.randn(4)
    sd["module.global_rep_token"] = torch.randn(1, 4)
    torch.save(sd, os.path.join(out, "state_dict.ckpt"))


class Exploit:
    """Pickles as a call of os.system (never executed by the converter: it must refuse it)."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def bad_files(out):
    w = {"fuser.cq_attention.w4C": torch.ones(2, 1)}
    torch.save({"model": w}, os.path.join(out, "legacy.ckpt"), _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "opt": argparse.Namespace(lr=1e-4)}, os.path.join(out, "no_model.ckpt"))
    torch.save({"model": {"fuser.cq_attention.w4C": torch.zeros(2, dtype=torch.complex64)}}, os.path.join(out, "complex.ckpt"))
    torch.save({"model": torch.nn.Linear(2, 2)}, os.path.join(out, "module.ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated, but such files exist
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(out, "torchscript.pt"))
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump({"model": Exploit()})
    write_zip(
        os.path.join(out, "bad_global.ckpt"),
        {"bad_global/data.pkl": buf.getvalue(), "bad_global/version": b"3\n", "bad_global/byteorder": b"little"},
    )


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "convert"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tr_detr(args.out)
    ld_detr(args.out)
    sg_detr(args.out)
    state_dict_only(args.out)
    bad_files(args.out)
    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"{size:8d}  {name}")
    print(f"{total:8d}  total")


if __name__ == "__main__":
    main()
