//! The standard QVHighlights evaluation (`standalone_eval` of moment_detr), written from the
//! definitions in `guides/evaluation.md`: moment retrieval R1@θ and mAP over IoU 0.5:0.05:0.95
//! in the full / short / middle / long length buckets, and highlight detection mAP and HIT@1 at
//! the Fair (≥ 2), Good (≥ 3) and Very Good (≥ 4) saliency levels.
//!
//! ```no_run
//! use moment_gpu::eval::{evaluate, EvalOptions, GroundTruth, Submission};
//! let sub = Submission::read("preds.jsonl".as_ref())?;
//! let gt = GroundTruth::read("highlight_val_release.jsonl".as_ref())?;
//! let metrics = evaluate(&sub, &gt, &EvalOptions::default())?;
//! println!("{}", metrics.brief_json());
//! # Ok::<(), moment_gpu::eval::EvalError>(())
//! ```
//!
//! Values inside [`Metrics`] are unrounded fractions in [0, 1]; [`Metrics::brief`],
//! [`Metrics::brief_json`] and [`Metrics::full_json`] report them the official way (×100, rounded
//! to two decimals by [`percent`]) under the official names.
//!
//! Where the reference evaluator crashes or is undefined, this module defines the behaviour:
//! * a qid twice in either file: [`EvalError::DuplicateQid`];
//! * qid sets that differ: [`EvalError::QidMismatch`] listing both sides, unless
//!   [`EvalOptions::intersection`] asks for the shared qids only;
//! * an empty `pred_relevant_windows` or `pred_saliency_scores`: [`EvalError::EmptyPredictions`];
//! * a GT record with `relevant_windows: []`: left out of every MR bucket (as the short / middle /
//!   long buckets drop queries left without windows) and counted in
//!   [`MrMetrics::queries_without_gt`]; HD still scores it (all labels 0: AP 0, no hit);
//! * a bucket with no query at all (e.g. no GT window longer than 30 s): its metrics are `None`,
//!   `null` in the JSON;
//! * windows are never clamped: a prediction beyond the video is scored as written; a window
//!   whose IoU denominator is 0 (both windows empty, or a reversed window) has IoU 0;
//! * a saliency prediction longer than the video: truncated for AP, and an argmax beyond the
//!   last clip is a miss for HIT@1.
//!
//! Checked against the reference: on moment_detr's published `sample_val_preds.jsonl` with the
//! val annotations, [`Metrics::full_json`] is byte-identical to its
//! `sample_val_preds_metrics_raw.json`; on random submissions with score ties, saliency ties,
//! more than ten windows, windows past the video and saliency of the wrong length, every value
//! matches the reference run with a stable GT sort. (GT windows of exactly equal IoU with one
//! prediction are visited highest index first, as guides/evaluation.md says; the reference
//! itself leaves that order to numpy's unstable `argsort`, which differs between numpy builds.)

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::models::postprocess::{py_float, py_json_string};

/// IoU thresholds of MR mAP and R1: literals, so each is the double nearest its decimal string
/// (the reference rounds its linspace to two decimals).
pub const IOU_THRESHOLDS: [f64; 10] = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95];

/// The JSON keys of [`IOU_THRESHOLDS`], formatted the Python way.
pub const IOU_KEYS: [&str; 10] = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"];

/// Predicted windows used for MR mAP: the first ten in file order.
pub const MAX_PRED_WINDOWS: usize = 10;

/// Seconds per saliency clip: a video of `duration` s has `floor(duration / 2)` clips.
pub const CLIP_LENGTH: f64 = 2.0;

/// Index of the R1@0.5 and R1@0.7 thresholds in [`IOU_THRESHOLDS`].
const T05: usize = 0;
const T07: usize = 4;
const T075: usize = 5;

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// Everything that can go wrong reading or matching the two files. Each variant names the file,
/// and the line and field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: no records (the file is empty or has only blank lines)", .path.display())]
    EmptyFile { path: PathBuf },

    #[error("{}:{line}: not a JSON object: {reason}", .path.display())]
    Json { path: PathBuf, line: usize, reason: String },

    #[error("{}:{line}: missing field `{field}`{hint}", .path.display())]
    MissingField { path: PathBuf, line: usize, field: String, hint: String },

    #[error("{}:{line}: field `{field}`: {reason}", .path.display())]
    BadField { path: PathBuf, line: usize, field: String, reason: String },

    #[error("{}:{line}: qid {qid} already appeared on line {first_line}; each query must have exactly one record", .path.display())]
    DuplicateQid { path: PathBuf, line: usize, first_line: usize, qid: Qid },

    #[error("{}:{line}: `{field}` is empty; every query needs at least one prediction (official files have 10 windows and one score per clip)", .path.display())]
    EmptyPredictions { path: PathBuf, line: usize, field: String },

    #[error("{}:{line}: {}", .path.display(), inconsistent_message(.field, .in_first))]
    InconsistentFields { path: PathBuf, line: usize, field: String, in_first: bool },

    #[error("{}: the first record has neither `pred_relevant_windows` nor `pred_saliency_scores`, so there is nothing to evaluate{hint}", .path.display())]
    NothingToEvaluate { path: PathBuf, hint: String },

    #[error("{}", mismatch_message(.submission, .gt, .missing, .extra))]
    QidMismatch { submission: PathBuf, gt: PathBuf, missing: Vec<Qid>, extra: Vec<Qid> },

    #[error("{} and {} share no qid; is this the right annotation split?", .submission.display(), .gt.display())]
    NoSharedQids { submission: PathBuf, gt: PathBuf },

    #[error("{}:{line}: `relevant_clip_ids` has clip {clip_id}, beyond the video: a duration of {duration} s has {n_clips} clips of 2 s", .path.display())]
    ClipOutsideVideo { path: PathBuf, line: usize, clip_id: usize, duration: f64, n_clips: usize },
}

