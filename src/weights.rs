//! Weights: a safetensors file whose tensor names are the official PyTorch state_dict keys and
//! whose metadata holds the model config as a JSON string under `config`. F32, F16, BF16 and
//! F64 tensors load (converted to f32 once, at load), and so do integer tensors (I64, I32:
//! counters and pointers such as BatchNorm's `num_batches_tracked`; exact up to 2^24); every
//! problem names the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// One named tensor, f32, row-major.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Arc<[f32]>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data: data.into() }
    }
}

/// The tensors and config of one weights file.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    config: serde_json::Value,
}

impl Weights {
    /// Reads and checks a whole safetensors file.
    pub fn load(path: impl AsRef<Path>) -> Result<Weights> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Weights::from_bytes(path, &bytes)
    }

    /// Parses safetensors bytes; `path` is only used to name the file in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Weights> {
        let path = path.as_ref().to_path_buf();
        let bad = |reason: String| Error::BadWeightsFile { path: path.clone(), reason };
        if bytes.starts_with(b"version https://git-lfs") {
            return Err(bad("this is a Git LFS pointer, not the weights: fetch the real file (git lfs pull)".into()));
        }
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("{e}")))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("{e}")))?;
        let config = match metadata.metadata().as_ref().and_then(|m| m.get("config")) {
            Some(text) => serde_json::from_str(text).map_err(|e| Error::Config {
                path: path.clone(),
                reason: format!("metadata `config` is not valid JSON: {e}"),
            })?,
            None => serde_json::Value::Null,
        };
        let mut tensors = BTreeMap::new();
        for (key, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                // Buffers some checkpoints keep in double precision (SG-DETR's ATSS anchors).
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                    .collect(),
                Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32).collect(),
                other => return Err(Error::UnsupportedDtype { path: path.clone(), key, dtype: format!("{other:?}") }),
            };
            tensors.insert(key, Tensor::new(view.shape().to_vec(), data));
        }
        Ok(Weights { path, tensors, config })
    }

    /// The config JSON from the file's metadata (`null` when the file has none).
    pub fn config(&self) -> &serde_json::Value {
        &self.config
    }

    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor `key`, which must have exactly `shape`.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.get_any(key)?;
        if t.shape != shape {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                key: key.into(),
                expected: shape.to_vec(),
                found: t.shape.clone(),
            });
        }
        Ok(t)
    }

    /// The tensor `key`, whatever its shape.
    pub fn get_any(&self, key: &str) -> Result<&Tensor> {
        self.tensors.get(key).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            key: key.into(),
            hint: self.near_miss(key),
        })
    }

    /// Checks every expected key and shape at once, so one error lists every missing key, then
    /// every mis-shaped one, rather than the first problem only.
    pub fn check(&self, expected: &[(String, Vec<usize>)]) -> Result<()> {
        let missing: Vec<&str> = expected.iter().filter(|(k, _)| !self.contains(k)).map(|(k, _)| k.as_str()).collect();
        if !missing.is_empty() {
            let hint = if missing.len() > 1 {
                format!(" (and {} more: {})", missing.len() - 1, missing[1..].join(", "))
            } else {
                self.near_miss(missing[0])
            };
            return Err(Error::MissingTensor { path: self.path.clone(), key: missing[0].into(), hint });
        }
        for (key, shape) in expected {
            self.get(key, shape)?;
        }
        Ok(())
    }

    /// The same file restricted to the tensors whose key passes `keep` (the tensor data is shared,
    /// not copied): a model keeps only what it uses, so dropped tensors are freed with the file.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Weights {
        let tensors = self.tensors.iter().filter(|(k, _)| keep(k)).map(|(k, t)| (k.clone(), t.clone())).collect();
        Weights { path: self.path.clone(), tensors, config: self.config.clone() }
    }

    /// Keys of the file outside `used` (for models that refuse or report unexpected tensors).
    pub fn unused<'a>(&'a self, used: &'a std::collections::HashSet<String>) -> Vec<&'a str> {
        self.keys().filter(|k| !used.contains(*k)).collect()
    }

    fn near_miss(&self, key: &str) -> String {
        let last = key.rsplit('.').next().unwrap_or(key);
        let stem = key.trim_end_matches(last);
        let similar: Vec<&str> = self.keys().filter(|k| k.starts_with(stem) && !stem.is_empty()).take(3).collect();
        if similar.is_empty() {
            String::new()
        } else {
            format!(" (the file has {})", similar.join(", "))
        }
    }
}
