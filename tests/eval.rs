//! `moment_gpu::eval` and `moment eval`: the standard QVHighlights metrics.
//!
//! Every expected number below is computed by hand in the comment beside it (or taken from the
//! worked examples of guides/evaluation.md §6), never from running the code under test. The
//! real-data tests read the val annotations from the shared folder and use a submission derived
//! from the GT itself, whose metrics follow from the definitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use moment_gpu::eval::{
    evaluate, hd_average_precision, hit_at_1, hull_iou, iou, mr_average_precision, numpy_sum, percent, top1_iou,
    Bucket, EvalError, EvalOptions, GroundTruth, Level, Metrics, PredWindow, Qid, Submission, IOU_KEYS, IOU_THRESHOLDS,
};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

fn p(start: f64, end: f64, score: f64) -> PredWindow {
    PredWindow { start, end, score }
}

/// AP per threshold: `high` for θ ≤ 0.8 (the first seven), `low` for 0.85, 0.9, 0.95.
fn split(high: f64, low: f64) -> [f64; 10] {
    [high, high, high, high, high, high, high, low, low, low]
}

fn assert_close10(got: [f64; 10], want: [f64; 10]) {
    for t in 0..10 {
        assert!((got[t] - want[t]).abs() < 1e-12, "θ = {}: got {:?}, want {:?}", IOU_KEYS[t], got, want);
    }
}

fn assert_close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

fn jsonl(records: &[Value]) -> String {
    records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n")
}

fn sub(records: &[Value]) -> Submission {
    Submission::parse(&jsonl(records), Path::new("preds.jsonl")).unwrap()
}

fn gt(records: &[Value]) -> GroundTruth {
    GroundTruth::parse(&jsonl(records), Path::new("gt.jsonl")).unwrap()
}

fn eval(s: &[Value], g: &[Value]) -> Metrics {
    evaluate(&sub(s), &gt(g), &EvalOptions::default()).unwrap()
}

fn brief_value(m: &Metrics, key: &str) -> Option<f64> {
    m.brief().into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no brief key {key}")).1
}

fn mr_gt(qid: i64, windows: Value) -> Value {
    json!({"qid": qid, "query": "q", "duration": 150, "vid": "v_0.0_150.0", "relevant_windows": windows,
           "relevant_clip_ids": [], "saliency_scores": []})
}

fn mr_pred(qid: i64, windows: Value) -> Value {
    json!({"qid": qid, "query": "q", "vid": "v_0.0_150.0", "pred_relevant_windows": windows})
}

// ------------------------------------------------------------------------------------------------
// IoU, thresholds, rounding
// ------------------------------------------------------------------------------------------------

#[test]
fn iou_true_and_hull() {
    // [10,18] vs [10,20]: I = 8, union = 8 + 10 − 8 = 10 → exactly 0.8, which must pass θ = 0.8.
    assert_eq!(iou([10.0, 18.0], [10.0, 20.0]), 0.8);
    assert!(iou([10.0, 18.0], [10.0, 20.0]) >= IOU_THRESHOLDS[6]);
    assert_eq!(IOU_THRESHOLDS[6], 0.8);
    // Overlapping: true IoU = hull IoU. [38,62] vs [40,60]: 20 / 24.
    assert_eq!(iou([38.0, 62.0], [40.0, 60.0]), 20.0 / 24.0);
    assert_eq!(hull_iou([38.0, 62.0], [40.0, 60.0]), 20.0 / 24.0);
    // Disjoint or touching: both 0.
    assert_eq!(iou([0.0, 10.0], [10.0, 20.0]), 0.0);
    assert_eq!(hull_iou([0.0, 10.0], [20.0, 30.0]), 0.0);
    // Degenerate: two empty windows (0/0) and a reversed window give 0, never NaN.
    assert_eq!(iou([5.0, 5.0], [5.0, 5.0]), 0.0);
    assert_eq!(hull_iou([5.0, 5.0], [5.0, 5.0]), 0.0);
    assert_eq!(iou([20.0, 10.0], [0.0, 10.0]), 0.0);
    assert_eq!(iou([20.0, 10.0], [0.0, 30.0]), 0.0);
}

