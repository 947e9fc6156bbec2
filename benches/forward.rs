//! criterion `forward` group: whole-model forwards at the official default sizes (L = 75 clips,
//! N = 32 tokens) at B = 1 and B = 32, on the device `MOMENT_BENCH_DEVICE` (`cpu`, or the best
//! adapter by default). Weights: random weights with the official keys and default config from
//! the NumPy spec (`tools/fixtures.py`, generated on first use). The adapter name is in every id.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moment_gpu::models::{Model, QueryInput, VideoInput};
use moment_gpu::testing::Rng;
use moment_gpu::{Device, DeviceKind};

const MODELS: &[&str] = &["tr_detr", "ld_detr", "videolights", "sg_detr"];
const L: usize = 75;
const N: usize = 32;

fn default_weights(model: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target").join("fixtures");
    let status = std::process::Command::new("python3")
        .arg(root.join("tools").join("fixtures.py"))
        .arg("--out")
        .arg(&out)
        .arg(model)
        .status()
        .expect("python3 (pip install numpy safetensors) to generate the bench weights");
    assert!(status.success(), "tools/fixtures.py {model} failed");
    out.join(model).join("default.safetensors")
}

fn forward(c: &mut Criterion) {
    let kind =
        if std::env::var("MOMENT_BENCH_DEVICE").as_deref() == Ok("cpu") { DeviceKind::Cpu } else { DeviceKind::Auto };
    let device = Device::open(kind, None).expect("open the bench device");
    for model_name in MODELS {
        let model = Model::load(default_weights(model_name), &device).expect("load the model");
        let io = model.io().clone();
        let mut group = c.benchmark_group(format!("forward [{}]", device.name()));
        group.sample_size(10);
        for batch in [1usize, 32] {
            let mut rng = Rng::new(batch as u64);
            let videos: Vec<VideoInput> = (0..batch)
                .map(|_| VideoInput {
                    clips: L,
                    width: io.video_width,
                    data: rng.vec(L * io.video_width, -0.1, 0.1),
                    duration: None,
                })
                .collect();
            let queries: Vec<QueryInput> = (0..batch)
                .map(|_| QueryInput { tokens: N, width: io.query_width, data: rng.vec(N * io.query_width, -0.1, 0.1) })
                .collect();
            let items: Vec<(&VideoInput, &QueryInput)> = videos.iter().zip(&queries).collect();
            model.predict_batch(&items).expect("warm-up forward");
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(*model_name, format!("B{batch} L{L} N{N}")), |b| {
                b.iter(|| model.predict_batch(&items).expect("forward"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
