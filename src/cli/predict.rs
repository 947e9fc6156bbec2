//! `moment predict`: one query over one video (feature files → one JSON line on stdout), or a
//! whole annotation JSONL in the QVHighlights layout (→ a predictions JSONL, written atomically,
//! with progress; a query that fails is reported and the others still come out).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use moment_gpu::io::{read_array, Array};
use moment_gpu::models::long::LongVideo;
use moment_gpu::models::postprocess::{prediction_json, saliency_f16};
use moment_gpu::models::{Model, Prediction, Qid, QueryInput, RawOutputs, VideoInput};
use moment_gpu::{Error, Result};

use crate::{write_atomically, DeviceArgs};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    moment predict --weights model.safetensors --video slowfast/vid.npz --video clip/vid.npz --query text/qid7.npz --duration 150\n  \
    moment predict --weights model.safetensors --annotations highlight_val_release.jsonl \\\n      \
    --video-dir slowfast_features --video-dir clip_features --query-dir clip_text_features --out preds.jsonl")]
pub struct PredictArgs {
    /// Weights file (.safetensors with the official keys and the config metadata).
    #[arg(long)]
    weights: PathBuf,
    /// A video feature file (.npy, .npz or .safetensors), once per source in the official order
    /// (TR-DETR on QVHighlights: SlowFast, then CLIP; VideoLights-B: SlowFast, CLIP, BLIP-2).
    #[arg(long, value_name = "FILE")]
    video: Vec<PathBuf>,
    /// A text feature file, once per source in order (CLIP `last_hidden_state` tokens;
    /// VideoLights-B: CLIP, then BLIP-2 text). Each source is normalised on its own, all are cut
    /// to the shortest token count and concatenated along features.
    #[arg(long, value_name = "FILE")]
    query: Vec<PathBuf>,
    /// Annotated video duration in seconds (default: clips × clip length).
    #[arg(long)]
    duration: Option<f32>,
    /// `qid` of the output record.
    #[arg(long, default_value = "0")]
    qid: String,
    /// `vid` of the output record.
    #[arg(long, default_value = "")]
    vid: String,
    /// `query` text of the output record.
    #[arg(long, default_value = "")]
    query_text: String,
    /// Entry to read from .npz/.safetensors video files (default: `features`).
    #[arg(long)]
    video_key: Option<String>,
    /// Entry to read from .npz/.safetensors text files (default: `last_hidden_state`).
    #[arg(long)]
    query_key: Option<String>,
    /// Batch mode: an annotation JSONL with `qid`, `query`, `vid`, `duration` per line.
    #[arg(long, value_name = "JSONL", requires_all = ["video_dir", "query_dir", "out"], conflicts_with_all = ["video", "query"])]
    annotations: Option<PathBuf>,
    /// Batch mode: a directory of `<vid>.npz` video features, once per source in order.
    #[arg(long, value_name = "DIR")]
    video_dir: Vec<PathBuf>,
    /// Batch mode: a directory of `qid<qid>.npz` text features, once per source in order.
    #[arg(long, value_name = "DIR")]
    query_dir: Vec<PathBuf>,
    /// Output JSONL (batch mode; optional for one query, default stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Batch mode: queries per forward.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Videos longer than the model's max_v_l run as overlapping windows of this many clips
    /// (default: max_v_l).
    #[arg(long)]
    window: Option<usize>,
    /// Clips between window starts (default: two thirds of the window).
    #[arg(long)]
    stride: Option<usize>,
    /// Cut videos to max_v_l clips, as the official data loader does, instead of windowing them.
    #[arg(long, conflicts_with_all = ["window", "stride"])]
    truncate: bool,
    /// One query: also write the model's raw outputs of the forward under the official names
    /// (`pred_logits`, `pred_spans`, `saliency_scores`, SG-DETR's `pred_quality_scores`, each with
    /// batch dimension 1) to this .npz, to compare with the PyTorch model output by output.
    #[arg(long, value_name = "NPZ", conflicts_with = "annotations")]
    raw_out: Option<PathBuf>,
}

impl PredictArgs {
    fn long_video(&self) -> LongVideo {
        LongVideo { window: self.window.unwrap_or(0), stride: self.stride.unwrap_or(0), ..LongVideo::default() }
    }
}

