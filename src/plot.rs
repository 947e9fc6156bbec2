//! A minimal SVG of one prediction: the saliency curve over time (seconds), the top predicted
//! moments as labelled bars, and optionally the ground-truth windows (shaded bands) and per-clip
//! highlight scores (grey bars on a 0–4 scale). No dependencies; the output is a standalone file
//! any browser shows.
//!
//! ```
//! use moment_gpu::models::Window;
//! use moment_gpu::plot::Plot;
//! let plot = Plot {
//!     title: "a query".into(),
//!     saliency: vec![-0.2, 0.1, 0.8, 0.6, -0.1],
//!     windows: vec![Window { start: 4.0, end: 8.0, score: 0.91 }],
//!     truth_windows: vec![[4.0, 8.0]],
//!     ..Plot::default()
//! };
//! let svg = plot.to_svg();
//! assert!(svg.starts_with("<svg"));
//! ```

use std::fmt::Write as _;

use crate::models::Window;

/// What to draw. Times are in seconds; clip `i` covers `[i·clip_length, (i+1)·clip_length)`.
#[derive(Clone, Debug)]
pub struct Plot {
    pub title: String,
    /// Seconds per clip.
    pub clip_length: f32,
    /// One raw saliency score per clip.
    pub saliency: Vec<f32>,
    /// Predicted moments in rank order; the first `max_windows` are drawn.
    pub windows: Vec<Window>,
    pub max_windows: usize,
    /// Ground-truth windows `[start, end]` in seconds (empty: none drawn).
    pub truth_windows: Vec<[f64; 2]>,
    /// Ground-truth highlight score per clip on the 0–4 scale (empty: none drawn).
    pub truth_scores: Vec<f32>,
}

impl Default for Plot {
    fn default() -> Self {
        Plot {
            title: String::new(),
            clip_length: 2.0,
            saliency: Vec::new(),
            windows: Vec::new(),
            max_windows: 5,
            truth_windows: Vec::new(),
            truth_scores: Vec::new(),
        }
    }
}

const WIDTH: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 58.0;
const CURVE_HEIGHT: f64 = 220.0;
const LANE: f64 = 22.0;

