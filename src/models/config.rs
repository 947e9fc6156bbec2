//! Reading a model config: the JSON object in a weights file's metadata, with the official
//! option names. Wrong types are errors naming the field; absent options take the official
//! defaults the caller gives.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::Weights;

pub(crate) struct Config<'a> {
    path: PathBuf,
    value: &'a Value,
}

impl<'a> Config<'a> {
    pub fn new(path: &Path, value: &'a Value) -> Result<Self> {
        if !value.is_object() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                reason: "the file has no `config` metadata (a JSON object with the official options and `model`); convert the checkpoint with `moment convert`".into(),
            });
        }
        Ok(Config { path: path.to_path_buf(), value })
    }

    fn error(&self, reason: String) -> Error {
        Error::Config { path: self.path.clone(), reason }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.value.get(key).filter(|v| !v.is_null())
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.error(format!("`{key}` = {v} is not a non-negative integer"))),
        }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.usize(key, 0).map(Some),
        }
    }

    pub fn f32(&self, key: &str, default: f32) -> Result<f32> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.error(format!("`{key}` = {v} is not a number"))),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.error(format!("`{key}` = {v} is not true/false"))),
        }
    }

    pub fn str(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_str().ok_or_else(|| self.error(format!("`{key}` = {v} is not a string"))),
        }
    }

    /// Fails with a message naming `key` unless `ok`.
    pub fn require(&self, ok: bool, key: &str, why: &str) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.error(format!("`{key}`: {why}")))
        }
    }

    /// The options the official Moment-DETR-family code only implements one way.
    pub fn require_official_detr_options(&self) -> Result<()> {
        self.require(
            self.str("position_embedding", "sine")? == "sine",
            "position_embedding",
            "only `sine` exists in the official code",
        )?;
        self.require(
            !self.bool("use_txt_pos", false)?,
            "use_txt_pos",
            "text position embeddings are not used by the official models",
        )?;
        self.require(
            self.str("span_loss_type", "l1")? == "l1",
            "span_loss_type",
            "only `l1` (center, width) spans are supported",
        )
    }

    /// Video input widths from `ctx_mode`, `v_feat_dim` and `a_feat_dim`. An official opt.json
    /// counts `v_feat_dim` without the 2 TEF dims, the options pickled in a checkpoint with them:
    /// the width of `first_key` (the first layer's input) in the weights decides
    /// (specs/README.md).
    pub fn video_widths(&self, weights: &Weights, first_key: &str) -> Result<VideoWidths> {
        let ctx_mode = self.str("ctx_mode", "video_tef")?;
        let tef = ctx_mode.contains("tef");
        let mut feature_width = if ctx_mode.contains("video") { self.usize("v_feat_dim", 2816)? } else { 0 };
        let audio = self.opt_usize("a_feat_dim")?.unwrap_or(0);
        let first = weights.get_any(first_key)?;
        let width_with = |v: usize| v + if tef { 2 } else { 0 } + audio;
        if tef && feature_width >= 2 && first.shape == [width_with(feature_width) - 2] {
            feature_width -= 2;
        }
        Ok(VideoWidths { tef, feature_width, audio, video_width: width_with(feature_width) })
    }
}

/// What [`Config::video_widths`] decides.
pub(crate) struct VideoWidths {
    /// The 2 temporal endpoint features are appended to every clip.
    pub tef: bool,
    /// Summed width of the video feature sources, without TEF.
    pub feature_width: usize,
    /// Width of the audio features (0: none).
    pub audio: usize,
    /// Width of one model-ready clip row.
    pub video_width: usize,
}
