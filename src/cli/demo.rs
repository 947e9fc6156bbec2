//! `moment demo` (also what `moment` does with no subcommand): runs the bundled demo model on the
//! bundled example query, prints the top windows beside the planted truth and the backend used,
//! and writes a saliency/moment plot.
//!
//! The demo model is a small TR-DETR trained by `tools/train_demo.py` on SYNTHETIC planted-moment
//! data (random concept vectors, not real video features); the files are embedded in the binary,
//! so the command works from any directory.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use moment_gpu::io::Array;
use moment_gpu::models::Model;
use moment_gpu::plot::Plot;
use moment_gpu::weights::Weights;
use moment_gpu::{Device, DeviceKind, Error, Result};

use crate::{write_atomically, DeviceArgs};

const WEIGHTS: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo.safetensors"));
const VIDEO: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/example_video.npy"));
const QUERY: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/example_query.npy"));
const TRUTH: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/example_truth.json"));

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Where to write the saliency/moment plot (SVG).
    #[arg(long, default_value = "demo.svg")]
    pub out: PathBuf,
    /// How many predicted windows to print and draw.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs { out: PathBuf::from("demo.svg"), top: 5 }
    }
}

fn npy(name: &str, bytes: &[u8]) -> Result<Array> {
    let bad = |reason: String| Error::Features { path: PathBuf::from(name), reason };
    let file = npyz::NpyFile::new(bytes).map_err(|e| bad(format!("bundled file is not a .npy: {e}")))?;
    let shape: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    let data: Vec<f32> = file.into_vec().map_err(|e| bad(format!("bundled file is not f32: {e}")))?;
    Ok(Array { shape, data })
}

/// The planted truth of the example (`weights/example_truth.json`).
struct Truth {
    qid: i64,
    query: String,
    windows: Vec<[f64; 2]>,
    highlight: Vec<f32>,
}

fn truth() -> Result<Truth> {
    let bad = |reason: &str| Error::Input { name: "weights/example_truth.json".into(), reason: reason.into() };
    let v: serde_json::Value = serde_json::from_str(TRUTH).map_err(|_| bad("not JSON"))?;
    let windows = v["relevant_windows"]
        .as_array()
        .ok_or_else(|| bad("no relevant_windows"))?
        .iter()
        .map(|w| [w[0].as_f64().unwrap_or(0.0), w[1].as_f64().unwrap_or(0.0)])
        .collect();
    let highlight = v["highlight_scores"]
        .as_array()
        .ok_or_else(|| bad("no highlight_scores"))?
        .iter()
        .map(|x| x.as_f64().unwrap_or(0.0) as f32)
        .collect();
    Ok(Truth {
        qid: v["qid"].as_i64().unwrap_or(0),
        query: v["query"].as_str().unwrap_or("").to_string(),
        windows,
        highlight,
    })
}

fn iou(a: [f64; 2], b: [f64; 2]) -> f64 {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    let union = (a[1] - a[0]) + (b[1] - b[0]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

pub fn run(device_args: &DeviceArgs, args: &DemoArgs) -> Result<()> {
    println!("moment-gpu demo: a small TR-DETR trained on SYNTHETIC planted-moment data (not real video;");
    println!(
        "                 see tools/train_demo.py). Real models: moment predict --weights <converted checkpoint>."
    );
    let device = device_args.open()?;
    let fell_back = device_args.device == DeviceKind::Auto && matches!(device, Device::Cpu);
    println!("backend: {}{}", device.name(), if fell_back { " (fell back: no usable GPU adapter)" } else { "" });

    let weights = Weights::from_bytes("weights/demo.safetensors (bundled)", WEIGHTS)?;
    let model = Model::from_weights(&weights, &device)?;
    for notice in model.notices() {
        eprintln!("moment: {notice}");
    }
    let video = model.video_from_sources(&[npy("weights/example_video.npy", VIDEO)?], &["example video".into()])?;
    let query = model.query_from_sources(&[npy("weights/example_query.npy", QUERY)?], &["example query".into()])?;
    let truth = truth()?;

    let start = Instant::now();
    let prediction = model.predict(&video, &query)?;
    let first = start.elapsed();
    let clip = model.io().clip_length as f64;
    let duration = video.clips as f64 * clip;

    println!("query:   \"{}\" (qid {}, {} tokens)", truth.query, truth.qid, query.tokens);
    println!("video:   {} clips × {clip} s = {duration} s", video.clips);
    let truth_text: Vec<String> = truth.windows.iter().map(|w| format!("[{}, {}]", w[0], w[1])).collect();
    println!("planted truth windows: {}", truth_text.join(", "));
    println!();
    println!("  rank   window (s)       score    best IoU with truth");
    for (rank, w) in prediction.windows.iter().take(args.top).enumerate() {
        let best = truth.windows.iter().map(|t| iou([w.start, w.end], *t)).fold(0.0, f64::max);
        let mark = if best >= 0.5 { "  ✓ (≥ 0.5)" } else { "" };
        println!("  #{:<4} {:<16} {:.4}   {best:.2}{mark}", rank + 1, format!("[{}, {}]", w.start, w.end), w.score);
    }
    if let Some((top, &value)) = prediction.saliency.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
        let planted = truth.highlight.get(top).copied().unwrap_or(0.0);
        println!();
        println!(
            "top saliency clip: {top} ({}–{} s, score {value:.3}); planted highlight score there: {planted:.2} / 4",
            top as f64 * clip,
            (top + 1) as f64 * clip
        );
    }

    let plot = Plot {
        title: format!("moment-gpu demo · query \"{}\" · model trained on synthetic data", truth.query),
        clip_length: clip as f32,
        saliency: prediction.saliency.clone(),
        windows: prediction.windows.clone(),
        max_windows: args.top,
        truth_windows: truth.windows.clone(),
        truth_scores: truth.highlight.clone(),
    };
    write_atomically(&args.out, plot.to_svg().as_bytes())?;
    println!();
    println!("plot: {} · first forward (plan + run) {:.1} ms", args.out.display(), first.as_secs_f64() * 1e3);
    Ok(())
}
