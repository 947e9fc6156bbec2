//! Feature files: `.npy`, `.npz` (official layouts: `features` for video, `last_hidden_state` for
//! text) and `.safetensors`, read into f32 arrays with errors naming the file and the problem.

use std::path::Path;

use crate::error::{Error, Result};

/// A dense row-major f32 array read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Array {
    /// Rows × width view of a rank-2 array (a rank-1 array is one row).
    pub fn rows_and_width(&self) -> Option<(usize, usize)> {
        match *self.shape.as_slice() {
            [w] => Some((1, w)),
            [r, w] => Some((r, w)),
            _ => None,
        }
    }
}

fn features_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Features { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads one array. For `.npz` and `.safetensors`, `key` names the entry; without it the first
/// of `default_keys` present is used, else the file's only entry.
pub fn read_array(path: impl AsRef<Path>, key: Option<&str>, default_keys: &[&str]) -> Result<Array> {
    let path = path.as_ref();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "npy" => {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            let npy = npyz::NpyFile::new(std::io::BufReader::new(file))
                .map_err(|e| features_error(path, format!("not a readable .npy file: {e}")))?;
            npy_to_array(path, npy)
        }
        "npz" => {
            let mut archive = npyz::npz::NpzArchive::open(path)
                .map_err(|e| features_error(path, format!("not a readable .npz file: {e}")))?;
            let names: Vec<String> = archive.array_names().map(str::to_string).collect();
            let name = pick_key(path, key, default_keys, &names)?;
            let npy = archive
                .by_name(&name)
                .map_err(|e| features_error(path, format!("entry `{name}`: {e}")))?
                .ok_or_else(|| features_error(path, format!("no entry `{name}`")))?;
            npy_to_array(path, npy)
        }
        "safetensors" => {
            let weights = crate::weights::Weights::load(path)?;
            let names: Vec<String> = weights.keys().map(str::to_string).collect();
            let name = pick_key(path, key, default_keys, &names)?;
            let t = weights.get_any(&name)?;
            Ok(Array { shape: t.shape.clone(), data: t.data.to_vec() })
        }
        _ => Err(features_error(path, "unknown feature file type: use .npy, .npz or .safetensors")),
    }
}

fn pick_key(path: &Path, key: Option<&str>, default_keys: &[&str], names: &[String]) -> Result<String> {
    if let Some(k) = key {
        return if names.iter().any(|n| n == k) {
            Ok(k.to_string())
        } else {
            Err(features_error(path, format!("no entry `{k}` (entries: {})", names.join(", "))))
        };
    }
    if let Some(k) = default_keys.iter().find(|k| names.iter().any(|n| n == *k)) {
        return Ok(k.to_string());
    }
    match names {
        [only] => Ok(only.clone()),
        _ => Err(features_error(
            path,
            format!(
                "none of the expected entries {default_keys:?}; entries: {} (name one with --video-key/--query-key)",
                names.join(", ")
            ),
        )),
    }
}

fn npy_to_array<R: std::io::Read>(path: &Path, npy: npyz::NpyFile<R>) -> Result<Array> {
    if npy.order() == npyz::Order::Fortran {
        return Err(features_error(path, "Fortran-ordered array: save it C-ordered (np.ascontiguousarray)"));
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let descr = npy.dtype().descr();
    let data: Vec<f32> = match descr.trim_matches('\'') {
        "<f4" => npy.into_vec::<f32>().map_err(|e| features_error(path, e.to_string()))?,
        "<f8" => npy
            .into_vec::<f64>()
            .map_err(|e| features_error(path, e.to_string()))?
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        "<f2" => npy
            .into_vec::<half::f16>()
            .map_err(|e| features_error(path, e.to_string()))?
            .into_iter()
            .map(half::f16::to_f32)
            .collect(),
        other => return Err(features_error(path, format!("dtype {other} is not a float array (need float16/32/64)"))),
    };
    Ok(Array { shape, data })
}
