//! Videos longer than a model's `max_v_l` (75 clips = 150 s for the official models) run as
//! overlapping windows of at most `max_v_l` clips. Each window is preprocessed as its own video
//! (its own temporal endpoint features), all windows go through one batched forward with the
//! query, and the results are merged:
//!
//! - moments: every window's moments, mapped to absolute seconds, are reduced by greedy span
//!   NMS (the GPU `nms` kernel on the model's device; Moment-DETR's hull IoU), then the top `k`
//!   by score are kept, clamped to the video and snapped to the clip grid;
//! - saliency: each clip's score is the mean over the windows that contain it.
//!
//! An input that fits one window gives exactly the plain [`Model::predict`] result.

use super::postprocess::{round4, Window};
use super::{Model, Prediction, QueryInput, RawOutputs};
use crate::error::{Error, Result};
use crate::graph::{ConstCache, Executable, Graph};
use crate::io::Array;
use crate::ops::span::{nms, NmsIou, SpanFormat, NMS_MAX_SPANS};

/// How a long video is cut and merged.
#[derive(Clone, Copy, Debug)]
pub struct LongVideo {
    /// Clips per window; at most the model's `max_v_l` (0 = that maximum).
    pub window: usize,
    /// Clips between window starts (0 = two thirds of the window, so windows overlap by a third).
    pub stride: usize,
    /// Candidates overlapping a better one by more than this (hull IoU) are dropped.
    pub nms_threshold: f32,
    /// Windows kept after the merge.
    pub top_k: usize,
}

impl Default for LongVideo {
    fn default() -> Self {
        LongVideo { window: 0, stride: 0, nms_threshold: 0.7, top_k: 10 }
    }
}

/// Window start clips covering `total` clips: every `stride`, the last one aligned to the end.
pub fn window_starts(total: usize, window: usize, stride: usize) -> Vec<usize> {
    if total <= window {
        return vec![0];
    }
    let mut starts: Vec<usize> = (0..).map(|i| i * stride).take_while(|&s| s + window < total).collect();
    starts.push(total - window);
    starts
}

impl Model {
    /// Predicts over raw feature sources of any length (see the module docs). `duration` is the
    /// video's length in seconds (default: clips × clip length).
    pub fn predict_long(
        &self,
        sources: &[Array],
        names: &[String],
        query: &QueryInput,
        duration: Option<f32>,
        opts: &LongVideo,
    ) -> Result<Prediction> {
        let io = self.io().clone();
        let window = if opts.window == 0 { io.max_clips } else { opts.window };
        if window > io.max_clips {
            return Err(Error::Input {
                name: "--window".into(),
                reason: format!("{window} clips is more than the model's max_v_l of {}", io.max_clips),
            });
        }
        let stride = if opts.stride == 0 { (2 * window / 3).max(1) } else { opts.stride };
        if stride > window {
            return Err(Error::Input {
                name: "--stride".into(),
                reason: format!("a stride of {stride} clips skips clips between windows of {window}"),
            });
        }
        let total = sources.iter().map(|a| a.rows_and_width().map_or(0, |(r, _)| r)).min().unwrap_or(0);
        if total <= window {
            let mut video = self.video_from_sources(sources, names)?;
            video.duration = duration;
            return self.predict(&video, query);
        }
        let starts = window_starts(total, window, stride);
        let mut videos = Vec::with_capacity(starts.len());
        for &s in &starts {
            let cut: Vec<Array> = sources
                .iter()
                .map(|a| {
                    let w = a.rows_and_width().unwrap().1;
                    Array { shape: vec![window, w], data: a.data[s * w..(s + window) * w].to_vec() }
                })
                .collect();
            videos.push(self.video_from_sources(&cut, names)?);
        }
        let items: Vec<_> = videos.iter().map(|v| (v, query)).collect();
        let per_window = self.predict_batch(&items)?;

        let clip = io.clip_length;
        let total_s = duration.unwrap_or(total as f32 * clip);
        let window_s = window as f32 * clip;
        // Candidates in absolute seconds: every window's post-processed moments (the model's own
        // scoring), clipped to their window and shifted by its start.
        let (mut spans, mut scores, mut logits) = (Vec::new(), Vec::new(), Vec::new());
        for (p, &s) in per_window.iter().zip(&starts) {
            let offset = s as f32 * clip;
            for w in &p.windows {
                spans.extend([
                    (w.start as f32).clamp(0.0, window_s) + offset,
                    (w.end as f32).clamp(0.0, window_s) + offset,
                ]);
                scores.push(w.score as f32);
            }
            logits.extend_from_slice(&p.raw.logits);
        }
        // The NMS kernel takes up to 512 spans; past that, only the best-scoring ones compete.
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        order.truncate(NMS_MAX_SPANS);
        let cand_spans: Vec<f32> = order.iter().flat_map(|&i| [spans[2 * i], spans[2 * i + 1]]).collect();
        let cand_scores: Vec<f32> = order.iter().map(|&i| scores[i]).collect();
        let keep = self.nms_on_device(&cand_spans, &cand_scores, opts.nms_threshold)?;
        let mut kept: Vec<usize> = order.iter().enumerate().filter(|(j, _)| keep[*j] > 0.5).map(|(_, &i)| i).collect();
        kept.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        kept.truncate(opts.top_k);
        let snap = |x: f32| ((x.clamp(0.0, total_s) / clip).round_ties_even() * clip) as f64;
        let windows: Vec<Window> = kept
            .iter()
            .map(|&i| Window {
                start: snap(spans[2 * i]),
                end: snap(spans[2 * i + 1]),
                score: round4(scores[i] as f64),
            })
            .collect();

        let mut sum = vec![0.0f32; total];
        let mut count = vec![0u32; total];
        for (p, &s) in per_window.iter().zip(&starts) {
            for (t, &v) in p.saliency.iter().enumerate() {
                sum[s + t] += v;
                count[s + t] += 1;
            }
        }
        let saliency: Vec<f32> = sum.iter().zip(&count).map(|(s, &c)| s / c as f32).collect();
        // Raw outputs of a merged prediction: every window's logits, and the candidates as
        // normalised (center, width) over the whole video.
        let raw_spans =
            spans.chunks_exact(2).flat_map(|s| [(s[0] + s[1]) / 2.0 / total_s, (s[1] - s[0]) / total_s]).collect();
        Ok(Prediction {
            windows,
            saliency: saliency.clone(),
            raw: RawOutputs { logits, spans: raw_spans, saliency, quality: None, proposals: None },
        })
    }

    /// Greedy span NMS of start–end `spans` by `scores` on the model's device; 1 = kept.
    fn nms_on_device(&self, spans: &[f32], scores: &[f32], threshold: f32) -> Result<Vec<f32>> {
        let n = scores.len();
        let mut g = Graph::new();
        let s = g.input("spans", &[1, n, 2]);
        let p = g.input("scores", &[1, n]);
        let keep = nms(&mut g, s, p, SpanFormat::StartEnd, threshold, None, NmsIou::Hull)?;
        g.output("keep", keep);
        let mut exe = Executable::new(g, &self.device, &ConstCache::new())?;
        Ok(exe.run(&[("spans", spans), ("scores", scores)])?.get("keep").to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::window_starts;

    #[test]
    fn windows_cover_the_video_and_end_flush() {
        assert_eq!(window_starts(75, 75, 50), vec![0]);
        assert_eq!(window_starts(76, 75, 50), vec![0, 1]);
        assert_eq!(window_starts(200, 75, 50), vec![0, 50, 100, 125]);
        assert_eq!(window_starts(175, 75, 50), vec![0, 50, 100]);
    }
}
