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
        "peak memory: {:.2} MiB activations + {:.2} MiB weights",
        stats.peak_activation_bytes as f64 / (1 << 20) as f64,
        stats.weight_bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}
