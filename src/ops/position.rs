//! Sine positional encodings: DETR `PositionEmbeddingSine` computed from a 1-D padding mask, and
//! the DAB-DETR sine embedding of anchor coordinates.
//! WGSL: `shaders/position_mask.wgsl` and `shaders/position_coords.wgsl`.
//!
//! What the four models use (all interleaved sin/cos, none concatenated, no learned tables in
//! these ops):
//! * video positions `PositionEmbeddingSine(256, T, normalize=True, scale=2π)`:
//!   [`sine_position_from_mask`] with [`SineConfig::detr`]`(256, T)`; T = 10000 for TR-DETR,
//!   LD-DETR and VideoLights, SG-DETR's `pos_temp` (default 10000). Text positions are zero.
//! * decoder anchors `gen_sineembed_for_position` on `(center, width)` → `[e(center) | e(width)]`
//!   with 128 features each, scale 2π: [`sine_embed_coords`]`(g, anchors, 128, T, 2π)`.

use std::f32::consts::TAU;
use std::sync::Arc;

use super::{grid_1d, Kernel, Params, Shader};
use crate::error::{Error, Result};
use crate::graph::{Graph, TensorId};

const FROM_MASK: Shader =
    Shader { name: "position_mask", source: include_str!("../../shaders/position_mask.wgsl"), entry: "sine_from_mask" };
const COORDS: Shader = Shader {
    name: "position_coords",
    source: include_str!("../../shaders/position_coords.wgsl"),
    entry: "sine_coords",
};

/// The frequency table `dim_t[k] = temperature^(2·⌊k/2⌋ / f)`, evaluated as PyTorch does in
/// float32: the exponent is rounded to f32, then the power is rounded once.
pub fn dim_t(f: usize, temperature: f32) -> Vec<f32> {
    (0..f)
        .map(|k| {
            let e = (2 * (k / 2)) as f32 / f as f32;
            (temperature as f64).powf(e as f64) as f32
        })
        .collect()
}

fn sin_or_cos(k: usize, v: f32) -> f32 {
    if k.is_multiple_of(2) {
        v.sin()
    } else {
        v.cos()
    }
}

/// Options of DETR's `PositionEmbeddingSine` (1-D).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SineConfig {
    /// Features per position (`num_pos_feats`), even.
    pub num_feats: usize,
    pub temperature: f32,
    /// Divide the cumsum by the last position's cumsum (+ `eps`) and multiply by `scale`.
    pub normalize: bool,
    pub scale: f32,
    pub eps: f32,
}

impl SineConfig {
    /// `PositionEmbeddingSine(num_feats, temperature, normalize=True)`: scale 2π, eps 1e-6.
    pub fn detr(num_feats: usize, temperature: f32) -> Self {
        SineConfig { num_feats, temperature, normalize: true, scale: TAU, eps: 1e-6 }
    }
}

/// `y (B, L, F)` from `mask (B, L)` and the `dim_t (F)` table; see `position_mask.wgsl`.
#[derive(Clone, Debug)]
pub struct SineFromMask {
    b: usize,
    l: usize,
    cfg: SineConfig,
}

impl Kernel for SineFromMask {
    fn label(&self) -> &'static str {
        "sine_position_from_mask"
    }
    fn shader(&self) -> Shader {
        FROM_MASK
    }
    fn params(&self) -> Params {
        Params::new()
            .u(self.b * self.l)
            .u(self.l)
            .u(self.cfg.num_feats)
            .flag(self.cfg.normalize)
            .f(self.cfg.scale)
            .f(self.cfg.eps)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d(self.b * self.l)
    }
    /// The CPU backend: the twin's computation, one sample per task.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&super::Prepared>) {
        let per_sample = self.l * self.cfg.num_feats;
        super::pool::for_each_chunk(&mut outputs[0][..self.b * per_sample], per_sample, |b, y| {
            self.sample(b, inputs[0], inputs[1], y)
        });
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        let per_sample = self.l * self.cfg.num_feats;
        for (b, y) in outputs[0][..self.b * per_sample].chunks_exact_mut(per_sample).enumerate() {
            self.sample(b, inputs[0], inputs[1], y);
        }
    }
}

impl SineFromMask {
    /// Sample `b`'s `(L, F)` embedding into `y`.
    fn sample(&self, b: usize, mask: &[f32], dim_t: &[f32], y: &mut [f32]) {
        let (l, f) = (self.l, self.cfg.num_feats);
        let mask = &mask[b * l..(b + 1) * l];
        let last: f32 = mask.iter().sum();
        let mut cum = 0.0f32;
        for (t, row) in y.chunks_exact_mut(f).enumerate() {
            cum += mask[t];
            let x = if self.cfg.normalize { cum / (last + self.cfg.eps) * self.cfg.scale } else { cum };
            for (k, out) in row.iter_mut().enumerate() {
                *out = sin_or_cos(k, x / dim_t[k]);
            }
        }
    }
}