fn inconsistent_message(field: &str, in_first: &bool) -> String {
    if *in_first {
        format!("missing `{field}`, which the first record has; every record must carry the same prediction fields")
    } else {
        format!(
            "has `{field}`, which the first record lacks; every record must carry the same prediction fields \
             (the evaluator decides from the first record which metrics to compute)"
        )
    }
}

fn qid_list(qids: &[Qid]) -> String {
    const SHOWN: usize = 10;
    let mut s = qids.iter().take(SHOWN).map(Qid::to_string).collect::<Vec<_>>().join(", ");
    if qids.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", qids.len() - SHOWN));
    }
    s
}

fn mismatch_message(submission: &Path, gt: &Path, missing: &[Qid], extra: &[Qid]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("{} ground-truth qid(s) have no prediction: {}", missing.len(), qid_list(missing)));
    }
    if !extra.is_empty() {
        parts.push(format!("{} predicted qid(s) are not in the ground truth: {}", extra.len(), qid_list(extra)));
    }
    format!(
        "{} does not match {}: {}. The official evaluation needs one prediction per annotated query; \
         predict every query of the annotation file, or evaluate only the shared qids (`moment eval --intersection`)",
        submission.display(),
        gt.display(),
        parts.join("; ")
    )
}

// ------------------------------------------------------------------------------------------------
// Records
// ------------------------------------------------------------------------------------------------

/// A query id: QVHighlights uses integers; strings are kept as strings (`7` and `"7"` differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qid {
    Int(i64),
    Str(String),
}

impl fmt::Display for Qid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qid::Int(i) => write!(f, "{i}"),
            Qid::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// One predicted moment `[start, end, score]`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PredWindow {
    pub start: f64,
    pub end: f64,
    pub score: f64,
}

/// One line of a submission.
#[derive(Clone, Debug, PartialEq)]
pub struct PredRecord {
    pub qid: Qid,
    /// 1-based line in the file.
    pub line: usize,
    /// `pred_relevant_windows`, in file order (never empty when present).
    pub windows: Option<Vec<PredWindow>>,
    /// `pred_saliency_scores`, one per 2-s clip (never empty when present).
    pub saliency: Option<Vec<f64>>,
}

/// One line of an annotation file. The label fields are optional so that a file without them
/// (the test-split release) reads, and fails only when a metric needs them.
#[derive(Clone, Debug, PartialEq)]
pub struct GtRecord {
    pub qid: Qid,
    /// 1-based line in the file.
    pub line: usize,
    /// Video length in seconds.
    pub duration: Option<f64>,
    /// `relevant_windows` `[start, end]` in seconds.
    pub windows: Option<Vec<[f64; 2]>>,
    /// `relevant_clip_ids`.
    pub clip_ids: Option<Vec<usize>>,
    /// `saliency_scores`: three annotators' 0..4 scores per entry of `clip_ids` (same length).
    pub saliency: Option<Vec<[f64; 3]>>,
}

/// A parsed prediction JSONL. Every record carries the same prediction fields as the first one.
#[derive(Clone, Debug)]
pub struct Submission {
    pub path: PathBuf,
    pub records: Vec<PredRecord>,
}

/// A parsed annotation JSONL.
#[derive(Clone, Debug)]
pub struct GroundTruth {
    pub path: PathBuf,
    pub records: Vec<GtRecord>,
}

/// Non-blank lines with their 1-based numbers; a byte-order mark and a missing final newline
/// are fine.
fn json_lines<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, serde_json::Map<String, Value>), EvalError>> + 'a {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(move |(i, l)| {
        let line = i + 1;
        let json_err = |reason: String| EvalError::Json { path: path.to_path_buf(), line, reason };
        match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(map)) => Ok((line, map)),
            Ok(other) => Err(json_err(format!("found {} instead of an object", kind(&other)))),
            Err(e) => {
                let hint = if l.contains("NaN") || l.contains("Infinity") {
                    " (NaN and Infinity are not JSON numbers; write finite scores)"
                } else {
                    ""
                };
                Err(json_err(format!("{e}{hint}")))
            }
        }
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|source| EvalError::Io { path: path.to_path_buf(), source })
}

/// Field readers for one line.
struct Fields<'a> {
    path: &'a Path,
    line: usize,
    map: &'a serde_json::Map<String, Value>,
}

