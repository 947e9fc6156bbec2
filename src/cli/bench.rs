//! `moment bench`: warm forward latency of a model at one shape, with the adapter name, the
//! dispatch/submit counts and the planned memory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use moment_gpu::models::{QueryInput, VideoInput};
use moment_gpu::testing::Rng;

use crate::DeviceArgs;

#[derive(Args)]
pub struct BenchArgs {
    /// Weights file (.safetensors with the official keys and the config metadata).
    #[arg(long)]
    weights: PathBuf,
    /// Queries per forward.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Clips per video (L).
    #[arg(long, default_value_t = 75)]
    clips: usize,
    /// Tokens per query (N).
    #[arg(long, default_value_t = 32)]
    tokens: usize,
    /// Timed forwards (after 3 warm-up forwards); the median is reported.
    #[arg(long, default_value_t = 20)]
    iters: usize,
    /// Print one JSON object instead of the report (for tools/bench_pytorch.py).
    #[arg(long)]
    json: bool,
}

pub fn run(device: &DeviceArgs, args: &BenchArgs) -> moment_gpu::Result<()> {
    let device = device.open()?;
    let start = Instant::now();
    let model = crate::load_model(&args.weights, &device)?;
    let io = model.io().clone();
    let mut rng = Rng::new(7);
    let videos: Vec<VideoInput> = (0..args.batch)
        .map(|_| VideoInput {
            clips: args.clips,
            width: io.video_width,
            data: rng.vec(args.clips * io.video_width, -0.1, 0.1),
            duration: None,
        })
        .collect();
    let queries: Vec<QueryInput> = (0..args.batch)
        .map(|_| QueryInput {
            tokens: args.tokens,
            width: io.query_width,
            data: rng.vec(args.tokens * io.query_width, -0.1, 0.1),
        })
        .collect();
    let items: Vec<(&VideoInput, &QueryInput)> = videos.iter().zip(&queries).collect();
    model.predict_batch(&items)?;
    let cold = start.elapsed();
    for _ in 0..2 {
        model.predict_batch(&items)?;
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters.max(1) {
        let t = Instant::now();
        model.predict_batch(&items)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let stats = model.last_stats();
    let mib = |bytes: usize| bytes as f64 / (1 << 20) as f64;
    let peak_rss = peak_rss_bytes();
    if args.json {
        let report = serde_json::json!({
            "adapter": device.name(),
            "model": model.kind().name(),
            "batch": args.batch, "clips": args.clips, "tokens": args.tokens,
            "median_ms": median, "min_ms": times[0], "max_ms": times[times.len() - 1], "timed": times.len(),
            "queries_per_s": args.batch as f64 * 1e3 / median,
            "cold_start_ms": cold.as_secs_f64() * 1e3,
            "dispatches": stats.dispatches, "submits": stats.submits, "readbacks": stats.readbacks,
            "activation_mib": mib(stats.peak_activation_bytes),
            "weight_mib": mib(stats.weight_bytes),
            "packed_weight_mib": mib(stats.packed_weight_bytes),
            "peak_rss_mib": peak_rss.map(mib),
        });
        println!("{report}");
        return Ok(());
    }
    println!("adapter: {}", device.name());
    println!("model: {} B={} L={} N={}", model.kind().name(), args.batch, args.clips, args.tokens);
    println!(
        "median {median:.3} ms per forward ({} timed, min {:.3}, max {:.3})",
        times.len(),
        times[0],
        times[times.len() - 1]
    );
    println!("{:.1} queries/s", args.batch as f64 * 1e3 / median);
    println!("cold start (load + plan + first forward): {:.1} ms", cold.as_secs_f64() * 1e3);
    println!("dispatches {} · submits {} · readbacks {} per forward", stats.dispatches, stats.submits, stats.readbacks);
    println!(
        "planned memory: {:.2} MiB activations + {:.2} MiB weights{}",
        mib(stats.peak_activation_bytes),
        mib(stats.weight_bytes),
        if stats.packed_weight_bytes > 0 {
            format!(" + {:.2} MiB weight copies packed for the CPU GEMM", mib(stats.packed_weight_bytes))
        } else {
            String::new()
        }
    );
    if let Some(rss) = peak_rss {
        println!("process peak resident memory: {:.1} MiB", mib(rss));
    }
    Ok(())
}

/// The process's peak resident set (Linux `VmHWM`), where the OS reports it.
fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
