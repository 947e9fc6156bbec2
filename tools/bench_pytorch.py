#!/usr/bin/env python3
"""moment-gpu against PyTorch eager, side by side on this machine, and a second parity check.

For each model (default: the four official default-size configs that `tools/fixtures.py` writes
under target/fixtures/<model>/default.safetensors, random weights with the official keys):

1. parity: the raw feature sources of one sample (default: the fixture's default_l75_n32) go
   through `moment predict --truncate --raw-out` and through our PyTorch model
   (`tools/torch_models`, the same code the demo trains with); the raw outputs are compared with
   each other and, where the sample has it, with the float64 NumPy spec's `expected.npz`;
2. speed: PyTorch eager forward (torch.no_grad, this machine's thread count, CUDA where present)
   at B=1 and B=32, L=75, N=32, median of --iters after --warmup, against `moment bench --json`
   on each requested moment-gpu backend, in --rounds rounds that alternate the two sides (so a
   slow spell of a shared machine hits both); the table gives the medians and each round's ratio;
3. one table per model and backend: ms/forward and queries/s of both, the ratio, dispatches and
   submits per forward, planned and peak memory, cold start.

    python3 tools/bench_pytorch.py                      # all four models, CPU backend
    python3 tools/bench_pytorch.py --backends cpu gpu --gpu-batches 1 --models tr_detr
    python3 tools/bench_pytorch.py --json results.json  # also keep every number

Needs torch, numpy, safetensors, and a release build of `moment` (built if missing).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(TOOLS))

import torch_models  # noqa: E402

OUTPUTS = ("pred_logits", "pred_spans", "saliency_scores", "pred_quality_scores")
# Raw-output parity between two float32 implementations and against the float64 spec: the
# project's model tolerance (README "Tolerances"), 1e-4 absolute + 1e-4 relative; VideoLights'
# saliency 2.5e-4 (its float32 sensitivity: the NumPy spec itself in float32 is 1.36e-4 off).
TOLERANCE = {"default": (1e-4, 1e-4), ("videolights", "saliency_scores"): (2.5e-4, 1e-4)}


def tolerance(model, output):
    return TOLERANCE.get((model, output), TOLERANCE["default"])


def moment_binary(path):
    exe = Path(path) if path else REPO / "target" / "release" / "moment"
    if not exe.exists():
        print(f"building {exe} (cargo build --release)", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
    return exe


def fixture(model):
    return REPO / "target" / "fixtures" / model


def sources(sample, kind):
    files = sorted(Path(sample).glob(f"raw_s0_{kind}*.npy"))
    if not files:
        raise SystemExit(f"{sample}: no raw_s0_{kind}*.npy sources (run python3 tools/fixtures.py)")
    return files


def compare(model, got, want, valid):
    """{output: (max abs error, within tolerance)} over the outputs both have."""
    res = {}
    for k in OUTPUTS:
        if k not in got or k not in want:
            continue
        g, w = np.asarray(got[k], np.float64), np.asarray(want[k], np.float64)
        if k == "saliency_scores":
            g, w = g[..., :valid], w[..., :valid]
        atol, rtol = tolerance(model, k)
        err = np.abs(g - w)
        res[k] = (float(err.max()), bool((err <= atol + rtol * np.abs(w)).all()))
    return res


def parity(moment, weights, sample, torch_model, mod, cfg):
    import torch

    vids, qrys = sources(sample, "video"), sources(sample, "query")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.npz"
        cmd = [str(moment), "predict", "--device", "cpu", "--weights", str(weights), "--truncate", "--raw-out", str(raw)]
        for v in vids:
            cmd += ["--video", str(v)]
        for q in qrys:
            cmd += ["--query", str(q)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ours = dict(np.load(raw))
    v, vm, q, qm = mod.preprocess(cfg, [np.load(f) for f in vids], [np.load(f) for f in qrys])
    dev = next(torch_model.parameters()).device
    with torch.no_grad():
        out = torch_model(v.to(dev), vm.to(dev), q.to(dev), qm.to(dev))
    theirs = {k: out[k].float().cpu().numpy() for k in OUTPUTS if k in out}
    valid = ours["saliency_scores"].shape[-1]
    result = {"pytorch_vs_moment": compare(mod.__name__.split(".")[-1], theirs, ours, valid)}
    spec = Path(sample) / "expected.npz"
    if spec.exists():
        expected = dict(np.load(spec))
        name = mod.__name__.split(".")[-1]
        result["pytorch_vs_spec"] = compare(name, theirs, expected, valid)
        result["moment_vs_spec"] = compare(name, ours, expected, valid)
    return result, (v, vm, q, qm)


def time_pytorch(model, inputs, batch, iters, warmup, device):
    import torch

    v, vm, q, qm = (t.repeat(batch, *[1] * (t.dim() - 1)).to(device) for t in inputs)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            sync()
            start = time.perf_counter()
            model(v, vm, q, qm)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cold_pytorch(weights, inputs, device):
    """Seconds from loading the weights to the end of the first forward, as `moment bench` times."""
    import torch

    start = time.perf_counter()
    _, model, _ = torch_models.load(weights, device)
    with torch.no_grad():
        model(*(t.to(device) for t in inputs))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def bench_moment(moment, weights, backend, batch, clips, tokens, iters):
    cmd = [str(moment), "bench", "--device", backend, "--weights", str(weights), "--batch", str(batch),
           "--clips", str(clips), "--tokens", str(tokens), "--iters", str(iters), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(name, backend, rows, torch_label):
    print(f"\n### {name} — moment-gpu {backend} vs PyTorch eager {torch_label} ({date.today()})\n")
    print("| B | moment-gpu ms | q/s | PyTorch ms | q/s | speed-up (each round) | dispatches | submits | planned MiB "
          "(weights + packed + activations) | peak RSS MiB | cold start ms (ours / PyTorch) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, t = r["moment"], r["pytorch_ms"]
        planned = f"{m['weight_mib']:.1f} + {m['packed_weight_mib']:.1f} + {m['activation_mib']:.1f}"
        rss = f"{m['peak_rss_mib']:.0f}" if m.get("peak_rss_mib") else "—"
        each = ", ".join(f"{x:.2f}" for x in r["speedups"])
        print(f"| {r['batch']} | {m['median_ms']:.2f} | {m['queries_per_s']:.1f} | {t:.2f} | {r['batch'] * 1e3 / t:.1f} "
              f"| {statistics.median(r['speedups']):.2f}× ({each}) | {m['dispatches']} | {m['submits']} | {planned} | {rss} "
              f"| {m['cold_start_ms']:.0f} / {r['pytorch_cold_ms']:.0f} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(torch_models.MODELS), choices=torch_models.MODELS)
    ap.add_argument("--weights", type=Path, help="weights for a single --models entry (default: its fixture)")
    ap.add_argument("--sample", type=Path, help="sample dir with raw_s0_* sources (default: fixture default_l75_n32)")
    ap.add_argument("--backends", nargs="+", default=["cpu"], choices=["cpu", "gpu"], help="moment-gpu backends")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--gpu-batches", nargs="+", type=int, help="batches for the gpu backend (default: --batches)")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--gpu-iters", type=int, help="timed forwards on the gpu backend (default: --iters)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of (PyTorch, moment-gpu) timings, alternated; the table gives the medians")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch CPU threads (default: all cores)")
    ap.add_argument("--moment", help="path of the moment binary (default: target/release/moment)")
    ap.add_argument("--json", type=Path, help="also write every number here")
    args = ap.parse_args(argv)
    if args.weights and len(args.models) != 1:
        ap.error("--weights needs exactly one --models entry")

    import torch

    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_label = (f"CUDA ({torch.cuda.get_device_name()})" if device == "cuda"
                   else f"CPU, {torch.get_num_threads()} threads")
    moment = moment_binary(args.moment)
    report, failed = [], False
    for name in args.models:
        weights = args.weights or fixture(name) / "default.safetensors"
        sample = args.sample or fixture(name) / "default_l75_n32"
        if not weights.exists():
            raise SystemExit(f"{weights} not found: run python3 tools/fixtures.py {name}")
        _, model, cfg = torch_models.load(weights, device)
        mod = torch_models.module(name)
        checks, inputs = parity(moment, weights, sample, model, mod, cfg)
        print(f"\n## {name}: {weights}")
        for what, res in checks.items():
            line = ", ".join(f"{k} {e:.1e}{'' if ok else ' OUT OF TOLERANCE'}" for k, (e, ok) in res.items())
            print(f"parity {what.replace('_', ' ')}: {line}")
            failed |= not all(ok for _, ok in res.values())
        clips, tokens = inputs[0].shape[1], inputs[2].shape[1]
        cold = cold_pytorch(weights, inputs, device)
        for backend in args.backends:
            batches = (args.gpu_batches or args.batches) if backend == "gpu" else args.batches
            iters = (args.gpu_iters or args.iters) if backend == "gpu" else args.iters
            rows = []
            for b in batches:
                # Rounds alternate the two sides, so a slow spell of a shared machine hits both.
                rounds = []
                for _ in range(args.rounds):
                    torch_ms = time_pytorch(model, inputs, b, args.iters, args.warmup, device)
                    ours = bench_moment(moment, weights, backend, b, clips, tokens, iters)
                    rounds.append({"pytorch_ms": torch_ms, "moment": ours})
                mid = sorted(rounds, key=lambda r: r["moment"]["median_ms"])[len(rounds) // 2]
                rows.append({"batch": b, "moment": mid["moment"],
                             "pytorch_ms": statistics.median(r["pytorch_ms"] for r in rounds),
                             "speedups": [r["pytorch_ms"] / r["moment"]["median_ms"] for r in rounds],
                             "rounds": [{"pytorch_ms": r["pytorch_ms"], "moment_ms": r["moment"]["median_ms"]}
                                        for r in rounds],
                             "pytorch_cold_ms": cold})
            table(name, f"{backend} ({rows[0]['moment']['adapter']})", rows, torch_label)
            report.append({"model": name, "backend": backend, "rows": rows, "parity": checks,
                           "pytorch": torch_label, "date": str(date.today())})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nPyTorch process peak RSS (all models, torch runtime included): {peak:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