/// `y (…, C·F)` from coordinates `v (…, C)`; see `position_coords.wgsl`.
#[derive(Clone, Debug)]
pub struct SineCoords {
    values: usize,
    f: usize,
    scale: f32,
}

impl Kernel for SineCoords {
    fn label(&self) -> &'static str {
        "sine_embed_coords"
    }
    fn shader(&self) -> Shader {
        COORDS
    }
    fn params(&self) -> Params {
        Params::new().u(self.values * self.f).u(self.f).f(self.scale)
    }
    fn workgroups(&self) -> [u32; 3] {
        grid_1d((self.values * self.f).div_ceil(256))
    }
    /// The CPU backend: the twin's computation, runs of rows over the pool.
    fn cpu_fast(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]], _: Option<&super::Prepared>) {
        const ROWS_PER_TASK: usize = 64;
        let (v, dim_t) = (inputs[0], inputs[1]);
        super::pool::for_each_chunk(&mut outputs[0][..self.values * self.f], ROWS_PER_TASK * self.f, |t, rows| {
            self.rows(&v[t * ROWS_PER_TASK..], dim_t, rows)
        });
    }

    fn cpu(&self, inputs: &[&[f32]], outputs: &mut [&mut [f32]]) {
        self.rows(inputs[0], inputs[1], &mut outputs[0][..self.values * self.f]);
    }
}

impl SineCoords {
    /// The embedding rows `y` of the coordinates `v` (one per row).
    fn rows(&self, v: &[f32], dim_t: &[f32], y: &mut [f32]) {
        for (row, &c) in y.chunks_exact_mut(self.f).zip(v) {
            let a = c * self.scale;
            for (k, out) in row.iter_mut().enumerate() {
                *out = sin_or_cos(k, a / dim_t[k]);
            }
        }
    }
}

fn check_feats(f: usize, op: &str) -> Result<()> {
    if f == 0 || !f.is_multiple_of(2) {
        return Err(Error::Graph(format!("{op}: number of features must be even and positive, got {f}")));
    }
    Ok(())
}

/// DETR `PositionEmbeddingSine` (1-D) from a padding `mask (B, L)` (1 = valid; the cumsum uses the
/// mask values as given) → `(B, L, F)`, sin at even and cos at odd features. Valid position t of
/// an end-padded row gets `2π(t+1)/(n+1e-6)`, padded positions repeat the last value; a fully
/// masked row gives x = 0, i.e. `(0, 1, 0, 1, …)`.
pub fn sine_position_from_mask(g: &mut Graph, mask: TensorId, cfg: SineConfig) -> Result<TensorId> {
    let shape = g.shape(mask).to_vec();
    let [b, l] = shape[..] else {
        return Err(Error::Graph(format!("sine_position_from_mask: mask of shape {shape:?}; (B, L) expected")));
    };
    check_feats(cfg.num_feats, "sine_position_from_mask")?;
    if l == 0 {
        return Err(Error::Graph("sine_position_from_mask: empty mask rows".into()));
    }
    let table = g.constant(Arc::from(dim_t(cfg.num_feats, cfg.temperature)), &[cfg.num_feats])?;
    Ok(g.push1(SineFromMask { b, l, cfg }, &[Some(mask), Some(table)], vec![b, l, cfg.num_feats]))
}

/// DAB-DETR sine embedding of coordinates: `v (…, C)` → `(…, C·F)` with
/// `y[…, c·F + k] = sin/cos((v[…, c]·scale) / temperature^(2⌊k/2⌋/F))`, sin at even k, cos at odd
/// k, coordinates concatenated in their order. The four models: F = 128, T = 10000 (SG-DETR:
/// `pos_temp`), scale 2π, `v = (center, width)` → `[e(center) | e(width)]`.
pub fn sine_embed_coords(g: &mut Graph, v: TensorId, f: usize, temperature: f32, scale: f32) -> Result<TensorId> {
    let shape = g.shape(v).to_vec();
    let Some(&c) = shape.last() else {
        return Err(Error::Graph("sine_embed_coords: scalar input; (…, C) expected".into()));
    };
    check_feats(f, "sine_embed_coords")?;
    let values = shape.iter().product();
    let mut out = shape.clone();
    *out.last_mut().unwrap() = c * f;
    let table = g.constant(Arc::from(dim_t(f, temperature)), &[f])?;
    Ok(g.push1(SineCoords { values, f, scale }, &[Some(v), Some(table)], out))
}
