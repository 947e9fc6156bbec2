//! One criterion group per kernel at the models' shapes (d = 256, 8 heads, L = 75 clips,
//! N = 32 tokens), at B = 1 and B = 32. Each iteration is a whole planned forward of a one-op
//! graph: input upload, one submit, wait, readback — what a kernel costs inside a model plus the
//! fixed per-forward overhead, which the `empty`-sized cases make visible.
//!
//! Runs on the adapter `MOMENT_ADAPTER` / `--adapter` rules pick, or on the CPU backend with
//! `MOMENT_BENCH_DEVICE=cpu`. The adapter name is part of every benchmark id.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use moment_gpu::ops::attention::{attention, Cols};
use moment_gpu::ops::conv1d::{conv1d, conv_bn_block};
use moment_gpu::ops::elementwise::{binary_fused, Binary, Unary};
use moment_gpu::ops::gated_attention::gated_attention;
use moment_gpu::ops::gru::{gru, GruWeights};
use moment_gpu::ops::layout::{concat, gather_rows, transpose};
use moment_gpu::ops::matmul::{linear, matmul};
use moment_gpu::ops::moment_rows::moment_rows;
use moment_gpu::ops::norm::{l2_normalize, layer_norm, L2Mode};
use moment_gpu::ops::position::{sine_embed_coords, sine_position_from_mask, SineConfig};
use moment_gpu::ops::reduce::{sum, topk};
use moment_gpu::ops::softmax::{softmax, MaskMode};
use moment_gpu::ops::span::{nms, pairwise_iou, NmsIou, SpanFormat};
use moment_gpu::ops::Act;
use moment_gpu::testing::Rng;
use moment_gpu::weights::Tensor;
use moment_gpu::{ConstCache, Device, DeviceKind, Executable, Graph};

const D: usize = 256;
const L: usize = 75;
const N: usize = 32;
const BATCHES: [usize; 2] = [1, 32];

fn device() -> Device {
    let kind = match std::env::var("MOMENT_BENCH_DEVICE").as_deref() {
        Ok("cpu") => DeviceKind::Cpu,
        _ => DeviceKind::Auto,
    };
    Device::open(kind, None).expect("open the bench device")
}

/// Benchmarks one graph: `build` declares inputs named in `inputs` (sizes in values).
fn bench_graph(
    c: &mut Criterion,
    device: &Device,
    group: &str,
    case: &str,
    flops: u64,
    inputs: &[(&str, usize)],
    build: impl Fn(&mut Graph),
) {
    let mut g = Graph::new();
    build(&mut g);
    let mut exe = Executable::new(g, device, &ConstCache::new()).expect("plan");
    let mut rng = Rng::new(1);
    let data: Vec<(String, Vec<f32>)> =
        inputs.iter().map(|(n, len)| (n.to_string(), rng.vec(*len, -1.0, 1.0))).collect();
    let named: Vec<(&str, &[f32])> = data.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    let mut grp = c.benchmark_group(format!("{group} [{}]", device.name()));
    grp.sample_size(10);
    grp.throughput(Throughput::Elements(flops));
    grp.bench_function(BenchmarkId::from_parameter(case), |b| b.iter(|| exe.run(&named).expect("forward")));
    grp.finish();
}

fn weight(g: &mut Graph, rng: &mut Rng, shape: &[usize]) -> moment_gpu::TensorId {
    let n = shape.iter().product();
    g.constant(rng.vec(n, -0.1, 0.1).into(), shape).unwrap()
}