impl Fields<'_> {
    fn bad(&self, field: &str, reason: String) -> EvalError {
        EvalError::BadField { path: self.path.to_path_buf(), line: self.line, field: field.into(), reason }
    }

    fn missing(&self, field: &str, hint: &str) -> EvalError {
        EvalError::MissingField {
            path: self.path.to_path_buf(),
            line: self.line,
            field: field.into(),
            hint: hint.into(),
        }
    }

    fn qid(&self) -> Result<Qid, EvalError> {
        match self.map.get("qid") {
            None => Err(self.missing("qid", "")),
            Some(Value::Number(n)) if n.is_i64() => Ok(Qid::Int(n.as_i64().unwrap())),
            Some(Value::String(s)) => Ok(Qid::Str(s.clone())),
            Some(other) => Err(self.bad("qid", format!("must be an integer or a string, found {other}"))),
        }
    }

    fn number(&self, field: &str, v: &Value) -> Result<f64, EvalError> {
        v.as_f64().ok_or_else(|| self.bad(field, format!("must be a number, found {}", kind(v))))
    }

    fn array<'v>(&self, field: &str, v: &'v Value) -> Result<&'v Vec<Value>, EvalError> {
        v.as_array().ok_or_else(|| self.bad(field, format!("must be an array, found {}", kind(v))))
    }

    /// An array of arrays of exactly `N` numbers.
    fn tuples<const N: usize>(&self, field: &str, shape: &str) -> Result<Option<Vec<[f64; N]>>, EvalError> {
        let Some(v) = self.map.get(field) else { return Ok(None) };
        let rows = self.array(field, v)?;
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let name = format!("{field}[{i}]");
            let items = match row.as_array() {
                Some(items) if items.len() == N => items,
                _ => return Err(self.bad(&name, format!("must be {shape}, found {row}"))),
            };
            let mut t = [0.0; N];
            for (k, item) in items.iter().enumerate() {
                t[k] = item.as_f64().ok_or_else(|| self.bad(&name, format!("must be {shape} numbers, found {row}")))?;
            }
            out.push(t);
        }
        Ok(Some(out))
    }

    fn numbers(&self, field: &str) -> Result<Option<Vec<f64>>, EvalError> {
        let Some(v) = self.map.get(field) else { return Ok(None) };
        let items = self.array(field, v)?;
        items
            .iter()
            .enumerate()
            .map(|(i, x)| self.number(&format!("{field}[{i}]"), x))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// Rejects a second record of the same qid.
fn check_unique<'a>(path: &Path, items: impl Iterator<Item = (&'a Qid, usize)>) -> Result<(), EvalError> {
    let mut seen: HashMap<&Qid, usize> = HashMap::new();
    for (qid, line) in items {
        if let Some(&first_line) = seen.get(qid) {
            return Err(EvalError::DuplicateQid { path: path.to_path_buf(), line, first_line, qid: qid.clone() });
        }
        seen.insert(qid, line);
    }
    Ok(())
}

impl Submission {
    /// Reads and checks a prediction JSONL (see [`Submission::parse`]).
    pub fn read(path: &Path) -> Result<Submission, EvalError> {
        Submission::parse(&read_text(path)?, path)
    }

    /// Parses a prediction JSONL: `qid` plus `pred_relevant_windows` (`[[st, ed, score], …]`)
    /// and/or `pred_saliency_scores` (`[float, …]`), the same fields on every line, no qid twice,
    /// no empty prediction list. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Submission, EvalError> {
        let mut records = Vec::new();
        let mut first_fields: Option<(bool, bool)> = None;
        for item in json_lines(path, text) {
            let (line, map) = item?;
            let f = Fields { path, line, map: &map };
            let qid = f.qid()?;
            let windows = f
                .tuples::<3>("pred_relevant_windows", "[start, end, score]")?
                .map(|w| w.into_iter().map(|[start, end, score]| PredWindow { start, end, score }).collect::<Vec<_>>());
            let saliency = f.numbers("pred_saliency_scores")?;
            let fields = (windows.is_some(), saliency.is_some());
            let (has_mr, has_hd) = *first_fields.get_or_insert(fields);
            if !has_mr && !has_hd {
                let hint = if map.contains_key("relevant_windows") || map.contains_key("saliency_scores") {
                    "; it looks like an annotation file: did you swap --submission and --gt?"
                } else {
                    ""
                };
                return Err(EvalError::NothingToEvaluate { path: path.to_path_buf(), hint: hint.into() });
            }
            for (field, first, here) in
                [("pred_relevant_windows", has_mr, fields.0), ("pred_saliency_scores", has_hd, fields.1)]
            {
                if first != here {
                    return Err(EvalError::InconsistentFields {
                        path: path.to_path_buf(),
                        line,
                        field: field.into(),
                        in_first: first,
                    });
                }
            }
            let empty =
                |field: &str| EvalError::EmptyPredictions { path: path.to_path_buf(), line, field: field.into() };
            if windows.as_ref().is_some_and(|w| w.is_empty()) {
                return Err(empty("pred_relevant_windows"));
            }
            if saliency.as_ref().is_some_and(|s| s.is_empty()) {
                return Err(empty("pred_saliency_scores"));
            }
            records.push(PredRecord { qid, line, windows, saliency });
        }
        if records.is_empty() {
            return Err(EvalError::EmptyFile { path: path.to_path_buf() });
        }
        check_unique(path, records.iter().map(|r| (&r.qid, r.line)))?;
        Ok(Submission { path: path.to_path_buf(), records })
    }

    /// Whether the MR block is evaluated (the records have `pred_relevant_windows`).
    pub fn has_windows(&self) -> bool {
        self.records[0].windows.is_some()
    }

    /// Whether the HD block is evaluated (the records have `pred_saliency_scores`).
    pub fn has_saliency(&self) -> bool {
        self.records[0].saliency.is_some()
    }
}

