//! Model outputs → moments in seconds and the prediction JSONL record, exactly as the official
//! QVHighlights inference code does it (tr-detr.md §5; the other DETR models share it):
//! foreground probability, (center, width) → seconds with the annotated duration, stable sort by
//! score, 4-decimal formatting, clamp to [0, 150] s, round to multiples of the 2-s clip (half to
//! even), fp16 saliency for the valid clips, and Python's `json.dumps` formatting.

use std::fmt::Write as _;

/// One predicted moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub start: f64,
    pub end: f64,
    pub score: f64,
}

/// What the official post-processing needs to know besides the outputs.
#[derive(Clone, Copy, Debug)]
pub struct PostProcess {
    /// Seconds per clip (rounding grid).
    pub clip_length: f32,
    /// Upper clamp of window ends, in seconds (hard-coded 150 in the official inference).
    pub max_ts: f32,
    /// Sort windows by score (the official `no_sort_results = False`).
    pub sort: bool,
}

impl Default for PostProcess {
    fn default() -> Self {
        PostProcess { clip_length: 2.0, max_ts: 150.0, sort: true }
    }
}

/// Python's `float(f"{x:.4f}")`: Rust's fixed-precision formatting rounds the exact binary value
/// half-to-even like Python's.
pub fn round4(x: f64) -> f64 {
    format!("{x:.4}").parse().unwrap()
}

/// Foreground probability of each query: `softmax(logits)[:, 0]` in f64, cast to f32.
pub fn foreground_probs(logits: &[f32]) -> Vec<f32> {
    logits
        .chunks_exact(2)
        .map(|l| {
            let (a, b) = (l[0] as f64, l[1] as f64);
            let m = a.max(b);
            let (ea, eb) = ((a - m).exp(), (b - m).exp());
            (ea / (ea + eb)) as f32
        })
        .collect()
}

/// The official windows of one sample: `logits (Q, 2)`, `spans (Q, 2)` as normalised
/// (center, width), `duration` the annotated duration in seconds.
pub fn windows(logits: &[f32], spans: &[f32], duration: f32, pp: &PostProcess) -> Vec<Window> {
    let probs = foreground_probs(logits);
    let mut rows: Vec<[f64; 3]> = spans
        .chunks_exact(2)
        .zip(&probs)
        .map(|(s, &p)| {
            let (st, ed) = ((s[0] - 0.5 * s[1]) * duration, (s[0] + 0.5 * s[1]) * duration);
            [st as f64, ed as f64, p as f64]
        })
        .collect();
    if pp.sort {
        // Stable, on the raw scores, like Python's sorted(..., reverse=True).
        rows.sort_by(|a, b| b[2].total_cmp(&a[2]));
    }
    rows.iter()
        .map(|r| {
            let r = r.map(round4);
            // torch.tensor(rows) is float32: clamp, then round(x / 2) * 2 with ties to even.
            let snap = |x: f64| {
                let x = (x as f32).clamp(0.0, pp.max_ts);
                (x / pp.clip_length).round_ties_even() * pp.clip_length
            };
            Window { start: snap(r[0]) as f64, end: snap(r[1]) as f64, score: round4(r[2] as f32 as f64) }
        })
        .collect()
}

/// Saliency of the valid clips as the official file stores it: cast to float16.
pub fn saliency_f16(saliency: &[f32]) -> Vec<f32> {
    saliency.iter().map(|&s| half::f16::from_f32(s).to_f32()).collect()
}

/// Python `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16 with a
/// signed two-digit exponent, and a trailing `.0` on integral values.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let s = format!("{x:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Python `json.dumps` of a string (ensure_ascii: non-ASCII as \u escapes).
pub fn py_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{:04x}", u);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `qid` as the annotation gives it: QVHighlights uses integers; keep strings as strings.
#[derive(Clone, Debug, PartialEq)]
pub enum Qid {
    Int(i64),
    Str(String),
}

impl Qid {
    pub fn parse(s: &str) -> Qid {
        s.parse().map(Qid::Int).unwrap_or_else(|_| Qid::Str(s.to_string()))
    }
    fn json(&self) -> String {
        match self {
            Qid::Int(i) => i.to_string(),
            Qid::Str(s) => py_json_string(s),
        }
    }
}

/// One line of the official prediction JSONL, key order and formatting as `json.dumps` writes
/// the official records.
pub fn prediction_json(qid: &Qid, query: &str, vid: &str, windows: &[Window], saliency_f16: &[f32]) -> String {
    let mut s = format!(
        "{{\"qid\": {}, \"query\": {}, \"vid\": {}, \"pred_relevant_windows\": [",
        qid.json(),
        py_json_string(query),
        py_json_string(vid)
    );
    for (i, w) in windows.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "[{}, {}, {}]", py_float(w.start), py_float(w.end), py_float(w.score));
    }
    s.push_str("], \"pred_saliency_scores\": [");
    for (i, v) in saliency_f16.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&py_float(*v as f64));
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_repr() {
        // Values checked against CPython's repr().
        assert_eq!(py_float(98.0), "98.0");
        assert_eq!(py_float(0.9102), "0.9102");
        assert_eq!(py_float(-0.198486328125), "-0.198486328125");
        assert_eq!(py_float(5.960464477539063e-08), "5.960464477539063e-08");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1e-05), "1e-05");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(0.0), "0.0");
    }

    #[test]
    fn python_json_strings() {
        assert_eq!(py_json_string("a \"b\"\\"), r#""a \"b\"\\""#);
        assert_eq!(py_json_string("café 😀"), r#""caf\u00e9 \ud83d\ude00""#);
    }

    #[test]
    fn rounding_matches_python_format() {
        // f"{x:.4f}" rounds exact ties to even.
        assert_eq!(round4(0.03125), 0.0312);
        assert_eq!(round4(0.96875), 0.9688);
        assert_eq!(round4(0.00015), 0.0001);
    }

    #[test]
    fn windows_clamp_and_snap_like_the_official_code() {
        // Two queries: the second scores higher; its span runs past 150 s and before 0.
        let logits = [0.0, 1.0, 2.0, 0.0];
        let spans = [0.5, 0.2, 0.5, 1.2];
        let w = windows(&logits, &spans, 150.0, &PostProcess::default());
        assert_eq!(w[0].start, 0.0);
        assert_eq!(w[0].end, 150.0);
        // 1/(1+e^-2) = 0.88079… → 0.8808
        assert_eq!(w[0].score, 0.8808);
        // (0.5 − 0.1)·150 = 60, (0.5 + 0.1)·150 = 90; 1/(1+e) = 0.26894… → 0.2689
        assert_eq!((w[1].start, w[1].end, w[1].score), (60.0, 90.0, 0.2689));
        // 61 s → round(30.5) = 30 (half to even) → 60 s; 63 s → round(31.5) = 32 → 64 s.
        let w = windows(&[1.0, 0.0], &[62.0 / 150.0, 2.0 / 150.0], 150.0, &PostProcess::default());
        assert_eq!((w[0].start, w[0].end), (60.0, 64.0));
    }
}