fn matmul_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        // The video input projection (the largest GEMM of TR-DETR): 2818 → 256 over L clips.
        let rows = b * L;
        bench_graph(
            c,
            &device,
            "linear",
            &format!("B{b} {L}x2818->256 relu"),
            2 * (rows * 2818 * D) as u64,
            &[("x", rows * 2818)],
            |g| {
                let mut rng = Rng::new(2);
                let x = g.input("x", &[b, L, 2818]);
                let w = weight(g, &mut rng, &[D, 2818]);
                let bias = weight(g, &mut rng, &[D]);
                let y = linear(g, x, w, Some(bias), Act::Relu).unwrap();
                g.output("y", y);
            },
        );
        // An FFN expansion, K % 4 == 0 (vec4 path): 256 → 1024.
        bench_graph(
            c,
            &device,
            "linear",
            &format!("B{b} {L}x256->1024 prelu"),
            2 * (rows * D * 1024) as u64,
            &[("x", rows * D)],
            |g| {
                let mut rng = Rng::new(3);
                let x = g.input("x", &[b, L, D]);
                let w = weight(g, &mut rng, &[1024, D]);
                let slope = g.constant(vec![0.25f32].into(), &[1]).unwrap();
                let y = linear(g, x, w, None, Act::Prelu(slope)).unwrap();
                g.output("y", y);
            },
        );
        // Batched clip × token similarity (VSLNet-style fuser): (L × d) · (N × d)ᵀ.
        bench_graph(
            c,
            &device,
            "matmul",
            &format!("B{b} {L}x{D}x{N}"),
            2 * (b * L * D * N) as u64,
            &[("v", b * L * D), ("t", b * N * D)],
            |g| {
                let v = g.input("v", &[b, L, D]);
                let t = g.input("t", &[b, N, D]);
                let s = matmul(g, v, t, true).unwrap();
                g.output("s", s);
            },
        );
    }
}

fn norm_softmax_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        bench_graph(c, &device, "layer_norm", &format!("B{b} {L}x{D}"), (b * L * D) as u64, &[("x", b * L * D)], |g| {
            let mut rng = Rng::new(4);
            let x = g.input("x", &[b, L, D]);
            let (gamma, beta) = (weight(g, &mut rng, &[D]), weight(g, &mut rng, &[D]));
            let y = layer_norm(g, x, gamma, beta, 1e-5).unwrap();
            g.output("y", y);
        });
        bench_graph(
            c,
            &device,
            "l2_normalize",
            &format!("B{b} {L}x2816"),
            (b * L * 2816) as u64,
            &[("x", b * L * 2816)],
            |g| {
                let x = g.input("x", &[b, L, 2816]);
                let y = l2_normalize(g, x, 1e-5, L2Mode::AddEps).unwrap();
                g.output("y", y);
            },
        );
        // The fuser's clip × token scores, masked over tokens.
        bench_graph(
            c,
            &device,
            "softmax",
            &format!("B{b} {L}x{N} masked"),
            (b * L * N) as u64,
            &[("s", b * L * N), ("m", b * N)],
            |g| {
                let s = g.input("s", &[b, L, N]);
                let m = g.input("m", &[b, N]);
                let y = softmax(g, s, Some(m), MaskMode::Additive(-1e30), 1.0).unwrap();
                g.output("y", y);
            },
        );
    }
}

fn attention_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        // Encoder self-attention over clips: 8 heads of 32.
        let flops = 4 * (b * L * L * D) as u64;
        bench_graph(
            c,
            &device,
            "attention",
            &format!("B{b} self {L}x{L} 8x32"),
            flops,
            &[("qk", b * L * 2 * D), ("v", b * L * D), ("m", b * L)],
            |g| {
                let qk = g.input("qk", &[b, L, 2 * D]);
                let v = g.input("v", &[b, L, D]);
                let m = g.input("m", &[b, L]);
                let y = attention(
                    g,
                    Cols::new(qk, 0, D),
                    Cols::new(qk, D, D),
                    Cols::all(g, v),
                    Some(m),
                    8,
                    32f32.powf(-0.5),
                )
                .unwrap();
                g.output("y", y);
            },
        );
        // Decoder cross-attention: 10 queries, heads of 64 (content | position) over 32-d values.
        let flops = 2 * (b * 10 * L * (2 * D + D)) as u64;
        bench_graph(
            c,
            &device,
            "attention",
            &format!("B{b} cross 10x{L} 8x64/32"),
            flops,
            &[("q", b * 10 * 2 * D), ("k", b * L * 2 * D), ("v", b * L * D), ("m", b * L)],
            |g| {
                let q = g.input("q", &[b, 10, 2 * D]);
                let k = g.input("k", &[b, L, 2 * D]);
                let v = g.input("v", &[b, L, D]);
                let m = g.input("m", &[b, L]);
                let y = attention(g, Cols::all(g, q), Cols::all(g, k), Cols::all(g, v), Some(m), 8, 0.125).unwrap();
                g.output("y", y);
            },
        );
        // SG-DETR's saliency-gated cross-attention: clips attend to tokens.
        let flops = 4 * (b * L * N * D) as u64;
        bench_graph(
            c,
            &device,
            "gated_attention",
            &format!("B{b} {L}x{N} 8x32"),
            flops,
            &[("q", b * L * D), ("kv", b * N * 2 * D), ("m", b * N), ("s", b * L)],
            |g| {
                let q = g.input("q", &[b, L, D]);
                let kv = g.input("kv", &[b, N, 2 * D]);
                let m = g.input("m", &[b, N]);
                let s = g.input("s", &[b, L]);
                let y = gated_attention(
                    g,
                    Cols::all(g, q),
                    Cols::new(kv, 0, D),
                    Cols::new(kv, D, D),
                    Some(m),
                    s,
                    8,
                    32f32.powf(-0.5),
                )
                .unwrap();
                g.output("y", y);
            },
        );
    }
}