#[test]
fn thresholds_are_the_decimal_literals() {
    let keys = ["0.5", "0.55", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9", "0.95"];
    assert_eq!(IOU_KEYS, keys);
    for (t, k) in keys.iter().enumerate() {
        assert_eq!(IOU_THRESHOLDS[t], k.parse::<f64>().unwrap());
    }
}

#[test]
fn percent_rounds_like_python_format() {
    // float(f"{x:.2f}") on the exact binary value of 100·x: half to even on exact ties.
    // 0.33125 is off by < 3e-17, so 100·x lands on 33.125 (spacing 7e-15 there), an exact
    // binary tie → the even digit 2.
    assert_eq!(percent(0.33125), 33.12);
    assert_eq!(percent(0.7), 70.0);
    assert_eq!(percent(2.0 / 3.0), 66.67);
    assert_eq!(percent(1.0), 100.0);
    assert_eq!(percent(0.0), 0.0);
    // 2.675 is stored as 2.67499999… and 12.345 as 12.3450000000000006…
    assert_eq!(format!("{:.2}", 2.675f64), "2.67");
    assert_eq!(format!("{:.2}", 12.345f64), "12.35");
}

#[test]
fn numpy_pairwise_sum() {
    // Below 8 items: left to right. 1e16 + 1 + 1 − 1e16 sequentially = 0 (each +1 is lost at 1e16;
    // the spacing there is 2), i.e. ((1e16 + 1) + 1) − 1e16 = 0.
    assert_eq!(numpy_sum(&[1e16, 1.0, 1.0, -1e16]), 0.0);
    // 10 items: eight accumulators summed as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then x8, x9.
    // With x = [1e16, 1, 1, 1, -1e16, 0, 0, 0, 1, 1]: r0+r1 = 1e16 (1 lost), r2+r3 = 2,
    // 1e16 + 2 = 1e16 + 2 (exact), (r4+r5)+(r6+r7) = −1e16 → 2; + 1 + 1 = 4.
    assert_eq!(numpy_sum(&[1e16, 1.0, 1.0, 1.0, -1e16, 0.0, 0.0, 0.0, 1.0, 1.0]), 4.0);
    assert_eq!(numpy_sum(&[]), 0.0);
    let many: Vec<f64> = (0..1000).map(|i| i as f64).collect();
    assert_eq!(numpy_sum(&many), 499500.0);
}

// ------------------------------------------------------------------------------------------------
// MR: the worked examples of evaluation.md §6
// ------------------------------------------------------------------------------------------------

#[test]
fn mr_case_a_exact_threshold() {
    // GT [10,20], [40,60]. Sorted: [38,62] IoU 20/24 = .833 with [40,60] → TP for θ ≤ .8;
    // [10,18] IoU 8/10 = .8 with [10,20] → TP for θ ≤ .8; [0,5] FP; [12,22] IoU 8/12 with the
    // locked [10,20], then 0 → FP. θ ≤ .8: TP TP FP FP → AP = ½·1 + ½·1 = 1. θ > .8: all FP → 0.
    let gt = [[10.0, 20.0], [40.0, 60.0]];
    let preds = [p(38.0, 62.0, 0.9), p(10.0, 18.0, 0.8), p(0.0, 5.0, 0.7), p(12.0, 22.0, 0.6)];
    assert_close10(mr_average_precision(&gt, &preds), split(1.0, 0.0));
    // R1: [38,62] picks [40,60], hull IoU 20/24 = 0.8333: passes 0.5 and 0.7.
    assert_close(top1_iou(&gt, &preds).unwrap(), 20.0 / 24.0);
    let m = eval(
        &[mr_pred(1, json!([[38, 62, 0.9], [10, 18, 0.8], [0, 5, 0.7], [12, 22, 0.6]]))],
        &[mr_gt(1, json!([[10, 20], [40, 60]]))],
    );
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(70.0)); // mean(1×7, 0×3) = 0.7
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(100.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.7"), Some(100.0));
    assert_eq!(m.mr.as_ref().unwrap().full.r1.unwrap(), split(1.0, 0.0)); // 0.833 < 0.85
}

#[test]
fn mr_case_b_locked_gt() {
    // GT [0,10]: FP ([20,30]), TP ([0,10]), FP ([0,12] finds the GT locked) → P = 0, ½, ⅓ at
    // R = 0, 1, 1; envelope at R = 1 is ½ → AP = 0.5 at every θ. R1: [20,30] → 0.
    let gt = [[0.0, 10.0]];
    let preds = [p(20.0, 30.0, 0.9), p(0.0, 10.0, 0.8), p(0.0, 12.0, 0.7)];
    assert_close10(mr_average_precision(&gt, &preds), [0.5; 10]);
    assert_eq!(top1_iou(&gt, &preds), Some(0.0));
    let m = eval(&[mr_pred(1, json!([[20, 30, 0.9], [0, 10, 0.8], [0, 12, 0.7]]))], &[mr_gt(1, json!([[0, 10]]))]);
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(50.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(0.0));
}

#[test]
fn mr_case_c_score_tie_keeps_file_order() {
    // Equal scores: the stable sort keeps [0,10] (FP) before [20,30] (TP) → AP = ½.
    let gt = [[20.0, 30.0]];
    assert_close10(mr_average_precision(&gt, &[p(0.0, 10.0, 0.5), p(20.0, 30.0, 0.5)]), [0.5; 10]);
    // The other file order puts the TP first → AP = 1.
    assert_close10(mr_average_precision(&gt, &[p(20.0, 30.0, 0.5), p(0.0, 10.0, 0.5)]), [1.0; 10]);
}

#[test]
fn mr_case_d_ap_sorts_r1_does_not() {
    // AP ranks [20,30] (.9) first → 1. R1 takes [0,10], first in the file → 0.
    let gt = [[20.0, 30.0]];
    let preds = [p(0.0, 10.0, 0.1), p(20.0, 30.0, 0.9)];
    assert_close10(mr_average_precision(&gt, &preds), [1.0; 10]);
    assert_eq!(top1_iou(&gt, &preds), Some(0.0));
    let m = eval(&[mr_pred(1, json!([[0, 10, 0.1], [20, 30, 0.9]]))], &[mr_gt(1, json!([[20, 30]]))]);
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(100.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(0.0));
}

#[test]
fn mr_case_e_interpolation() {
    // θ ≤ .8: TP FP TP TP ([20,28] has IoU 8/10 = .8): P = 1, ½, ⅔, ¾ at R = ⅓, ⅓, ⅔, 1;
    // envelope 1, ¾, ¾, ¾ → ⅓·1 + ⅓·¾ + ⅓·¾ = 5/6. θ > .8: TP FP FP TP: P = 1, ½, ⅓, ½ at
    // R = ⅓, ⅓, ⅓, ⅔ → ⅓·1 + ⅓·½ = ½. Average (7·5/6 + 3·½)/10 = 0.7333 → 73.33.
    let gt = [[0.0, 10.0], [20.0, 30.0], [40.0, 50.0]];
    let preds = [p(0.0, 10.0, 0.9), p(100.0, 110.0, 0.8), p(20.0, 28.0, 0.7), p(40.0, 50.0, 0.6)];
    assert_close10(mr_average_precision(&gt, &preds), split(5.0 / 6.0, 0.5));
    assert_eq!(top1_iou(&gt, &preds), Some(1.0));
    let m = eval(
        &[mr_pred(1, json!([[0, 10, 0.9], [100, 110, 0.8], [20, 28, 0.7], [40, 50, 0.6]]))],
        &[mr_gt(1, json!([[0, 10], [20, 30], [40, 50]]))],
    );
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(73.33));
    assert_eq!(brief_value(&m, "MR-full-mAP@0.5"), Some(83.33));
    assert_eq!(brief_value(&m, "MR-full-mAP@0.75"), Some(83.33));
    assert_eq!(brief_value(&m, "MR-full-R1@0.7"), Some(100.0));
}

// ------------------------------------------------------------------------------------------------
// MR: edge cases
// ------------------------------------------------------------------------------------------------

#[test]
fn mr_only_the_first_ten_predictions_count() {
    // Ten misses, then an exact hit with the best score in 11th place: the top 10 are taken in
    // file order before sorting, so the hit is ignored → AP 0. Moved to 10th place it counts:
    // ranked first (score 1.0) → AP 1.
    let gt = [[0.0, 10.0]];
    let mut preds: Vec<PredWindow> = (0..10).map(|i| p(50.0 + i as f64, 60.0 + i as f64, 0.5)).collect();
    preds.push(p(0.0, 10.0, 1.0));
    assert_close10(mr_average_precision(&gt, &preds), [0.0; 10]);
    preds.swap(9, 10);
    assert_close10(mr_average_precision(&gt, &preds), [1.0; 10]);
}

#[test]
fn mr_equal_iou_gt_visited_highest_index_first() {
    // GT a = [0,10] (index 0), b = [2,12] (index 1). Prediction 1 = [1,11]: IoU 9/11 with both
    // (a tie). Prediction 2 = [3,13]: IoU 9/11 = .818 with b, 7/13 = .538 with a.
    // Highest index first: prediction 1 locks b. Prediction 2 then finds b locked and a at .538:
    // θ = .5 → TP (AP 1); θ = .55 … .8 → FP: TP FP → AP ½; θ ≥ .85: both below → AP 0.
    // (Lowest index first would give 1 at every θ ≤ .8.)
    let gt = [[0.0, 10.0], [2.0, 12.0]];
    let preds = [p(1.0, 11.0, 0.9), p(3.0, 13.0, 0.8)];
    assert_close10(mr_average_precision(&gt, &preds), [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0]);
}