const VIDEO_KEYS: &[&str] = &["features"];
const QUERY_KEYS: &[&str] = &["last_hidden_state", "token"];

pub fn run(device: &DeviceArgs, args: &PredictArgs) -> Result<()> {
    if args.annotations.is_none() && (args.video.is_empty() || args.query.is_empty()) {
        return Err(Error::Input {
            name: "command line".into(),
            reason: "give --video and --query feature files (one query), or --annotations with --video-dir, --query-dir and --out (batch)".into(),
        });
    }
    let device = device.open()?;
    let model = crate::load_model(&args.weights, &device)?;
    match &args.annotations {
        Some(annotations) => run_batch(&model, args, annotations),
        None => {
            let sources = read_sources(&args.video, args.video_key.as_deref(), VIDEO_KEYS)?;
            let query = read_query(&model, &args.query, args.query_key.as_deref())?;
            let windowed = !args.truncate && clips_of(&sources) > model.io().max_clips;
            if let (Some(path), true) = (&args.raw_out, windowed) {
                return Err(Error::Input {
                    name: path.display().to_string(),
                    reason: format!(
                        "raw outputs are those of one forward, but this video has more than max_v_l = {} clips and runs as windows; add --truncate",
                        model.io().max_clips
                    ),
                });
            }
            let prediction = if args.truncate {
                let mut video = model.video_from_sources(&sources, &names(&args.video))?;
                video.duration = args.duration;
                model.predict(&video, &query)?
            } else {
                model.predict_long(&sources, &names(&args.video), &query, args.duration, &args.long_video())?
            };
            if let Some(path) = &args.raw_out {
                write_atomically(path, &raw_npz(&prediction.raw).map_err(|e| Error::io(path, e))?)?;
            }
            let line = record(&Qid::parse(&args.qid), &args.query_text, &args.vid, &prediction);
            match &args.out {
                Some(out) => write_atomically(out, format!("{line}\n").as_bytes()),
                None => {
                    println!("{line}");
                    Ok(())
                }
            }
        }
    }
}

fn record(qid: &Qid, query: &str, vid: &str, p: &Prediction) -> String {
    prediction_json(qid, query, vid, &p.windows, &saliency_f16(&p.saliency))
}

/// The raw outputs as an .npz (float32, batch dimension 1, the official output names).
fn raw_npz(raw: &RawOutputs) -> std::io::Result<Vec<u8>> {
    use npyz::WriterBuilder;
    let queries = raw.spans.len() / 2;
    let mut arrays: Vec<(&str, Vec<u64>, &[f32])> = vec![
        ("pred_logits", vec![1, queries as u64, (raw.logits.len() / queries.max(1)) as u64], &raw.logits),
        ("pred_spans", vec![1, queries as u64, 2], &raw.spans),
        ("saliency_scores", vec![1, raw.saliency.len() as u64], &raw.saliency),
    ];
    if let Some(quality) = &raw.quality {
        arrays.push(("pred_quality_scores", vec![1, quality.len() as u64, 1], quality));
    }
    let mut npz = npyz::npz::NpzWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, shape, values) in arrays {
        let mut writer = npz.array::<f32>(name, Default::default())?.default_dtype().shape(&shape).begin_nd()?;
        writer.extend(values.iter().copied())?;
        writer.finish()?;
    }
    Ok(npz.zip_writer().finish()?.into_inner())
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn read_sources(paths: &[PathBuf], key: Option<&str>, default_keys: &[&str]) -> Result<Vec<Array>> {
    paths.iter().map(|p| read_array(p, key, default_keys)).collect()
}

/// Rows of the shortest source (the clips the loader keeps).
fn clips_of(sources: &[Array]) -> usize {
    sources.iter().map(|a| a.rows_and_width().map_or(0, |(r, _)| r)).min().unwrap_or(0)
}

fn read_query(model: &Model, paths: &[PathBuf], key: Option<&str>) -> Result<QueryInput> {
    model.query_from_sources(&read_sources(paths, key, QUERY_KEYS)?, &names(paths))
}

/// One annotation line: the fields prediction needs.
struct Annotation {
    qid: Qid,
    query: String,
    vid: String,
    duration: Option<f32>,
}