impl GroundTruth {
    /// Reads and checks an annotation JSONL (see [`GroundTruth::parse`]).
    pub fn read(path: &Path) -> Result<GroundTruth, EvalError> {
        GroundTruth::parse(&read_text(path)?, path)
    }

    /// Parses an annotation JSONL in the QVHighlights layout: `qid`, and for the metrics
    /// `duration`, `relevant_windows`, `relevant_clip_ids` and `saliency_scores` (checked when a
    /// metric needs them). No qid twice. `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<GroundTruth, EvalError> {
        let mut records = Vec::new();
        for item in json_lines(path, text) {
            let (line, map) = item?;
            let f = Fields { path, line, map: &map };
            let qid = f.qid()?;
            let duration = match map.get("duration") {
                None => None,
                Some(v) => {
                    let d = f.number("duration", v)?;
                    if !(d >= 0.0) {
                        return Err(f.bad("duration", format!("must be a length in seconds ≥ 0, found {d}")));
                    }
                    Some(d)
                }
            };
            let windows = f.tuples::<2>("relevant_windows", "[start, end]")?;
            let clip_ids = match map.get("relevant_clip_ids") {
                None => None,
                Some(v) => Some(
                    f.array("relevant_clip_ids", v)?
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            x.as_u64().map(|c| c as usize).ok_or_else(|| {
                                f.bad(
                                    &format!("relevant_clip_ids[{i}]"),
                                    format!("must be a clip index ≥ 0, found {x}"),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let saliency = f.tuples::<3>("saliency_scores", "[a1, a2, a3] (three annotators)")?;
            if let (Some(ids), Some(s)) = (&clip_ids, &saliency) {
                if ids.len() != s.len() {
                    return Err(f.bad(
                        "saliency_scores",
                        format!(
                            "has {} rows but `relevant_clip_ids` has {} entries; they must pair up",
                            s.len(),
                            ids.len()
                        ),
                    ));
                }
            }
            records.push(GtRecord { qid, line, duration, windows, clip_ids, saliency });
        }
        if records.is_empty() {
            return Err(EvalError::EmptyFile { path: path.to_path_buf() });
        }
        check_unique(path, records.iter().map(|r| (&r.qid, r.line)))?;
        Ok(GroundTruth { path: path.to_path_buf(), records })
    }
}

// ------------------------------------------------------------------------------------------------
// Metric kernels
// ------------------------------------------------------------------------------------------------

/// True IoU `I / (|a| + |b| − I)`, with the reference's operation order; 0 when the denominator
/// is not positive (two empty windows, or a reversed one).
pub fn iou(a: [f64; 2], b: [f64; 2]) -> f64 {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    let union = (a[1] - a[0]) + (b[1] - b[0]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Hull IoU `I / (max(a₁, b₁) − min(a₀, b₀))`, 0 when the denominator is 0 (the value R1
/// reports).
pub fn hull_iou(a: [f64; 2], b: [f64; 2]) -> f64 {
    let inter = (a[1].min(b[1]) - a[0].max(b[0])).max(0.0);
    let hull = a[1].max(b[1]) - a[0].min(b[0]);
    if hull != 0.0 {
        inter / hull
    } else {
        0.0
    }
}

/// numpy's pairwise summation (`np.sum` / `np.mean` over a contiguous 1-D array): sequential
/// below 8 items, eight interleaved accumulators up to 128, halving above.
pub fn numpy_sum(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 8 {
        x.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&x[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for k in 0..8 {
                r[k] += x[i + k];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &x[i..] {
            res += v;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        numpy_sum(&x[..n2]) + numpy_sum(&x[n2..])
    }
}

fn numpy_mean(x: &[f64]) -> f64 {
    numpy_sum(x) / x.len() as f64
}

/// MR average precision of one query at each of [`IOU_THRESHOLDS`]: the first
/// [`MAX_PRED_WINDOWS`] predictions in file order, stably sorted by score descending, greedily
/// matched to the GT windows (each GT at most once per threshold, visited by IoU descending,
/// equal IoUs highest index first), then VOC-2011 interpolated AP. No prediction, or no GT
/// window: all zeros.
pub fn mr_average_precision(gt: &[[f64; 2]], preds: &[PredWindow]) -> [f64; 10] {
    let mut ap = [0.0; 10];
    if gt.is_empty() || preds.is_empty() {
        return ap;
    }
    let mut ranked: Vec<PredWindow> = preds.iter().take(MAX_PRED_WINDOWS).copied().collect();
    // `sort_by` is stable: equal scores keep file order.
    ranked.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
    // tp[t][i]: the i-th ranked prediction is a true positive at threshold t.
    let mut tp = [[false; MAX_PRED_WINDOWS]; 10];
    let mut locked = vec![[false; 10]; gt.len()];
    for (i, p) in ranked.iter().enumerate() {
        let ious: Vec<f64> = gt.iter().map(|&g| iou([p.start, p.end], g)).collect();
        let mut order: Vec<usize> = (0..gt.len()).collect();
        order.sort_by(|&a, &b| ious[b].partial_cmp(&ious[a]).unwrap().then(b.cmp(&a)));
        for (t, &theta) in IOU_THRESHOLDS.iter().enumerate() {
            for &j in &order {
                if ious[j] < theta {
                    break;
                }
                if !locked[j][t] {
                    locked[j][t] = true;
                    tp[t][i] = true;
                    break;
                }
            }
        }
    }
    let g = gt.len() as f64;
    for (t, ap_t) in ap.iter_mut().enumerate() {
        // Points 0..=n+1: (0, 0), the ranked predictions, then the sentinel (1, 0).
        let mut recall = vec![0.0];
        let mut precision = vec![0.0];
        let (mut tps, mut fps) = (0.0f64, 0.0f64);
        for hit in &tp[t][..ranked.len()] {
            if *hit {
                tps += 1.0;
            } else {
                fps += 1.0;
            }
            recall.push(tps / g);
            precision.push(tps / (tps + fps));
        }
        recall.push(1.0);
        precision.push(0.0);
        for i in (0..precision.len() - 1).rev() {
            precision[i] = precision[i].max(precision[i + 1]);
        }
        let terms: Vec<f64> = (1..recall.len())
            .filter(|&i| recall[i] != recall[i - 1])
            .map(|i| (recall[i] - recall[i - 1]) * precision[i])
            .collect();
        *ap_t = numpy_sum(&terms);
    }
    ap
}

/// R1's value for one query: the hull IoU of the first predicted window (file order) with the
/// GT window of highest true IoU (first on ties). `None` without a prediction or a GT window.
pub fn top1_iou(gt: &[[f64; 2]], preds: &[PredWindow]) -> Option<f64> {
    let p = preds.first()?;
    let p = [p.start, p.end];
    let mut best: Option<(usize, f64)> = None;
    for (j, &g) in gt.iter().enumerate() {
        let v = iou(p, g);
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((j, v));
        }
    }
    best.map(|(j, _)| hull_iou(p, gt[j]))
}

/// HD average precision of one annotator's binary labels (video2gif `get_ap`): scores truncated
/// or zero-padded to the labels' length; all labels 0 (or none): 0; all 1: 1; otherwise the mean,
/// over the distinct positive recall levels, of the interpolated precision at the threshold
/// (distinct score, tied scores enter together) where that level is first reached.
pub fn hd_average_precision(labels: &[bool], scores: &[f64]) -> f64 {
    let n = labels.len();
    let positives = labels.iter().filter(|&&y| y).count();
    if positives == 0 {
        return 0.0;
    }
    if positives == n {
        return 1.0;
    }
    let s: Vec<f64> = (0..n).map(|i| scores.get(i).copied().unwrap_or(0.0)).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).unwrap_or(std::cmp::Ordering::Equal));
    // One (precision, recall) point per distinct score, thresholds descending.
    let mut points: Vec<(f64, f64)> = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < n {
        let t = s[order[i]];
        while i < n && s[order[i]] == t {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        points.push((tp as f64 / (tp + fp) as f64, tp as f64 / positives as f64));
    }
    let mut best = 0.0f64;
    let mut interpolated = vec![0.0; points.len()];
    for k in (0..points.len()).rev() {
        best = best.max(points[k].0);
        interpolated[k] = best;
    }
    let mut level_precisions = Vec::new();
    let mut last_recall = 0.0;
    for (k, &(_, r)) in points.iter().enumerate() {
        if r > last_recall {
            level_precisions.push(interpolated[k]);
            last_recall = r;
        }
    }
    numpy_mean(&level_precisions)
}

/// HIT@1 of one query: the clip of highest predicted saliency (first on ties, no truncation or
/// padding) is a hit if it lies inside the video and any annotator's label there is 1.
pub fn hit_at_1(labels: &[[bool; 3]], scores: &[f64]) -> bool {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in scores.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    match best {
        Some((k, _)) => labels.get(k).is_some_and(|row| row.iter().any(|&y| y)),
        None => false,
    }
}

// ------------------------------------------------------------------------------------------------
// Aggregation
// ------------------------------------------------------------------------------------------------

/// How to match the two files.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Evaluate only the qids present in both files. Off (the official behaviour): the qid sets
    /// must be equal, else [`EvalError::QidMismatch`].
    pub intersection: bool,
}

/// The GT-window length buckets of MR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// Every GT window, no filtering.
    Full,
    /// 0 < ℓ ≤ 10 s.
    Short,
    /// 10 < ℓ ≤ 30 s.
    Middle,
    /// 30 < ℓ ≤ 150 s.
    Long,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Full, Bucket::Short, Bucket::Middle, Bucket::Long];

    /// The key of the bucket in the output (`full`, `short`, `middle`, `long`).
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Full => "full",
            Bucket::Short => "short",
            Bucket::Middle => "middle",
            Bucket::Long => "long",
        }
    }

    /// Whether a GT window of this length (seconds) belongs to the bucket.
    pub fn contains(self, length: f64) -> bool {
        let (lo, hi) = match self {
            Bucket::Full => return true,
            Bucket::Short => (0.0, 10.0),
            Bucket::Middle => (10.0, 30.0),
            Bucket::Long => (30.0, 150.0),
        };
        lo < length && length <= hi
    }
}

/// MR metrics of one bucket, as unrounded fractions.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketMetrics {
    /// Queries with at least one GT window in the bucket.
    pub n_queries: usize,
    /// GT windows in the bucket.
    pub n_windows: usize,
    /// mAP at each of [`IOU_THRESHOLDS`]; `None` when the bucket has no query.
    pub map: Option<[f64; 10]>,
    /// R1 at each of [`IOU_THRESHOLDS`]; `None` when the bucket has no query.
    pub r1: Option<[f64; 10]>,
}

impl BucketMetrics {
    /// `MR-mAP.average`: the mean of the ten unrounded mAP@θ.
    pub fn map_average(&self) -> Option<f64> {
        self.map.map(|m| numpy_mean(&m))
    }
}

/// The moment-retrieval block.
#[derive(Clone, Debug, PartialEq)]
pub struct MrMetrics {
    pub full: BucketMetrics,
    pub short: BucketMetrics,
    pub middle: BucketMetrics,
    pub long: BucketMetrics,
    /// Queries whose GT has `relevant_windows: []`, left out of every bucket.
    pub queries_without_gt: usize,
}

impl MrMetrics {
    pub fn bucket(&self, b: Bucket) -> &BucketMetrics {
        match b {
            Bucket::Full => &self.full,
            Bucket::Short => &self.short,
            Bucket::Middle => &self.middle,
            Bucket::Long => &self.long,
        }
    }
}

/// The saliency levels of HD: a clip is positive for an annotator whose score is ≥ the level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// ≥ 2.
    Fair,
    /// ≥ 3.
    Good,
    /// ≥ 4: the level papers report.
    VeryGood,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Fair, Level::Good, Level::VeryGood];