#[test]
fn mr_windows_outside_the_video_are_not_clamped() {
    // Duration 150, GT [140,150]. [140,170] has IoU 10/30 = ⅓ as written (clamped to [140,150]
    // it would be 1): FP. [160,170] lies wholly beyond the video: IoU 0, FP. Then the exact
    // window with the lowest score: FP FP TP → P = ⅓ at R = 1 → AP ⅓.
    let gt = [[140.0, 150.0]];
    let preds = [p(140.0, 170.0, 0.9), p(160.0, 170.0, 0.8), p(140.0, 150.0, 0.1)];
    assert_close10(mr_average_precision(&gt, &preds), [1.0 / 3.0; 10]);
    // R1 takes [140,170]: hull IoU ⅓ → misses 0.5.
    assert_close(top1_iou(&gt, &preds).unwrap(), 1.0 / 3.0);
    // Negative times too: [-10, 10] vs [0,10]: 10/20 = ½, passes θ = 0.5 only.
    assert_close10(
        mr_average_precision(&[[0.0, 10.0]], &[p(-10.0, 10.0, 1.0)]),
        [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    );
}

#[test]
fn mr_degenerate_inputs() {
    // No prediction or no GT window: AP 0 and no R1 value.
    assert_eq!(mr_average_precision(&[[0.0, 10.0]], &[]), [0.0; 10]);
    assert_eq!(mr_average_precision(&[], &[p(0.0, 10.0, 1.0)]), [0.0; 10]);
    assert_eq!(top1_iou(&[], &[p(0.0, 10.0, 1.0)]), None);
    assert_eq!(top1_iou(&[[0.0, 10.0]], &[]), None);
    // R1 picks the GT of highest true IoU, the first on ties: [0,10] vs GT [10,20] (0) and
    // [5,15] (5/15) → [5,15], hull IoU 5/15.
    assert_close(top1_iou(&[[10.0, 20.0], [5.0, 15.0]], &[p(0.0, 10.0, 1.0)]).unwrap(), 1.0 / 3.0);
}

#[test]
fn mr_invariants() {
    // Predictions equal to the GT windows, ranked first → AP 1.
    let gt = [[0.0, 10.0], [20.0, 40.0], [60.0, 120.0]];
    let exact = [p(20.0, 40.0, 0.9), p(0.0, 10.0, 0.8), p(60.0, 120.0, 0.7)];
    assert_close10(mr_average_precision(&gt, &exact), [1.0; 10]);
    // Appending a window that overlaps no GT, with a lower score, leaves AP unchanged.
    let base = [p(0.0, 8.0, 0.9), p(100.0, 110.0, 0.8), p(20.0, 40.0, 0.7)];
    let mut more = base.to_vec();
    more.push(p(130.0, 140.0, 0.1));
    assert_eq!(mr_average_precision(&gt, &base), mr_average_precision(&gt, &more));
    // Reordering GT windows without IoU ties changes nothing.
    let reordered = [[60.0, 120.0], [0.0, 10.0], [20.0, 40.0]];
    assert_eq!(mr_average_precision(&gt, &base), mr_average_precision(&reordered, &base));
    assert_eq!(top1_iou(&gt, &base), top1_iou(&reordered, &base));
}

/// Three queries over every bucket, worked by hand.
///
/// q1: GT [0,10] (short), [20,60] (long); preds [0,10,.9], [20,60,.8].
///   full: TP TP → AP 1; R1 1.  short: TP FP → 1; R1 1.  long: FP TP → ½; R1 0.
/// q2: GT [10,30] (middle); preds [10,26,.9] (IoU 16/20 = .8), [0,5,.3].
///   full = middle: θ ≤ .8 TP FP → 1, θ > .8 → 0; R1 hull .8 → hits θ ≤ .8.
/// q3: GT [100,150] (long), [0,4] (short); preds in file order [0,4,.2], [100,140,.7], [90,150,.6],
///   ranked [100,140] (IoU 40/50 = .8), [90,150] (IoU 50/60 = .833), [0,4] (IoU 1).
///   full θ ≤ .8: TP, FP (its GT is locked, [0,4] gives 0), TP → R ½ ½ 1, P 1 ½ ⅔ → ½ + ½·⅔ = 5/6;
///   θ > .8: FP FP TP → ½·⅓ = 1/6. R1: [0,4] first in the file → exact GT [0,4] → 1.
///   long: θ ≤ .8 TP FP FP → 1, θ > .8 → 0; R1 [0,4] vs [100,150] → 0.
///   short: FP FP TP → ⅓ at every θ; R1 1.
const BUCKET_GT: &str = r#"{"qid": 1, "duration": 150, "relevant_windows": [[0, 10], [20, 60]], "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}
{"qid": 2, "duration": 150, "relevant_windows": [[10, 30]], "relevant_clip_ids": [0], "saliency_scores": [[2, 3, 4]]}
{"qid": 3, "duration": 150, "relevant_windows": [[100, 150], [0, 4]], "relevant_clip_ids": [0], "saliency_scores": [[4, 4, 4]]}"#;

const BUCKET_PREDS: &str = r#"{"qid": 1, "pred_relevant_windows": [[0, 10, 0.9], [20, 60, 0.8]], "pred_saliency_scores": [1.0, 0.5]}
{"qid": 2, "pred_relevant_windows": [[10, 26, 0.9], [0, 5, 0.3]], "pred_saliency_scores": [1.0, 0.5]}
{"qid": 3, "pred_relevant_windows": [[0, 4, 0.2], [100, 140, 0.7], [90, 150, 0.6]], "pred_saliency_scores": [1.0, 0.5]}
"#;

#[test]
fn mr_buckets_by_hand() {
    let s = Submission::parse(BUCKET_PREDS, Path::new("preds.jsonl")).unwrap();
    let g = GroundTruth::parse(BUCKET_GT, Path::new("gt.jsonl")).unwrap();
    let m = evaluate(&s, &g, &EvalOptions::default()).unwrap();
    let mr = m.mr.as_ref().unwrap();
    // full: θ ≤ .8 (1 + 1 + 5/6)/3 = 17/18; θ > .8 (1 + 0 + 1/6)/3 = 7/18.
    assert_close10(mr.full.map.unwrap(), split(17.0 / 18.0, 7.0 / 18.0));
    assert_close10(mr.full.r1.unwrap(), split(1.0, 2.0 / 3.0));
    assert_eq!((mr.full.n_queries, mr.full.n_windows), (3, 5));
    // short (q1, q3): (1 + ⅓)/2 = ⅔ everywhere; R1 1 and 1.
    assert_close10(mr.short.map.unwrap(), [2.0 / 3.0; 10]);
    assert_close10(mr.short.r1.unwrap(), [1.0; 10]);
    assert_eq!((mr.short.n_queries, mr.short.n_windows), (2, 2));
    // middle (q2).
    assert_close10(mr.middle.map.unwrap(), split(1.0, 0.0));
    assert_close10(mr.middle.r1.unwrap(), split(1.0, 0.0));
    assert_eq!((mr.middle.n_queries, mr.middle.n_windows), (1, 1));
    // long (q1, q3): θ ≤ .8 (½ + 1)/2 = ¾; θ > .8 (½ + 0)/2 = ¼; R1 0 and 0.
    assert_close10(mr.long.map.unwrap(), split(0.75, 0.25));
    assert_close10(mr.long.r1.unwrap(), [0.0; 10]);
    assert_eq!((mr.long.n_queries, mr.long.n_windows), (2, 2));
    assert_eq!(mr.queries_without_gt, 0);
    // Averages: full (7·17/18 + 3·7/18)/10 = 7/9 → 77.78; long (7·¾ + 3·¼)/10 = 0.6;
    // middle 0.7; short ⅔.
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(77.78));
    assert_eq!(brief_value(&m, "MR-full-mAP@0.5"), Some(94.44));
    assert_eq!(brief_value(&m, "MR-full-mAP@0.75"), Some(94.44));
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(100.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.7"), Some(100.0));
    assert_eq!(brief_value(&m, "MR-long-mAP"), Some(60.0));
    assert_eq!(brief_value(&m, "MR-middle-mAP"), Some(70.0));
    assert_eq!(brief_value(&m, "MR-short-mAP"), Some(66.67));
}

#[test]
fn mr_query_without_gt_window_is_left_out() {
    // Adding q4 with `relevant_windows: []` (and a prediction) leaves every MR number of
    // mr_buckets_by_hand unchanged and is counted. HD still scores it: N = 75 clips, no relevant
    // clip → all labels 0 → AP 0 and no hit for each level.
    let preds = format!(
        "{BUCKET_PREDS}{}",
        r#"{"qid": 4, "pred_relevant_windows": [[0, 10, 0.9]], "pred_saliency_scores": [1.0]}"#
    );
    let gt = format!(
        "{BUCKET_GT}\n{}",
        r#"{"qid": 4, "duration": 150, "relevant_windows": [], "relevant_clip_ids": [], "saliency_scores": []}"#
    );
    let s = Submission::parse(&preds, Path::new("preds.jsonl")).unwrap();
    let g = GroundTruth::parse(&gt, Path::new("gt.jsonl")).unwrap();
    let m = evaluate(&s, &g, &EvalOptions::default()).unwrap();
    let mr = m.mr.as_ref().unwrap();
    assert_eq!(mr.queries_without_gt, 1);
    assert_eq!(mr.full.n_queries, 3);
    assert_close10(mr.full.map.unwrap(), split(17.0 / 18.0, 7.0 / 18.0));
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(77.78));
    // HD over 4 queries: VeryGood APs per annotator: q1 (1,1,1), q2 (0,0,1), q3 (1,1,1), q4 (0,0,0)
    // → 7/12; hits q1, q2, q3 (clip 0 has a 4) → ¾.
    let hd = m.hd.as_ref().unwrap();
    assert_close(hd.very_good.map, 7.0 / 12.0);
    assert_close(hd.very_good.hit1, 0.75);
}

