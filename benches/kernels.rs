//! One criterion group per kernel at the models' shapes (d = 256, 8 heads, L = 75 clips,
//! N = 32 tokens), at B = 1 and B = 32. Each iteration is a whole planned forward of a one-op
//! graph: input upload, one submit, wait, readback — what a kernel costs inside a model plus the
//! fixed per-forward overhead, which the `empty`-sized cases make visible.
//!
//! Runs on the adapter `MOMENT_ADAPTER` / `--adapter` rules pick, or on the CPU backend with
//! `MOMENT_BENCH_DEVICE=cpu`. The adapter name is part of every benchmark id.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use moment_gpu::ops::matmul::{linear, matmul};
use moment_gpu::ops::Act;
use moment_gpu::testing::Rng;
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

criterion_group!(kernels, matmul_benches);
criterion_main!(kernels);