fn parse_annotation(path: &Path, number: usize, line: &str) -> Result<Annotation> {
    let bad = |reason: String| Error::Input { name: format!("{}:{number}", path.display()), reason };
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let qid = match &v["qid"] {
        serde_json::Value::Number(n) if n.is_i64() => Qid::Int(n.as_i64().unwrap()),
        serde_json::Value::String(s) => Qid::Str(s.clone()),
        other => return Err(bad(format!("`qid` must be an integer or a string, got {other}"))),
    };
    let vid = v["vid"].as_str().ok_or_else(|| bad("missing string field `vid`".into()))?.to_string();
    let query = v["query"].as_str().unwrap_or("").to_string();
    let duration = match &v["duration"] {
        serde_json::Value::Null => None,
        d => Some(d.as_f64().ok_or_else(|| bad(format!("`duration` must be a number, got {d}")))? as f32),
    };
    Ok(Annotation { qid, query, vid, duration })
}

fn run_batch(model: &Model, args: &PredictArgs, annotations: &Path) -> Result<()> {
    let text = std::fs::read_to_string(annotations).map_err(|e| Error::io(annotations, e))?;
    let out = args.out.as_ref().expect("clap requires --out in batch mode");
    // Fail on an unwritable output before the work, not after it.
    let out_dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !out_dir.is_dir() {
        return Err(Error::io(
            out,
            std::io::Error::new(std::io::ErrorKind::NotFound, "output directory does not exist"),
        ));
    }
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)).collect();
    let bar = ProgressBar::new(lines.len() as u64);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} queries · {per_sec} · eta {eta}").unwrap());
    let mut records: Vec<(usize, String)> = Vec::new();
    let mut failures = 0usize;
    for chunk in lines.chunks(args.batch_size.max(1)) {
        // Load every item of the chunk; an item that fails is reported and skipped.
        let mut ready: Vec<(usize, Annotation, VideoInput, QueryInput)> = Vec::new();
        for &(number, line) in chunk {
            let loaded = parse_annotation(annotations, number, line).and_then(|a| {
                let files: Vec<PathBuf> = args.video_dir.iter().map(|d| d.join(format!("{}.npz", a.vid))).collect();
                let sources = read_sources(&files, args.video_key.as_deref(), VIDEO_KEYS)?;
                let qname = match &a.qid {
                    Qid::Int(i) => format!("qid{i}.npz"),
                    Qid::Str(s) => format!("qid{s}.npz"),
                };
                let qfiles: Vec<PathBuf> = args.query_dir.iter().map(|d| d.join(&qname)).collect();
                let query = read_query(model, &qfiles, args.query_key.as_deref())?;
                if !args.truncate && clips_of(&sources) > model.io().max_clips {
                    // Longer than one window: predicted on its own, windowed.
                    let p = model.predict_long(&sources, &names(&files), &query, a.duration, &args.long_video())?;
                    return Ok(Err((a, p)));
                }
                let mut video = model.video_from_sources(&sources, &names(&files))?;
                video.duration = a.duration;
                Ok(Ok((a, video, query)))
            });
            match loaded {
                Ok(Ok((a, v, q))) => ready.push((number, a, v, q)),
                Ok(Err((a, p))) => records.push((number, record(&a.qid, &a.query, &a.vid, &p))),
                Err(e) => {
                    failures += 1;
                    bar.suspend(|| eprintln!("moment: line {number} skipped: {e}"));
                }
            }
        }
        let items: Vec<(&VideoInput, &QueryInput)> = ready.iter().map(|(_, _, v, q)| (v, q)).collect();
        let predictions = model.predict_batch(&items)?;
        for ((number, a, _, _), p) in ready.iter().zip(&predictions) {
            records.push((*number, record(&a.qid, &a.query, &a.vid, p)));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    records.sort_by_key(|(n, _)| *n);
    let mut body = Vec::new();
    for (_, line) in &records {
        writeln!(body, "{line}").unwrap();
    }
    write_atomically(out, &body)?;
    eprintln!(
        "moment: wrote {} predictions to {}{}",
        records.len(),
        out.display(),
        if failures > 0 { format!(" ({failures} queries failed, see above)") } else { String::new() }
    );
    if records.is_empty() && failures > 0 {
        return Err(Error::Input { name: annotations.display().to_string(), reason: "every query failed".into() });
    }
    Ok(())
}