    pub fn name(self) -> &'static str {
        match self {
            Level::Fair => "Fair",
            Level::Good => "Good",
            Level::VeryGood => "VeryGood",
        }
    }

    pub fn min_score(self) -> f64 {
        match self {
            Level::Fair => 2.0,
            Level::Good => 3.0,
            Level::VeryGood => 4.0,
        }
    }
}

/// HD metrics at one level, as unrounded fractions.
#[derive(Clone, Debug, PartialEq)]
pub struct HdLevel {
    /// `HL-mAP`: mean AP over all (query, annotator) pairs.
    pub map: f64,
    /// `HL-Hit1`.
    pub hit1: f64,
    /// Mean AP per annotator column (not part of the official output).
    pub map_per_annotator: [f64; 3],
}

/// The highlight-detection block.
#[derive(Clone, Debug, PartialEq)]
pub struct HdMetrics {
    pub fair: HdLevel,
    pub good: HdLevel,
    pub very_good: HdLevel,
}

impl HdMetrics {
    pub fn level(&self, l: Level) -> &HdLevel {
        match l {
            Level::Fair => &self.fair,
            Level::Good => &self.good,
            Level::VeryGood => &self.very_good,
        }
    }
}

/// Everything `evaluate` computes, unrounded.
#[derive(Clone, Debug, PartialEq)]
pub struct Metrics {
    /// Queries evaluated (the shared qids).
    pub n_queries: usize,
    /// Submission records left out by [`EvalOptions::intersection`].
    pub dropped_predictions: usize,
    /// GT records left out by [`EvalOptions::intersection`].
    pub dropped_gt: usize,
    /// Present when the submission has `pred_relevant_windows`.
    pub mr: Option<MrMetrics>,
    /// Present when the submission has `pred_saliency_scores`.
    pub hd: Option<HdMetrics>,
}

