//! Reading a model config: the JSON object in a weights file's metadata, with the official
//! option names. Wrong types are errors naming the field; absent options take the official
//! defaults the caller gives.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};

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
}