#[test]
fn mr_empty_bucket_is_null() {
    // Only a middle window: short and long have no query → None, null in the JSON.
    let m = eval(&[mr_pred(1, json!([[10, 30, 1.0]]))], &[mr_gt(1, json!([[10, 30]]))]);
    let mr = m.mr.as_ref().unwrap();
    assert_eq!(mr.short.n_queries, 0);
    assert_eq!((mr.short.map, mr.short.r1, mr.short.map_average()), (None, None, None));
    assert_eq!(brief_value(&m, "MR-short-mAP"), None);
    assert_eq!(brief_value(&m, "MR-middle-mAP"), Some(100.0));
    let full: Value = serde_json::from_str(&m.full_json()).unwrap();
    assert_eq!(full["brief"]["MR-long-mAP"], Value::Null);
    assert_eq!(full["short"]["MR-mAP"]["average"], Value::Null);
    assert_eq!(full["short"]["MR-R1"]["0.5"], Value::Null);
    // A window of length 0 or over 150 s is in no length bucket, only in full.
    assert!(!Bucket::Short.contains(0.0) && Bucket::Short.contains(10.0) && !Bucket::Short.contains(10.5));
    assert!(Bucket::Middle.contains(30.0) && Bucket::Long.contains(150.0) && !Bucket::Long.contains(152.0));
    assert!(Bucket::Full.contains(0.0));
}

// ------------------------------------------------------------------------------------------------
// HD: worked examples and edge cases
// ------------------------------------------------------------------------------------------------

#[test]
fn hd_ap_worked_examples() {
    let b = |v: &[u8]| v.iter().map(|&x| x == 1).collect::<Vec<bool>>();
    // H1: levels R ½ (P̂ 1) and R 1 (P 2/3) → (1 + ⅔)/2.
    assert_close(hd_average_precision(&b(&[1, 0, 1, 0]), &[0.9, 0.8, 0.7, 0.1]), (1.0 + 2.0 / 3.0) / 2.0);
    // H2: the tie .5 brings two positives and a negative at once: one level → (1 + ¾)/2 = 0.875.
    assert_close(hd_average_precision(&b(&[1, 1, 1, 0]), &[0.9, 0.5, 0.5, 0.5]), 0.875);
    // H3: R ⅓ (1), ⅔ (P ⅔, P̂ ¾), 1 (¾) → (1 + ¾ + ¾)/3.
    assert_close(hd_average_precision(&b(&[1, 1, 0, 1]), &[0.9, 0.5, 0.5, 0.1]), 2.5 / 3.0);
    // H4, H5.
    assert_eq!(hd_average_precision(&b(&[0, 0, 0]), &[0.3, 0.2, 0.1]), 0.0);
    assert_eq!(hd_average_precision(&b(&[1, 1]), &[0.1, 0.9]), 1.0);
    // A video with no clip at all: 0.
    assert_eq!(hd_average_precision(&[], &[0.5]), 0.0);
}

#[test]
fn hd_scores_are_truncated_or_zero_padded() {
    let b = |v: &[u8]| v.iter().map(|&x| x == 1).collect::<Vec<bool>>();
    // Padded: labels [0,0,1,1], scores [.5, −1] → [.5, −1, 0, 0]. t = .5: clip 0 (neg), P 0, R 0;
    // t = 0: clips 2, 3 (pos) → TP 2 FP 1, P ⅔, R 1; t = −1: P ½. AP = P̂ at R 1 = ⅔.
    // (Padding with a value below −1 would rank both positives last: ½.)
    assert_close(hd_average_precision(&b(&[0, 0, 1, 1]), &[0.5, -1.0]), 2.0 / 3.0);
    // Truncated: labels [1,0], scores [.1, .2, .9]: the .9 beyond the video is dropped; clip 1
    // (.2, neg) then clip 0 (.1, pos): P ½ at R 1 → ½.
    assert_close(hd_average_precision(&b(&[1, 0]), &[0.1, 0.2, 0.9]), 0.5);
}

#[test]
fn hit_at_1_rules() {
    let row = |a: [u8; 3]| a.map(|x| x >= 4);
    let labels = [row([0, 0, 0]), row([4, 1, 1]), row([0, 0, 0]), row([1, 1, 1])];
    // Argmax of [.1, .7, .7, .2] is 1 (first of the tie); one annotator gave 4 → hit.
    assert!(hit_at_1(&labels, &[0.1, 0.7, 0.7, 0.2]));
    // Argmax 2 → no annotator → miss.
    assert!(!hit_at_1(&labels, &[0.1, 0.7, 0.8, 0.2]));
    // Argmax beyond the video (index 5 of 4 clips) → miss; no truncation for HIT@1.
    assert!(!hit_at_1(&labels, &[0.1, 0.7, 0.7, 0.2, 0.0, 9.0]));
    // Shorter than the video: argmax over what is there.
    assert!(hit_at_1(&labels, &[0.0, 1.0]));
}

/// Two queries of 8 s (N = 4 clips), worked by hand at each level.
///
/// q1: clip 1 = [4,1,2], clip 2 = [3,4,4], clips 0 and 3 zero; scores [.1,.9,.5,.2], ranked
///   clip 1, 2, 3, 0.
///   Fair (≥2): a1 [0,1,1,0] → 1; a2 [0,0,1,0] → clip 1 neg then clip 2 pos: P ½ → ½;
///   a3 [0,1,1,0] → 1. Good (≥3): a1 [0,1,1,0] → 1; a2 ½; a3 [0,0,1,0] → ½.
///   VeryGood (≥4): a1 [0,1,0,0] → 1; a2 ½; a3 ½. HIT: clip 1 has a 4 → hit at every level.
/// q2: clip 0 = [2,2,2]; scores [.3,.3,.1,0].
///   Fair: each annotator [1,0,0,0]; t = .3 brings clips 0 and 1 → P ½ → ½. HIT: argmax clip 0
///   (first of the tie) → hit. Good, VeryGood: no positive → 0, miss.
#[test]
fn hd_levels_by_hand() {
    let g = [
        json!({"qid": 1, "duration": 8, "relevant_windows": [[2, 6]], "relevant_clip_ids": [1, 2], "saliency_scores": [[4, 1, 2], [3, 4, 4]]}),
        json!({"qid": 2, "duration": 8, "relevant_windows": [[0, 2]], "relevant_clip_ids": [0], "saliency_scores": [[2, 2, 2]]}),
    ];
    let s = [
        json!({"qid": 1, "pred_saliency_scores": [0.1, 0.9, 0.5, 0.2]}),
        json!({"qid": 2, "pred_saliency_scores": [0.3, 0.3, 0.1, 0.0]}),
    ];
    let m = eval(&s, &g);
    assert!(m.mr.is_none());
    let hd = m.hd.as_ref().unwrap();
    // Fair: (1 + ½ + 1 + ½ + ½ + ½)/6 = ⅔; hits 2/2.
    assert_close(hd.fair.map, 4.0 / 6.0);
    assert_close(hd.fair.hit1, 1.0);
    // Good: (1 + ½ + ½ + 0 + 0 + 0)/6 = ⅓; hits 1/2.
    assert_close(hd.good.map, 2.0 / 6.0);
    assert_close(hd.good.hit1, 0.5);
    // VeryGood: (1 + ½ + ½)/6 = ⅓; per annotator (1+0)/2, (½+0)/2, (½+0)/2.
    assert_close(hd.very_good.map, 2.0 / 6.0);
    assert_close(hd.very_good.hit1, 0.5);
    assert_eq!(hd.very_good.map_per_annotator, [0.5, 0.25, 0.25]);
    let brief = m.brief();
    let keys: Vec<&str> = brief.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "HL-min-Fair-mAP",
            "HL-min-Fair-Hit1",
            "HL-min-Good-mAP",
            "HL-min-Good-Hit1",
            "HL-min-VeryGood-mAP",
            "HL-min-VeryGood-Hit1"
        ]
    );
    let values: Vec<Option<f64>> = brief.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, [Some(66.67), Some(100.0), Some(33.33), Some(50.0), Some(33.33), Some(50.0)]);
}