/// Scores a submission against the ground truth the official way (see the module docs for the
/// cases the reference leaves undefined).
pub fn evaluate(sub: &Submission, gt: &GroundTruth, options: &EvalOptions) -> Result<Metrics, EvalError> {
    let gt_by_qid: HashMap<&Qid, &GtRecord> = gt.records.iter().map(|r| (&r.qid, r)).collect();
    let sub_qids: HashSet<&Qid> = sub.records.iter().map(|r| &r.qid).collect();
    let extra: Vec<Qid> =
        sub.records.iter().filter(|r| !gt_by_qid.contains_key(&r.qid)).map(|r| r.qid.clone()).collect();
    let missing: Vec<Qid> = gt.records.iter().filter(|r| !sub_qids.contains(&r.qid)).map(|r| r.qid.clone()).collect();
    if !options.intersection && (!missing.is_empty() || !extra.is_empty()) {
        return Err(EvalError::QidMismatch { submission: sub.path.clone(), gt: gt.path.clone(), missing, extra });
    }
    // Submission order, as the reference iterates.
    let pairs: Vec<(&PredRecord, &GtRecord)> =
        sub.records.iter().filter_map(|p| gt_by_qid.get(&p.qid).map(|g| (p, *g))).collect();
    if pairs.is_empty() {
        return Err(EvalError::NoSharedQids { submission: sub.path.clone(), gt: gt.path.clone() });
    }
    let mr = if sub.has_windows() { Some(evaluate_mr(&gt.path, &pairs)?) } else { None };
    let hd = if sub.has_saliency() { Some(evaluate_hd(&gt.path, &pairs)?) } else { None };
    Ok(Metrics { n_queries: pairs.len(), dropped_predictions: extra.len(), dropped_gt: missing.len(), mr, hd })
}