const TRUTH_FILL: &str = "#2ca02c";
const CURVE: &str = "#1f77b4";
const MOMENT: &str = "#ff7f0e";

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span > 0.0) || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Shortest decimal form of a tick value (no "-0", no float noise).
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10()).ceil() as usize };
    let s = format!("{v:.decimals$}");
    if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
        "0".into()
    } else {
        s
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Plot {
    /// Total duration shown: the clips, extended to cover every drawn window.
    fn duration(&self) -> f64 {
        let clips = self.saliency.len().max(self.truth_scores.len()) as f64 * self.clip_length as f64;
        let windows = self.windows.iter().take(self.max_windows).map(|w| w.end);
        let truth = self.truth_windows.iter().map(|w| w[1]);
        windows.chain(truth).fold(clips, f64::max).max(self.clip_length as f64)
    }

    /// The whole SVG document.
    pub fn to_svg(&self) -> String {
        let duration = self.duration();
        let plot_w = WIDTH - LEFT - RIGHT;
        let x = |t: f64| LEFT + t / duration * plot_w;
        let n_windows = self.windows.len().min(self.max_windows);
        let lanes_top = TOP + CURVE_HEIGHT + 45.0;
        let height = lanes_top + n_windows as f64 * LANE + if self.truth_windows.is_empty() { 20.0 } else { 45.0 };
        let curve_bottom = TOP + CURVE_HEIGHT;

        // Saliency range with a margin; a flat curve still gets a visible range.
        let finite: Vec<f64> = self.saliency.iter().map(|&v| v as f64).filter(|v| v.is_finite()).collect();
        let (mut lo, mut hi) =
            finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if finite.is_empty() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-6 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let pad = (hi - lo) * 0.08;
        let y_step = nice_step(hi - lo + 2.0 * pad, 5.0);
        let (y_lo, y_hi) = (((lo - pad) / y_step).floor() * y_step, ((hi + pad) / y_step).ceil() * y_step);
        let y = |v: f64| curve_bottom - (v - y_lo) / (y_hi - y_lo) * CURVE_HEIGHT;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ =
            writeln!(s, r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>"#, escape(&self.title));

        // Legend: (swatch kind, label).
        let mut items = vec![(0, "predicted saliency")];
        if !self.truth_windows.is_empty() {
            items.push((1, "ground-truth window"));
        }
        if !self.truth_scores.is_empty() {
            items.push((2, "ground-truth highlight score"));
        }
        let mut lx = LEFT + 2.0;
        for (kind, label) in items {
            let swatch = match kind {
                0 => format!(
                    r#"<line x1="{lx:.1}" y1="36" x2="{:.1}" y2="36" stroke="{CURVE}" stroke-width="2"/>"#,
                    lx + 15.0
                ),
                1 => format!(
                    r#"<rect x="{lx:.1}" y="31" width="15" height="10" fill="{TRUTH_FILL}" fill-opacity="0.3"/>"#
                ),
                _ => format!(r##"<rect x="{lx:.1}" y="31" width="15" height="10" fill="#999" fill-opacity="0.5"/>"##),
            };
            let _ = writeln!(s, r#"{swatch}<text x="{:.1}" y="40" font-size="11">{label}</text>"#, lx + 20.0);
            lx += 20.0 + 6.5 * label.chars().count() as f64 + 18.0;
        }

        // Ground-truth windows: bands behind the curve.
        for w in &self.truth_windows {
            let (a, b) = (x(w[0].max(0.0)), x(w[1].min(duration)));
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{CURVE_HEIGHT}" fill="{TRUTH_FILL}" fill-opacity="0.12"/>"#,
                (b - a).max(0.5)
            );
        }
        // Ground-truth highlight scores: grey bars on a 0–4 scale, right axis.
        if !self.truth_scores.is_empty() {
            let cl = self.clip_length as f64;
            for (i, &v) in self.truth_scores.iter().enumerate() {
                if v > 0.0 {
                    let h = (v as f64 / 4.0).min(1.0) * CURVE_HEIGHT;
                    let _ = writeln!(
                        s,
                        r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#999" fill-opacity="0.35"/>"##,
                        x(i as f64 * cl) + 0.5,
                        curve_bottom - h,
                        (x(cl) - x(0.0) - 1.0).max(0.5)
                    );
                }
            }
            for k in 0..=4 {
                let yy = curve_bottom - k as f64 / 4.0 * CURVE_HEIGHT;
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" fill="#777" font-size="10">{k}</text>"##,
                    WIDTH - RIGHT + 5.0,
                    yy + 3.0
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#777" font-size="10" text-anchor="end">highlight score (truth, 0–4)</text>"##,
                WIDTH - RIGHT,
                TOP - 6.0
            );
        }

        // Axes, grid and ticks.
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{CURVE_HEIGHT}" fill="none" stroke="#333"/>"##
        );
        let mut v = y_lo;
        while v <= y_hi + y_step * 1e-6 {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                tick_label(v, y_step)
            );
            v += y_step;
        }
        if y_lo < 0.0 && y_hi > 0.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 3"/>"##,
                y(0.0),
                LEFT + plot_w,
                y(0.0)
            );
        }
        let t_step = nice_step(duration, 8.0).max(self.clip_length as f64);
        let mut t = 0.0;
        while t <= duration + 1e-9 {
            let xx = x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{curve_bottom}" x2="{xx:.1}" y2="{:.1}" stroke="#333"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                curve_bottom + 5.0,
                curve_bottom + 18.0,
                tick_label(t, t_step)
            );
            t += t_step;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
            LEFT + plot_w / 2.0,
            curve_bottom + 34.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">saliency (raw score)</text>"#,
            TOP + CURVE_HEIGHT / 2.0
        );

        // The saliency curve: one point per clip centre.
        if !self.saliency.is_empty() {
            let cl = self.clip_length as f64;
            let points: Vec<String> = self
                .saliency
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| format!("{:.1},{:.1}", x((i as f64 + 0.5) * cl), y(v as f64)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{CURVE}" stroke-width="2"/>"#,
                points.join(" ")
            );
            if let Some((i, &v)) = self.saliency.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{CURVE}"/><text x="{:.1}" y="{:.1}" fill="{CURVE}">top clip {i}</text>"#,
                    x((i as f64 + 0.5) * cl),
                    y(v as f64),
                    x((i as f64 + 0.5) * cl) + 6.0,
                    y(v as f64) - 6.0
                );
            }
        }

        // Predicted moments: one lane per rank.
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">predicted moments (rank, score)</text>"#,
            lanes_top - 6.0
        );
        for (rank, w) in self.windows.iter().take(n_windows).enumerate() {
            let yy = lanes_top + rank as f64 * LANE;
            let (a, b) = (x(w.start.clamp(0.0, duration)), x(w.end.clamp(0.0, duration)));
            let opacity = if rank == 0 { 0.95 } else { 0.55 };
            let _ = writeln!(
                s,
                r#"<rect x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="{MOMENT}" fill-opacity="{opacity}"/>"#,
                yy + 3.0,
                (b - a).max(2.0),
                LANE - 6.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">#{} {:.2}</text><text x="{:.1}" y="{:.1}" font-size="10">{}–{} s</text>"#,
                LEFT - 6.0,
                yy + 15.0,
                rank + 1,
                w.score,
                b + 5.0,
                yy + 15.0,
                tick_label(w.start, 1.0),
                tick_label(w.end, 1.0)
            );
        }
        if !self.truth_windows.is_empty() {
            let yy = lanes_top + n_windows as f64 * LANE + 8.0;
            for w in &self.truth_windows {
                let (a, b) = (x(w[0].max(0.0)), x(w[1].min(duration)));
                let _ = writeln!(
                    s,
                    r#"<rect x="{a:.1}" y="{yy:.1}" width="{:.1}" height="10" fill="{TRUTH_FILL}" fill-opacity="0.7"/>"#,
                    (b - a).max(2.0)
                );
            }
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{TRUTH_FILL}">truth</text>"#,
                LEFT - 6.0,
                yy + 9.0
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(150.0, 8.0), 20.0);
        assert_eq!(nice_step(96.0, 8.0), 10.0);
        assert_eq!(nice_step(1.0, 5.0), 0.2);
        assert_eq!(tick_label(-0.0, 0.5), "0");
        assert_eq!(tick_label(0.4000000001, 0.2), "0.4");
    }

    #[test]
    fn svg_has_every_part() {
        let plot = Plot {
            title: "dogs & <cats>".into(),
            saliency: vec![0.1, 0.5, -0.3, 0.2],
            windows: vec![Window { start: 2.0, end: 6.0, score: 0.9 }, Window { start: 0.0, end: 8.0, score: 0.1 }],
            truth_windows: vec![[2.0, 4.0]],
            truth_scores: vec![0.0, 4.0, 0.0, 0.0],
            ..Plot::default()
        };
        let svg = plot.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("dogs &amp; &lt;cats&gt;"));
        assert!(svg.contains("#1 0.90") && svg.contains("#2 0.10"));
        assert!(svg.contains("time (s)") && svg.contains("truth") && svg.contains("top clip 1"));
        assert_eq!(svg.matches("<polyline").count(), 1);
    }

    #[test]
    fn empty_and_flat_inputs_do_not_break() {
        let svg = Plot::default().to_svg();
        assert!(svg.contains("</svg>") && !svg.contains("NaN"));
        let flat = Plot { saliency: vec![1.0; 3], ..Plot::default() }.to_svg();
        assert!(!flat.contains("NaN") && !flat.contains("inf"));
    }
}