#[test]
fn hd_clip_beyond_the_video_is_an_error() {
    // duration 7 → floor(3.5) = 3 clips; clip id 3 does not exist.
    let g = gt(&[
        json!({"qid": 1, "duration": 7, "relevant_windows": [[6, 8]], "relevant_clip_ids": [3], "saliency_scores": [[4, 4, 4]]}),
    ]);
    let s = sub(&[json!({"qid": 1, "pred_saliency_scores": [1.0]})]);
    let e = evaluate(&s, &g, &EvalOptions::default()).unwrap_err();
    assert!(matches!(e, EvalError::ClipOutsideVideo { clip_id: 3, n_clips: 3, line: 1, .. }), "{e}");
}

// ------------------------------------------------------------------------------------------------
// Matching the files, parsing errors
// ------------------------------------------------------------------------------------------------

#[test]
fn missing_and_extra_predictions() {
    let g = gt(&[mr_gt(1, json!([[0, 10]])), mr_gt(2, json!([[0, 10]])), mr_gt(3, json!([[20, 30]]))]);
    let s =
        sub(&[mr_pred(1, json!([[0, 10, 1.0]])), mr_pred(3, json!([[0, 10, 1.0]])), mr_pred(9, json!([[0, 10, 1.0]]))]);
    // Default: the sets must be equal, and the error names both sides and the fix.
    let e = evaluate(&s, &g, &EvalOptions::default()).unwrap_err();
    match &e {
        EvalError::QidMismatch { missing, extra, .. } => {
            assert_eq!(missing, &[Qid::Int(2)]);
            assert_eq!(extra, &[Qid::Int(9)]);
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("no prediction: 2")
            && msg.contains("not in the ground truth: 9")
            && msg.contains("--intersection"),
        "{msg}"
    );
    // Intersection: qids 1 (exact → AP 1, R1 1) and 3 ([0,10] vs [20,30] → 0) → mAP ½, R1 ½.
    let m = evaluate(&s, &g, &EvalOptions { intersection: true }).unwrap();
    assert_eq!((m.n_queries, m.dropped_predictions, m.dropped_gt), (2, 1, 1));
    assert_eq!(brief_value(&m, "MR-full-mAP"), Some(50.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(50.0));
    // Nothing shared: an error even with --intersection.
    let s = sub(&[mr_pred(7, json!([[0, 10, 1.0]]))]);
    assert!(matches!(evaluate(&s, &g, &EvalOptions { intersection: true }), Err(EvalError::NoSharedQids { .. })));
}

#[test]
fn duplicate_qids_are_rejected() {
    let text = jsonl(&[
        mr_pred(1, json!([[0, 10, 1.0]])),
        mr_pred(2, json!([[0, 10, 1.0]])),
        mr_pred(1, json!([[5, 10, 1.0]])),
    ]);
    let e = Submission::parse(&text, Path::new("preds.jsonl")).unwrap_err();
    assert!(matches!(e, EvalError::DuplicateQid { line: 3, first_line: 1, qid: Qid::Int(1), .. }), "{e}");
    assert!(e.to_string().starts_with("preds.jsonl:3: qid 1 already appeared on line 1"), "{e}");
    let text = jsonl(&[mr_gt(5, json!([[0, 10]])), mr_gt(5, json!([[0, 10]]))]);
    let e = GroundTruth::parse(&text, Path::new("gt.jsonl")).unwrap_err();
    assert!(matches!(e, EvalError::DuplicateQid { line: 2, first_line: 1, .. }), "{e}");
    // 7 and "7" are different qids.
    let s = Submission::parse(
        "{\"qid\": 7, \"pred_saliency_scores\": [1]}\n{\"qid\": \"7\", \"pred_saliency_scores\": [1]}",
        Path::new("p"),
    );
    assert_eq!(s.unwrap().records[1].qid, Qid::Str("7".into()));
}

#[test]
fn parse_errors_name_file_line_and_field() {
    let bad_sub = |text: &str| Submission::parse(text, Path::new("preds.jsonl")).unwrap_err().to_string();
    let ok = r#"{"qid": 1, "pred_relevant_windows": [[0, 10, 0.9]], "pred_saliency_scores": [0.5]}"#;
    // Blank lines are skipped but counted; no final newline needed.
    let e = bad_sub(&format!(
        "{ok}\n\n{{\"qid\": 2, \"pred_relevant_windows\": [[0, 10]], \"pred_saliency_scores\": [1]}}"
    ));
    assert!(e.starts_with("preds.jsonl:3: field `pred_relevant_windows[0]`: must be [start, end, score]"), "{e}");
    let e = bad_sub(&format!(
        "{ok}\n{{\"qid\": 2, \"pred_relevant_windows\": [[0, \"x\", 1]], \"pred_saliency_scores\": [1]}}"
    ));
    assert!(
        e.starts_with("preds.jsonl:2: field `pred_relevant_windows[0]`: must be [start, end, score] numbers"),
        "{e}"
    );
    let e = bad_sub(&format!(
        "{ok}\n{{\"qid\": 2, \"pred_relevant_windows\": [[0, 10, 1]], \"pred_saliency_scores\": [1, null]}}"
    ));
    assert!(e.starts_with("preds.jsonl:2: field `pred_saliency_scores[1]`: must be a number, found null"), "{e}");
    let e = bad_sub(&format!("{ok}\n{{\"pred_relevant_windows\": []}}"));
    assert!(e.starts_with("preds.jsonl:2: missing field `qid`"), "{e}");
    let e = bad_sub(&format!("{ok}\n{{\"qid\": 2.5, \"pred_saliency_scores\": [1]}}"));
    assert!(e.starts_with("preds.jsonl:2: field `qid`: must be an integer or a string"), "{e}");
    let e = bad_sub(&format!("{ok}\n{{\"qid\": 2, \"pred_relevant_windows\": [[0, 10, 1]]}}"));
    assert!(e.starts_with("preds.jsonl:2: missing `pred_saliency_scores`, which the first record has"), "{e}");
    let e = bad_sub(&format!("{ok}\n{{\"qid\": 2, \"pred_relevant_windows\": [], \"pred_saliency_scores\": [1]}}"));
    assert!(e.starts_with("preds.jsonl:2: `pred_relevant_windows` is empty"), "{e}");
    let e = bad_sub(&format!(
        "{ok}\n{{\"qid\": 2, \"pred_relevant_windows\": [[0, 10, NaN]], \"pred_saliency_scores\": [1]}}"
    ));
    assert!(
        e.starts_with("preds.jsonl:2: not a JSON object:") && e.contains("NaN and Infinity are not JSON numbers"),
        "{e}"
    );
    let e = bad_sub(&format!("{ok}\n[1, 2]"));
    assert!(e.starts_with("preds.jsonl:2: not a JSON object: found an array"), "{e}");
    assert!(bad_sub("\n\n").starts_with("preds.jsonl: no records"));
    // The first record decides: without either prediction field there is nothing to evaluate,
    // and an annotation line there suggests swapped arguments.
    let e = bad_sub(r#"{"qid": 1, "relevant_windows": [[0, 2]]}"#);
    assert!(e.contains("nothing to evaluate") && e.contains("did you swap --submission and --gt?"), "{e}");

    let bad_gt = |text: &str| GroundTruth::parse(text, Path::new("gt.jsonl")).unwrap_err().to_string();
    let e = bad_gt(r#"{"qid": 1, "relevant_windows": [[0, 2, 4]]}"#);
    assert!(e.starts_with("gt.jsonl:1: field `relevant_windows[0]`: must be [start, end]"), "{e}");
    let e = bad_gt(r#"{"qid": 1, "relevant_clip_ids": [0, 1], "saliency_scores": [[1, 2, 3]]}"#);
    assert!(e.starts_with("gt.jsonl:1: field `saliency_scores`: has 1 rows but `relevant_clip_ids` has 2"), "{e}");
    let e = bad_gt(r#"{"qid": 1, "relevant_clip_ids": [-1], "saliency_scores": [[1, 2, 3]]}"#);
    assert!(e.starts_with("gt.jsonl:1: field `relevant_clip_ids[0]`: must be a clip index"), "{e}");
    let e = bad_gt(r#"{"qid": 1, "saliency_scores": [[1, 2]]}"#);
    assert!(e.starts_with("gt.jsonl:1: field `saliency_scores[0]`: must be [a1, a2, a3]"), "{e}");
    let e = bad_gt("{\"qid\": 1, \"duration\": \"150\"}");
    assert!(e.starts_with("gt.jsonl:1: field `duration`: must be a number, found a string"), "{e}");

    // Labels are required only by the metrics that use them, and the error says where.
    let g =
        GroundTruth::parse("{\"qid\": 1, \"duration\": 150}\n{\"qid\": 2, \"duration\": 150}", Path::new("test.jsonl"))
            .unwrap();
    let s = sub(&[mr_pred(1, json!([[0, 10, 1.0]])), mr_pred(2, json!([[0, 10, 1.0]]))]);
    let e = evaluate(&s, &g, &EvalOptions::default()).unwrap_err().to_string();
    assert!(
        e.starts_with("test.jsonl:1: missing field `relevant_windows` (needed for moment retrieval)")
            && e.contains("test-split"),
        "{e}"
    );
    let s = sub(&[json!({"qid": 1, "pred_saliency_scores": [1]}), json!({"qid": 2, "pred_saliency_scores": [1]})]);
    let e = evaluate(&s, &g, &EvalOptions::default()).unwrap_err().to_string();
    assert!(e.starts_with("test.jsonl:1: missing field `relevant_clip_ids` (needed for highlight detection)"), "{e}");
}

#[test]
fn only_the_blocks_the_submission_has() {
    let g = [mr_gt(1, json!([[0, 10]]))];
    let m = eval(&[mr_pred(1, json!([[0, 10, 1.0]]))], &g);
    assert!(m.mr.is_some() && m.hd.is_none());
    assert_eq!(m.brief().len(), 8);
    let full: Value = serde_json::from_str(&m.full_json()).unwrap();
    let keys: Vec<&String> = full.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5); // brief, full, long, middle, short
}

// ------------------------------------------------------------------------------------------------
// Output format
// ------------------------------------------------------------------------------------------------

/// BUCKET_GT / BUCKET_PREDS in full, as json.dumps(indent=4) writes the reference's dict.
/// MR values from mr_buckets_by_hand. HD: every query has one relevant clip 0 out of N = 75,
/// predicted [1.0, 0.5] → padded with zeros, clip 0 ranks first alone → AP 1 per positive
/// annotator column, and HIT@1 (argmax 0, a 4 there) a hit at every level.
/// Fair: all nine columns positive → 100. Good: q2 = [2,3,4] has a1 < 3 → 8/9 → 88.89.
/// VeryGood: q2 has a1, a2 < 4 → 7/9 → 77.78.
const EXPECTED_FULL: &str = r#"{
    "brief": {
        "MR-full-R1@0.5": 100.0,
        "MR-full-R1@0.7": 100.0,
        "MR-full-mAP": 77.78,
        "MR-full-mAP@0.5": 94.44,
        "MR-full-mAP@0.75": 94.44,
        "MR-long-mAP": 60.0,
        "MR-middle-mAP": 70.0,
        "MR-short-mAP": 66.67,
        "HL-min-Fair-mAP": 100.0,
        "HL-min-Fair-Hit1": 100.0,
        "HL-min-Good-mAP": 88.89,
        "HL-min-Good-Hit1": 100.0,
        "HL-min-VeryGood-mAP": 77.78,
        "HL-min-VeryGood-Hit1": 100.0
    },
    "HL-min-Fair": {
        "HL-mAP": 100.0,
        "HL-Hit1": 100.0
    },
    "HL-min-Good": {
        "HL-mAP": 88.89,
        "HL-Hit1": 100.0
    },
    "HL-min-VeryGood": {
        "HL-mAP": 77.78,
        "HL-Hit1": 100.0
    },
    "full": {
        "MR-mAP": {
            "0.5": 94.44,
            "0.55": 94.44,
            "0.6": 94.44,
            "0.65": 94.44,
            "0.7": 94.44,
            "0.75": 94.44,
            "0.8": 94.44,
            "0.85": 38.89,
            "0.9": 38.89,
            "0.95": 38.89,
            "average": 77.78
        },
        "MR-R1": {
            "0.5": 100.0,
            "0.55": 100.0,
            "0.6": 100.0,
            "0.65": 100.0,
            "0.7": 100.0,
            "0.75": 100.0,
            "0.8": 100.0,
            "0.85": 66.67,
            "0.9": 66.67,
            "0.95": 66.67
        }
    },
    "long": {
        "MR-mAP": {
            "0.5": 75.0,
            "0.55": 75.0,
            "0.6": 75.0,
            "0.65": 75.0,
            "0.7": 75.0,
            "0.75": 75.0,
            "0.8": 75.0,
            "0.85": 25.0,
            "0.9": 25.0,
            "0.95": 25.0,
            "average": 60.0
        },
        "MR-R1": {
            "0.5": 0.0,
            "0.55": 0.0,
            "0.6": 0.0,
            "0.65": 0.0,
            "0.7": 0.0,
            "0.75": 0.0,
            "0.8": 0.0,
            "0.85": 0.0,
            "0.9": 0.0,
            "0.95": 0.0
        }
    },
    "middle": {
        "MR-mAP": {
            "0.5": 100.0,
            "0.55": 100.0,
            "0.6": 100.0,
            "0.65": 100.0,
            "0.7": 100.0,
            "0.75": 100.0,
            "0.8": 100.0,
            "0.85": 0.0,
            "0.9": 0.0,
            "0.95": 0.0,
            "average": 70.0
        },
        "MR-R1": {
            "0.5": 100.0,
            "0.55": 100.0,
            "0.6": 100.0,
            "0.65": 100.0,
            "0.7": 100.0,
            "0.75": 100.0,
            "0.8": 100.0,
            "0.85": 0.0,
            "0.9": 0.0,
            "0.95": 0.0
        }
    },
    "short": {
        "MR-mAP": {
            "0.5": 66.67,
            "0.55": 66.67,
            "0.6": 66.67,
            "0.65": 66.67,
            "0.7": 66.67,
            "0.75": 66.67,
            "0.8": 66.67,
            "0.85": 66.67,
            "0.9": 66.67,
            "0.95": 66.67,
            "average": 66.67
        },
        "MR-R1": {
            "0.5": 100.0,
            "0.55": 100.0,
            "0.6": 100.0,
            "0.65": 100.0,
            "0.7": 100.0,
            "0.75": 100.0,
            "0.8": 100.0,
            "0.85": 100.0,
            "0.9": 100.0,
            "0.95": 100.0
        }
    }
}"#;

#[test]
fn full_json_matches_the_reference_layout() {
    let s = Submission::parse(BUCKET_PREDS, Path::new("preds.jsonl")).unwrap();
    let g = GroundTruth::parse(BUCKET_GT, Path::new("gt.jsonl")).unwrap();
    let m = evaluate(&s, &g, &EvalOptions::default()).unwrap();
    assert_eq!(m.full_json(), EXPECTED_FULL);
    let brief_end = EXPECTED_FULL.find("\n    },\n    \"HL-min-Fair\"").unwrap();
    let expected_brief = EXPECTED_FULL["{\n    \"brief\": {".len()..brief_end].replace("\n        ", "\n    ");
    assert_eq!(m.brief_json(), format!("{{{expected_brief}\n}}"));
}

// ------------------------------------------------------------------------------------------------
// The `moment eval` command
// ------------------------------------------------------------------------------------------------

fn moment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moment")).args(args).output().expect("run moment")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moment-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn cli_eval_small_pair() {
    let dir = temp_dir("small");
    let (preds, gt, out) = (dir.join("preds.jsonl"), dir.join("gt.jsonl"), dir.join("metrics.json"));
    std::fs::write(&preds, BUCKET_PREDS).unwrap();
    std::fs::write(&gt, BUCKET_GT).unwrap();
    let (preds, gt, out) = (preds.to_str().unwrap(), gt.to_str().unwrap(), out.to_str().unwrap());

    let o = moment(&["eval", "--submission", preds, "--gt", gt, "--out", out]);
    assert!(o.status.success(), "{}", text(&o));
    // stdout: the brief block, as JSON.
    let brief: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(brief["MR-full-mAP"], json!(77.78));
    assert_eq!(brief["HL-min-VeryGood-Hit1"], json!(100.0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("evaluated 3 queries"), "{}", text(&o));
    // --out: the full JSON, exactly.
    assert_eq!(std::fs::read_to_string(out).unwrap(), EXPECTED_FULL);
    // No temporary file left beside it.
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names.len(), 3, "{names:?}");

    // A missing prediction: non-zero exit, the fix in the message, and --out untouched.
    let partial = dir.join("partial.jsonl");
    std::fs::write(&partial, BUCKET_PREDS.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
    let out2 = dir.join("metrics2.json");
    let o = moment(&["eval", "--submission", partial.to_str().unwrap(), "--gt", gt, "--out", out2.to_str().unwrap()]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("1 ground-truth qid(s) have no prediction: 3") && t.contains("--intersection"), "{t}");
    assert!(!out2.exists());
    // --intersection evaluates q1 and q2 only.
    let o = moment(&["eval", "--submission", partial.to_str().unwrap(), "--gt", gt, "--intersection"]);
    assert!(o.status.success(), "{}", text(&o));
    let brief: Value = serde_json::from_slice(&o.stdout).unwrap();
    // full: θ ≤ .8 (1 + 1)/2, θ > .8 (1 + 0)/2 → average (7 + 1.5)/10 = 0.85.
    assert_eq!(brief["MR-full-mAP"], json!(85.0));
    assert!(text(&o).contains("left out 0 predicted and 1 annotated qids"), "{}", text(&o));

    // Swapped arguments: the message says so.
    let o = moment(&["eval", "--submission", gt, "--gt", preds]);
    assert!(!o.status.success());
    assert!(text(&o).contains("did you swap --submission and --gt?"), "{}", text(&o));
    // A file that is not there: named.
    let o = moment(&["eval", "--submission", "/nonexistent/p.jsonl", "--gt", gt]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/p.jsonl"), "{}", text(&o));
    // Help reads well.
    let o = moment(&["eval", "--help"]);
    let t = text(&o);
    assert!(t.contains("--submission <JSONL>") && t.contains("--gt <JSONL>") && t.contains("--intersection"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------------
// The real val annotations with a submission derived from the GT
// ------------------------------------------------------------------------------------------------

/// `highlight_val_release.jsonl` in the shared folder: $MOMENT_SHARED, else `shared` beside the
/// repository, else beside the main checkout of this worktree.
fn val_annotations() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(s) = std::env::var_os("MOMENT_SHARED") {
        candidates.push(PathBuf::from(s));
    }
    candidates.push(root.join("../shared"));
    // A git worktree: .git is a file "gitdir: <main>/.git/worktrees/<name>".
    if let Ok(git) = std::fs::read_to_string(root.join(".git")) {
        if let Some(dir) = git.trim().strip_prefix("gitdir:") {
            if let Some(main) = Path::new(dir.trim()).ancestors().nth(3) {
                candidates.push(main.join("../shared"));
            }
        }
    }
    let rel = "data/qvhighlights/highlight_val_release.jsonl";
    candidates.iter().map(|c| c.join(rel)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "the QVHighlights val annotations are needed for this test and were not found; looked for {rel} under: {}. \
             Set MOMENT_SHARED to the folder that holds data/qvhighlights/",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

struct ValQuery {
    qid: i64,
    duration: f64,
    windows: Vec<[f64; 2]>,
    /// Per clip of the video, the three annotators' scores (0 outside the relevant clips).
    clips: Vec<[f64; 3]>,
}

fn val_queries(path: &Path) -> Vec<ValQuery> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let duration = v["duration"].as_f64().unwrap();
            let mut clips = vec![[0.0; 3]; (duration / 2.0) as usize];
            for (id, s) in
                v["relevant_clip_ids"].as_array().unwrap().iter().zip(v["saliency_scores"].as_array().unwrap())
            {
                let s: Vec<f64> = s.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                clips[id.as_u64().unwrap() as usize] = [s[0], s[1], s[2]];
            }
            let windows = v["relevant_windows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| [w[0].as_f64().unwrap(), w[1].as_f64().unwrap()])
                .collect();
            ValQuery { qid: v["qid"].as_i64().unwrap(), duration, windows, clips }
        })
        .collect()
}

/// One prediction line: the windows in the given order with scores 1.0, 0.99, 0.98, … (all of
/// them; the evaluator keeps the first ten) and the given saliency.
fn synthetic_line(qid: i64, windows: &[[f64; 2]], saliency: &[f64]) -> String {
    let w: Vec<Value> = windows.iter().enumerate().map(|(i, w)| json!([w[0], w[1], 1.0 - 0.01 * i as f64])).collect();
    json!({"qid": qid, "pred_relevant_windows": w, "pred_saliency_scores": saliency}).to_string()
}

/// Fraction of queries whose GT windows, limited to `keep`, number G > 0: mean of min(10, G)/G —
/// the AP of predicting exactly those windows first (each an exact TP; at most 10 count), at
/// every θ.
fn expected_exact_ap(queries: &[ValQuery], keep: impl Fn(&[f64; 2]) -> bool) -> (usize, usize, f64) {
    let counts: Vec<usize> =
        queries.iter().map(|q| q.windows.iter().filter(|w| keep(w)).count()).filter(|&g| g > 0).collect();
    let ap: f64 = counts.iter().map(|&g| g.min(10) as f64 / g as f64).sum::<f64>() / counts.len() as f64;
    (counts.len(), counts.iter().sum(), ap)
}

#[test]
fn real_val_annotations_with_gt_derived_predictions() {
    let path = val_annotations();
    let queries = val_queries(&path);
    assert_eq!(queries.len(), 1550, "the val split has 1,550 queries");
    let gt = GroundTruth::read(&path).unwrap();

    // Submission A: every GT window in GT order (exact windows; GT windows within a query are
    // distinct, so each is an exact TP), saliency = the highest annotator score of each clip.
    let lines: Vec<String> = queries
        .iter()
        .map(|q| {
            synthetic_line(q.qid, &q.windows, &q.clips.iter().map(|c| c[0].max(c[1]).max(c[2])).collect::<Vec<_>>())
        })
        .collect();
    let sub_a = Submission::parse(&lines.join("\n"), Path::new("synthetic-a.jsonl")).unwrap();
    let m = evaluate(&sub_a, &gt, &EvalOptions::default()).unwrap();
    assert_eq!(m.n_queries, 1550);
    let mr = m.mr.as_ref().unwrap();
    // R1: the first window is the first GT window exactly; it is its own best GT (IoU 1) → 100
    // at every θ.
    assert_eq!(mr.full.r1.unwrap(), [1.0; 10]);
    // AP: G exact TPs ranked first, at most 10 counted → min(10, G)/G at every θ.
    let (n, windows, ap) = expected_exact_ap(&queries, |_| true);
    assert_eq!((mr.full.n_queries, mr.full.n_windows), (n, windows));
    assert_close10(mr.full.map.unwrap(), [ap; 10]);
    assert!(ap < 1.0, "some val queries have more than 10 GT windows");
    // Bucket sizes stated by evaluation.md §3.2.
    assert_eq!([mr.short.n_windows, mr.middle.n_windows, mr.long.n_windows], [1130, 1062, 611]);
    assert_eq!(mr.queries_without_gt, 0);
    // HIT@1: argmax is the first clip with the query's highest score m (the row max there is
    // m), so it is a hit at a level exactly when m ≥ that level.
    let hd = m.hd.as_ref().unwrap();
    for level in Level::ALL {
        let hits = queries.iter().filter(|q| q.clips.iter().any(|c| c.iter().any(|&s| s >= level.min_score()))).count();
        assert_close(hd.level(level).hit1, hits as f64 / 1550.0);
    }
    // 35 val queries have no 4 from any annotator → 1515/1550 = 97.74 at VeryGood.
    assert_eq!(brief_value(&m, "HL-min-VeryGood-Hit1"), Some(97.74));
    assert_eq!(brief_value(&m, "MR-full-R1@0.5"), Some(100.0));
    assert_eq!(brief_value(&m, "MR-full-R1@0.7"), Some(100.0));

    // Submission B, per length bucket: the bucket's GT windows first, then the others. In that
    // bucket the first min(10, G_b) ranked predictions are its own windows, exact TPs: AP
    // min(10, G_b)/G_b, and R1 100 (the first window is one of its GT windows).
    for bucket in [Bucket::Short, Bucket::Middle, Bucket::Long] {
        let lines: Vec<String> = queries
            .iter()
            .map(|q| {
                let (mut inside, outside): (Vec<[f64; 2]>, Vec<[f64; 2]>) =
                    q.windows.iter().partition(|w| bucket.contains(w[1] - w[0]));
                inside.extend(outside);
                synthetic_line(q.qid, &inside, &[0.0])
            })
            .collect();
        let s = Submission::parse(&lines.join("\n"), Path::new("synthetic-b.jsonl")).unwrap();
        let m = evaluate(&s, &gt, &EvalOptions::default()).unwrap();
        let b = m.mr.as_ref().unwrap().bucket(bucket).clone();
        let (n, windows, ap) = expected_exact_ap(&queries, |w| bucket.contains(w[1] - w[0]));
        assert_eq!((b.n_queries, b.n_windows), (n, windows), "{}", bucket.name());
        assert_close10(b.map.unwrap(), [ap; 10]);
        assert_eq!(b.r1.unwrap(), [1.0; 10], "{}", bucket.name());
    }

    // Submission C: saliency = annotator k's own scores. Column k is then ranked perfectly: every
    // threshold at or above the level retrieves only positives, so each recall level is reached
    // at precision 1 → AP 1, except a query where annotator k gave nothing ≥ level (AP 0).
    for k in 0..3 {
        let lines: Vec<String> = queries
            .iter()
            .map(|q| synthetic_line(q.qid, &q.windows, &q.clips.iter().map(|c| c[k]).collect::<Vec<_>>()))
            .collect();
        let s = Submission::parse(&lines.join("\n"), Path::new("synthetic-c.jsonl")).unwrap();
        let m = evaluate(&s, &gt, &EvalOptions::default()).unwrap();
        for level in Level::ALL {
            let with_positive = queries.iter().filter(|q| q.clips.iter().any(|c| c[k] >= level.min_score())).count();
            let got = m.hd.as_ref().unwrap().level(level).map_per_annotator[k];
            assert_close(got, with_positive as f64 / 1550.0);
        }
    }

    // Submission D: constant saliency (one 0.0 → padded with zeros): one threshold retrieves every
    // clip, so AP = positives / N for each column (0 without positives), and the argmax is clip
    // 0, a hit iff some annotator reached the level there.
    let lines: Vec<String> = queries.iter().map(|q| synthetic_line(q.qid, &q.windows, &[0.0])).collect();
    let s = Submission::parse(&lines.join("\n"), Path::new("synthetic-d.jsonl")).unwrap();
    let m = evaluate(&s, &gt, &EvalOptions::default()).unwrap();
    for level in Level::ALL {
        let mut ap_sum = 0.0;
        let mut hits = 0;
        for q in &queries {
            for a in 0..3 {
                let pos = q.clips.iter().filter(|c| c[a] >= level.min_score()).count();
                ap_sum += pos as f64 / q.clips.len() as f64;
            }
            hits += usize::from(q.clips[0].iter().any(|&s| s >= level.min_score()));
        }
        let hd = m.hd.as_ref().unwrap().level(level).clone();
        assert!((hd.map - ap_sum / 4650.0).abs() < 1e-9, "{}: {} vs {}", level.name(), hd.map, ap_sum / 4650.0);
        assert_close(hd.hit1, hits as f64 / 1550.0);
    }
    assert!(queries.iter().all(|q| q.duration >= 2.0));
}

#[test]
fn cli_eval_on_real_val_annotations() {
    let path = val_annotations();
    let queries = val_queries(&path);
    let dir = temp_dir("val");
    let preds = dir.join("preds.jsonl");
    // Every GT window in GT order, and the highest annotator score per clip as saliency (see
    // real_val_annotations_with_gt_derived_predictions for why these numbers follow).
    let lines: Vec<String> = queries
        .iter()
        .map(|q| {
            synthetic_line(q.qid, &q.windows, &q.clips.iter().map(|c| c[0].max(c[1]).max(c[2])).collect::<Vec<_>>())
        })
        .collect();
    std::fs::write(&preds, lines.join("\n")).unwrap();
    let out = dir.join("metrics.json");
    let o = moment(&[
        "eval",
        "--submission",
        preds.to_str().unwrap(),
        "--gt",
        path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let brief: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(brief["MR-full-R1@0.5"], json!(100.0));
    assert_eq!(brief["MR-full-R1@0.7"], json!(100.0));
    let (_, _, ap) = expected_exact_ap(&queries, |_| true);
    let ap = percent(ap);
    assert_eq!(brief["MR-full-mAP"], json!(ap));
    assert_eq!(brief["MR-full-mAP@0.5"], json!(ap));
    assert_eq!(brief["MR-full-mAP@0.75"], json!(ap));
    assert_eq!(brief["HL-min-VeryGood-Hit1"], json!(97.74));
    let raw = std::fs::read_to_string(&out).unwrap();
    let full: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(full["brief"], brief);
    // Top-level blocks in the reference's order (serde_json's map would sort them, so look at
    // the text).
    let blocks = ["brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood", "full", "long", "middle", "short"];
    let at: Vec<usize> = blocks.iter().map(|b| raw.find(&format!("\n    \"{b}\": {{")).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    for k in IOU_KEYS {
        assert_eq!(full["full"]["MR-R1"][k], json!(100.0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