fn gt_missing(path: &Path, g: &GtRecord, field: &str, metric: &str) -> EvalError {
    EvalError::MissingField {
        path: path.to_path_buf(),
        line: g.line,
        field: field.into(),
        hint: format!(
            " (needed for {metric}); the test-split release has no labels: evaluate against a labelled file such as highlight_val_release.jsonl"
        ),
    }
}

fn evaluate_mr(gt_path: &Path, pairs: &[(&PredRecord, &GtRecord)]) -> Result<MrMetrics, EvalError> {
    // Per bucket: AP sums per threshold, R1 hit counts per threshold, queries, windows.
    let mut ap_sum = [[0.0f64; 10]; 4];
    let mut r1_hits = [[0usize; 10]; 4];
    let mut queries = [0usize; 4];
    let mut windows = [0usize; 4];
    let mut without_gt = 0;
    for (p, g) in pairs {
        let preds = p.windows.as_deref().expect("checked by has_windows");
        let all = g.windows.as_deref().ok_or_else(|| gt_missing(gt_path, g, "relevant_windows", "moment retrieval"))?;
        if all.is_empty() {
            without_gt += 1;
            continue;
        }
        for (b, bucket) in Bucket::ALL.iter().enumerate() {
            let kept: Vec<[f64; 2]> = all.iter().copied().filter(|w| bucket.contains(w[1] - w[0])).collect();
            if kept.is_empty() {
                continue;
            }
            queries[b] += 1;
            windows[b] += kept.len();
            let ap = mr_average_precision(&kept, preds);
            let top1 = top1_iou(&kept, preds).expect("non-empty GT and predictions");
            for t in 0..10 {
                ap_sum[b][t] += ap[t];
                r1_hits[b][t] += usize::from(top1 >= IOU_THRESHOLDS[t]);
            }
        }
    }
    let bucket = |b: usize| {
        let n = queries[b];
        let (map, r1) = if n == 0 {
            (None, None)
        } else {
            (Some(ap_sum[b].map(|s| s / n as f64)), Some(r1_hits[b].map(|h| h as f64 / n as f64)))
        };
        BucketMetrics { n_queries: n, n_windows: windows[b], map, r1 }
    };
    Ok(MrMetrics {
        full: bucket(0),
        short: bucket(1),
        middle: bucket(2),
        long: bucket(3),
        queries_without_gt: without_gt,
    })
}

/// The N×3 clip-score matrix of one GT record: zeros, with the relevant clips' scores.
fn clip_scores(gt_path: &Path, g: &GtRecord) -> Result<Vec<[f64; 3]>, EvalError> {
    let duration = g.duration.ok_or_else(|| gt_missing(gt_path, g, "duration", "highlight detection"))?;
    let ids =
        g.clip_ids.as_deref().ok_or_else(|| gt_missing(gt_path, g, "relevant_clip_ids", "highlight detection"))?;
    let scores =
        g.saliency.as_deref().ok_or_else(|| gt_missing(gt_path, g, "saliency_scores", "highlight detection"))?;
    let n_clips = (duration / CLIP_LENGTH).floor() as usize;
    let mut matrix = vec![[0.0; 3]; n_clips];
    for (&clip_id, row) in ids.iter().zip(scores) {
        if clip_id >= n_clips {
            return Err(EvalError::ClipOutsideVideo {
                path: gt_path.to_path_buf(),
                line: g.line,
                clip_id,
                duration,
                n_clips,
            });
        }
        matrix[clip_id] = *row;
    }
    Ok(matrix)
}

fn evaluate_hd(gt_path: &Path, pairs: &[(&PredRecord, &GtRecord)]) -> Result<HdMetrics, EvalError> {
    let matrices = pairs.iter().map(|(_, g)| clip_scores(gt_path, g)).collect::<Result<Vec<_>, _>>()?;
    let level = |level: Level| {
        // Row-major (query, annotator), as the reference's (#queries, 3) array.
        let mut aps = Vec::with_capacity(3 * pairs.len());
        let mut hits = 0usize;
        for ((p, _), matrix) in pairs.iter().zip(&matrices) {
            let scores = p.saliency.as_deref().expect("checked by has_saliency");
            let labels: Vec<[bool; 3]> = matrix.iter().map(|row| row.map(|s| s >= level.min_score())).collect();
            for a in 0..3 {
                let column: Vec<bool> = labels.iter().map(|row| row[a]).collect();
                aps.push(hd_average_precision(&column, scores));
            }
            hits += usize::from(hit_at_1(&labels, scores));
        }
        let n = pairs.len() as f64;
        let per_annotator = [0, 1, 2].map(|a| numpy_mean(&aps.iter().skip(a).step_by(3).copied().collect::<Vec<_>>()));
        HdLevel { map: numpy_mean(&aps), hit1: hits as f64 / n, map_per_annotator: per_annotator }
    };
    Ok(HdMetrics { fair: level(Level::Fair), good: level(Level::Good), very_good: level(Level::VeryGood) })
}