fn conv_gru_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        let flops = 2 * (b * L * D * D * 3) as u64;
        bench_graph(c, &device, "conv1d", &format!("B{b} {L}x{D} k3 relu"), flops, &[("x", b * L * D)], |g| {
            let mut rng = Rng::new(5);
            let x = g.input("x", &[b, L, D]);
            let w = weight(g, &mut rng, &[D, D, 3]);
            let bias = weight(g, &mut rng, &[D]);
            let y = conv1d(g, x, w, Some(bias), None, Act::Relu).unwrap();
            g.output("y", y);
        });
        // LD-DETR's block relu(x + BN(conv(relu(BN(conv x))))), BatchNorm folded: two dispatches.
        bench_graph(c, &device, "conv_bn_block", &format!("B{b} {L}x{D} k3"), 2 * flops, &[("x", b * L * D)], |g| {
            let mut rng = Rng::new(6);
            let x = g.input("x", &[b, L, D]);
            let (w1, b1) = (weight(g, &mut rng, &[D, D, 3]), weight(g, &mut rng, &[D]));
            let (w2, b2) = (weight(g, &mut rng, &[D, D, 3]), weight(g, &mut rng, &[D]));
            let y = conv_bn_block(g, x, w1, b1, w2, b2).unwrap();
            g.output("y", y);
        });
        // The MR2HD / HD-head GRU: L steps of hidden 256 (input projection + recurrent loop).
        let mut rng = Rng::new(7);
        let t = |rng: &mut Rng, shape: Vec<usize>| {
            let n = shape.iter().product();
            Tensor::new(shape, rng.vec(n, -0.1, 0.1))
        };
        let layer = GruWeights::from_tensors(
            &t(&mut rng, vec![3 * D, D]),
            &t(&mut rng, vec![3 * D, D]),
            &t(&mut rng, vec![3 * D]),
            &t(&mut rng, vec![3 * D]),
        )
        .unwrap();
        bench_graph(
            c,
            &device,
            "gru",
            &format!("B{b} {L} steps h{D}"),
            2 * (b * L * 6 * D * D) as u64,
            &[("x", b * L * D)],
            |g| {
                let x = g.input("x", &[b, L, D]);
                let (_, h) = gru(g, x, std::slice::from_ref(&layer), None).unwrap();
                g.output("h", h);
            },
        );
    }
}

