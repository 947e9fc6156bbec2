//! `moment eval`: the standard QVHighlights metrics of a predictions JSONL against an annotation
//! JSONL. The brief block goes to stdout as JSON; `--out` also writes the full metrics JSON
//! (same names and layout as the official evaluator's `*_metrics.json`), atomically.

use std::path::PathBuf;

use clap::Args;
use moment_gpu::eval::{evaluate, EvalOptions, GroundTruth, Submission};
use moment_gpu::Result;

use crate::write_atomically;

#[derive(Args)]
#[command(after_help = "Computes moment_detr's standalone_eval metrics: moment retrieval R1@0.5/0.7 and mAP over IoU \
    0.5:0.05:0.95 in the full/short/middle/long buckets (when the submission has `pred_relevant_windows`), and \
    highlight detection mAP and HIT@1 at the Fair, Good and Very Good saliency levels (when it has \
    `pred_saliency_scores`). Windows are scored as written: no clamping, rounding or NMS.\n\n\
    Prints the `brief` block as JSON on stdout (percentages, two decimals); papers report MR-full-R1@0.5, \
    MR-full-R1@0.7, MR-full-mAP@0.5, MR-full-mAP@0.75, MR-full-mAP, HL-min-VeryGood-mAP and HL-min-VeryGood-Hit1.\n\n\
    Example:\n  \
    moment predict --weights model.safetensors --annotations highlight_val_release.jsonl ... --out preds.jsonl\n  \
    moment eval --submission preds.jsonl --gt highlight_val_release.jsonl --out metrics.json")]
pub struct EvalArgs {
    /// Predictions JSONL: one record per query with `qid` and `pred_relevant_windows`
    /// ([[start, end, score], ...]) and/or `pred_saliency_scores` (one score per 2-s clip).
    #[arg(long, value_name = "JSONL")]
    submission: PathBuf,
    /// Annotation JSONL with labels (`relevant_windows`, `relevant_clip_ids`, `saliency_scores`,
    /// `duration`), e.g. highlight_val_release.jsonl.
    #[arg(long, value_name = "JSONL")]
    gt: PathBuf,
    /// Also write the full metrics JSON here (brief block, then per-level and per-bucket details).
    #[arg(long, value_name = "JSON")]
    out: Option<PathBuf>,
    /// Evaluate only the qids present in both files. By default the two qid sets must be equal,
    /// as in the official evaluator.
    #[arg(long)]
    intersection: bool,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let submission = Submission::read(&args.submission)?;
    let gt = GroundTruth::read(&args.gt)?;
    let metrics = evaluate(&submission, &gt, &EvalOptions { intersection: args.intersection })?;

    let mut notes = vec![format!("evaluated {} queries", metrics.n_queries)];
    if metrics.dropped_predictions + metrics.dropped_gt > 0 {
        notes.push(format!(
            "--intersection left out {} predicted and {} annotated qids",
            metrics.dropped_predictions, metrics.dropped_gt
        ));
    }
    if let Some(mr) = &metrics.mr {
        if mr.queries_without_gt > 0 {
            notes.push(format!("{} queries without a GT window are not in the MR metrics", mr.queries_without_gt));
        }
        let empty: Vec<&str> =
            moment_gpu::eval::Bucket::ALL.iter().filter(|b| mr.bucket(**b).n_queries == 0).map(|b| b.name()).collect();
        if !empty.is_empty() {
            notes.push(format!("no GT window in the {} bucket(s): their metrics are null", empty.join(", ")));
        }
    } else {
        notes.push("no `pred_relevant_windows`: moment retrieval skipped".into());
    }
    if metrics.hd.is_none() {
        notes.push("no `pred_saliency_scores`: highlight detection skipped".into());
    }
    eprintln!("moment: {}", notes.join("; "));

    if let Some(out) = &args.out {
        write_atomically(out, metrics.full_json().as_bytes())?;
        eprintln!("moment: wrote the full metrics to {}", out.display());
    }
    println!("{}", metrics.brief_json());
    Ok(())
}