// ------------------------------------------------------------------------------------------------
// Reporting
// ------------------------------------------------------------------------------------------------

/// The reference's reported value: `float(f"{100 * x:.2f}")`, i.e. ×100 then round half to
/// even on the exact binary value (Rust's `{:.2}` does the same).
pub fn percent(x: f64) -> f64 {
    format!("{:.2}", 100.0 * x).parse().expect("a formatted f64 parses")
}

/// A JSON tree with ordered keys.
enum Json {
    Num(Option<f64>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn obj<K: Into<String>>(items: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Obj(items.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// `json.dumps(indent=4)`: Python's float repr, `null` for a value that is not defined.
    fn write(&self, indent: usize, out: &mut String) {
        match self {
            Json::Num(Some(v)) => out.push_str(&py_float(*v)),
            Json::Num(None) => out.push_str("null"),
            Json::Obj(items) if items.is_empty() => out.push_str("{}"),
            Json::Obj(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&" ".repeat(indent + 4));
                    out.push_str(&py_json_string(k));
                    out.push_str(": ");
                    v.write(indent + 4, out);
                }
                out.push('\n');
                out.push_str(&" ".repeat(indent));
                out.push('}');
            }
        }
    }

    fn dumps(&self) -> String {
        let mut s = String::new();
        self.write(0, &mut s);
        s
    }
}

fn pct(x: Option<f64>) -> Json {
    Json::Num(x.map(percent))
}

impl Metrics {
    /// The official `brief` block: `(key, value)` in the reference's order, values ×100 and
    /// rounded ([`percent`]), `None` for an empty bucket. MR keys (sorted) come first when the
    /// submission has windows, then the HD keys when it has saliency.
    pub fn brief(&self) -> Vec<(String, Option<f64>)> {
        let mut out = Vec::new();
        if let Some(mr) = &self.mr {
            let at = |b: &BucketMetrics, t: usize| b.map.map(|m| m[t]);
            let r1 = |t: usize| mr.full.r1.map(|r| r[t]);
            // Sorted by key, as the reference sorts them.
            out.push(("MR-full-R1@0.5".into(), r1(T05)));
            out.push(("MR-full-R1@0.7".into(), r1(T07)));
            out.push(("MR-full-mAP".into(), mr.full.map_average()));
            out.push(("MR-full-mAP@0.5".into(), at(&mr.full, T05)));
            out.push(("MR-full-mAP@0.75".into(), at(&mr.full, T075)));
            out.push(("MR-long-mAP".into(), mr.long.map_average()));
            out.push(("MR-middle-mAP".into(), mr.middle.map_average()));
            out.push(("MR-short-mAP".into(), mr.short.map_average()));
        }
        if let Some(hd) = &self.hd {
            for l in Level::ALL {
                let v = hd.level(l);
                out.push((format!("HL-min-{}-mAP", l.name()), Some(v.map)));
                out.push((format!("HL-min-{}-Hit1", l.name()), Some(v.hit1)));
            }
        }
        out.into_iter().map(|(k, v)| (k, v.map(percent))).collect()
    }

    fn brief_tree(&self) -> Json {
        Json::obj(self.brief().into_iter().map(|(k, v)| (k, Json::Num(v))))
    }

    /// The `brief` block as `json.dumps(indent=4)` writes it.
    pub fn brief_json(&self) -> String {
        self.brief_tree().dumps()
    }

    /// The reference's whole metrics JSON: `brief`, then the detailed blocks sorted by key
    /// (`HL-min-Fair`, `HL-min-Good`, `HL-min-VeryGood`, `full`, `long`, `middle`, `short`).
    pub fn full_json(&self) -> String {
        let mut blocks: Vec<(String, Json)> = vec![("brief".into(), self.brief_tree())];
        if let Some(hd) = &self.hd {
            for l in Level::ALL {
                let v = hd.level(l);
                blocks.push((
                    format!("HL-min-{}", l.name()),
                    Json::obj([("HL-mAP", pct(Some(v.map))), ("HL-Hit1", pct(Some(v.hit1)))]),
                ));
            }
        }
        if let Some(mr) = &self.mr {
            for b in [Bucket::Full, Bucket::Long, Bucket::Middle, Bucket::Short] {
                let m = mr.bucket(b);
                let mut map: Vec<(String, Json)> =
                    IOU_KEYS.iter().enumerate().map(|(t, k)| (k.to_string(), pct(m.map.map(|v| v[t])))).collect();
                map.push(("average".into(), pct(m.map_average())));
                let r1 = IOU_KEYS.iter().enumerate().map(|(t, k)| (k.to_string(), pct(m.r1.map(|v| v[t]))));
                blocks.push((b.name().into(), Json::obj([("MR-mAP", Json::Obj(map)), ("MR-R1", Json::obj(r1))])));
            }
        }
        Json::Obj(blocks).dumps()
    }
}