fn span_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        bench_graph(
            c,
            &device,
            "span_iou",
            &format!("B{b} 10x10 giou"),
            (b * 100) as u64,
            &[("a", b * 20), ("p", b * 20)],
            |g| {
                let a = g.input("a", &[b, 10, 2]);
                let p = g.input("p", &[b, 10, 2]);
                let y = pairwise_iou(g, a, p, SpanFormat::CenterWidth, true).unwrap();
                g.output("y", y);
            },
        );
        bench_graph(
            c,
            &device,
            "nms",
            &format!("B{b} 100 spans"),
            (b * 100) as u64,
            &[("s", b * 200), ("p", b * 100)],
            |g| {
                let s = g.input("s", &[b, 100, 2]);
                let p = g.input("p", &[b, 100]);
                let y = nms(g, s, p, SpanFormat::StartEnd, 0.7, Some(10), NmsIou::Hull).unwrap();
                g.output("y", y);
            },
        );
        bench_graph(
            c,
            &device,
            "moment_rows",
            &format!("B{b} 10 queries {L} clips"),
            (b * L) as u64,
            &[("l", b * 20), ("s", b * 20), ("m", b * L)],
            |g| {
                let l = g.input("l", &[b, 10, 2]);
                let s = g.input("s", &[b, 10, 2]);
                let m = g.input("m", &[b, L]);
                let (rows, _) = moment_rows(g, l, s, m, 2.0).unwrap();
                g.output("rows", rows);
            },
        );
    }
}

fn plumbing_benches(c: &mut Criterion) {
    let device = device();
    for b in BATCHES {
        let n = b * L * D;
        // DAB refinement sigmoid(t + inverse_sigmoid(r)) with broadcasting, one dispatch.
        bench_graph(
            c,
            &device,
            "elementwise",
            &format!("B{b} {L}x{D} fused add"),
            n as u64,
            &[("a", n), ("r", b * L)],
            |g| {
                let a = g.input("a", &[b, L, D]);
                let r = g.input("r", &[b, L, 1]);
                let y =
                    binary_fused(g, Binary::Add, a, r, Unary::InverseSigmoid { eps: 1e-3 }, Unary::Sigmoid).unwrap();
                g.output("y", y);
            },
        );
        bench_graph(c, &device, "reduce", &format!("B{b} sum over {L} clips"), n as u64, &[("x", n)], |g| {
            let x = g.input("x", &[b, L, D]);
            let y = sum(g, x, 1).unwrap();
            g.output("y", y);
        });
        bench_graph(c, &device, "topk", &format!("B{b} top10 of {L}"), (b * L) as u64, &[("x", b * L)], |g| {
            let x = g.input("x", &[b, L]);
            let (v, i) = topk(g, x, 10).unwrap();
            g.output("v", v);
            g.output("i", i);
        });
        bench_graph(c, &device, "concat", &format!("B{b} 4x{L}x{D}"), 4 * n as u64, &[("x", n)], |g| {
            let x = g.input("x", &[b, L, D]);
            let y = concat(g, &[x, x, x, x], 2).unwrap();
            g.output("y", y);
        });
        bench_graph(c, &device, "transpose", &format!("B{b} {L}x{N}"), (b * L * N) as u64, &[("x", b * L * N)], |g| {
            let x = g.input("x", &[b, L, N]);
            let y = transpose(g, x, 1, 2).unwrap();
            g.output("y", y);
        });
        bench_graph(
            c,
            &device,
            "gather_rows",
            &format!("B{b} {L} rows of {D}"),
            n as u64,
            &[("x", n), ("i", b * L)],
            |g| {
                let x = g.input("x", &[b, L, D]);
                let i = g.input("i", &[b, L]);
                let y = gather_rows(g, x, i).unwrap();
                g.output("y", y);
            },
        );
        bench_graph(c, &device, "position", &format!("B{b} sine from mask {L}x{D}"), n as u64, &[("m", b * L)], |g| {
            let m = g.input("m", &[b, L]);
            let y = sine_position_from_mask(g, m, SineConfig::detr(D, 10000.0)).unwrap();
            g.output("y", y);
        });
        bench_graph(
            c,
            &device,
            "position",
            &format!("B{b} anchor sine 10x2x128"),
            (b * 10 * D) as u64,
            &[("a", b * 20)],
            |g| {
                let a = g.input("a", &[b, 10, 2]);
                let y = sine_embed_coords(g, a, 128, 10000.0, std::f32::consts::TAU).unwrap();
                g.output("y", y);
            },
        );
    }
}

criterion_group!(
    kernels,
    matmul_benches,
    norm_softmax_benches,
    attention_benches,
    conv_gru_benches,
    span_benches,
    plumbing_benches
);
criterion_main!(kernels);
