//! `moment plot`: the saliency curve over time with the predicted top windows and, where given,
//! the ground-truth windows and highlight scores, as SVG — one file per query.

use std::path::{Path, PathBuf};

use clap::Args;
use moment_gpu::models::Window;
use moment_gpu::plot::Plot;
use moment_gpu::{Error, Result};
use serde_json::Value;

use crate::write_atomically;

#[derive(Args)]
pub struct PlotArgs {
    /// Predictions JSONL (`moment predict` output, the official submission format).
    #[arg(long)]
    prediction: PathBuf,
    /// Annotations JSONL in the QVHighlights layout, for the ground truth.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// Plot only this query; without it, every query of the file.
    #[arg(long)]
    qid: Option<String>,
    /// Output SVG (with --qid or a one-line file), else a directory receiving `<qid>.svg` files.
    #[arg(long)]
    out: PathBuf,
    /// Predicted windows drawn.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Seconds per clip.
    #[arg(long, default_value_t = 2.0)]
    clip_length: f32,
}

fn read_lines(path: &Path) -> Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map(|v| (i + 1, v)).map_err(|e| Error::Input {
                name: format!("{}:{}", path.display(), i + 1),
                reason: format!("not a JSON object: {e}"),
            })
        })
        .collect()
}

fn qid_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default()
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let predictions = read_lines(&args.prediction)?;
    let truths = match &args.gt {
        Some(gt) => read_lines(gt)?,
        None => Vec::new(),
    };
    let chosen: Vec<&(usize, Value)> =
        predictions.iter().filter(|(_, p)| args.qid.as_ref().is_none_or(|q| &qid_text(&p["qid"]) == q)).collect();
    if chosen.is_empty() {
        return Err(Error::Input {
            name: args.prediction.display().to_string(),
            reason: match &args.qid {
                Some(q) => format!("no prediction with qid {q}"),
                None => "no predictions".into(),
            },
        });
    }
    let one_file = chosen.len() == 1;
    if !one_file {
        std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    }
    for (line, p) in chosen {
        let qid = qid_text(&p["qid"]);
        let bad = |field: &str| Error::Input {
            name: format!("{}:{line}", args.prediction.display()),
            reason: format!("missing `{field}`"),
        };
        let windows: Vec<Window> = p["pred_relevant_windows"]
            .as_array()
            .ok_or_else(|| bad("pred_relevant_windows"))?
            .iter()
            .map(|w| {
                let n = numbers(w);
                Window {
                    start: n.first().copied().unwrap_or(0.0),
                    end: n.get(1).copied().unwrap_or(0.0),
                    score: n.get(2).copied().unwrap_or(0.0),
                }
            })
            .collect();
        let saliency: Vec<f32> = numbers(&p["pred_saliency_scores"]).into_iter().map(|x| x as f32).collect();
        let mut plot = Plot {
            title: format!("qid {qid} · {} · {}", p["vid"].as_str().unwrap_or(""), p["query"].as_str().unwrap_or("")),
            clip_length: args.clip_length,
            saliency,
            windows,
            max_windows: args.top,
            ..Plot::default()
        };
        if let Some((_, t)) = truths.iter().find(|(_, t)| qid_text(&t["qid"]) == qid) {
            plot.truth_windows = t["relevant_windows"]
                .as_array()
                .map(|ws| ws.iter().map(numbers).filter(|n| n.len() == 2).map(|n| [n[0], n[1]]).collect())
                .unwrap_or_default();
            // Highlight score per clip: the mean of the annotators' 0–4 scores of each relevant clip.
            let ids: Vec<usize> = numbers(&t["relevant_clip_ids"]).into_iter().map(|x| x as usize).collect();
            let scores = t["saliency_scores"].as_array().cloned().unwrap_or_default();
            let clips = plot.saliency.len().max(ids.iter().map(|i| i + 1).max().unwrap_or(0));
            let mut truth = vec![0.0f32; clips];
            for (id, s) in ids.iter().zip(&scores) {
                let s = numbers(s);
                truth[*id] = (s.iter().sum::<f64>() / s.len().max(1) as f64) as f32;
            }
            plot.truth_scores = truth;
        }
        let path = if one_file { args.out.clone() } else { args.out.join(format!("{qid}.svg")) };
        write_atomically(&path, plot.to_svg().as_bytes())?;
        eprintln!("moment: wrote {}", path.display());
    }
    Ok(())
}
