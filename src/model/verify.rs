//! Whether the model's bytes are the ones its manifest describes: the `.onnx` file's sha256,
//! and the sha256 of every external weights file it names (`external_data_sha256`).

use std::path::{Path, PathBuf};

use super::ModelError;
use crate::manifest::{ConfigSource, ManifestError, ModelConfig};

/// Whether the model's files matched the sha256 values in its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The `.onnx` file and every external weights file it names.
    Verified,
    /// The `.onnx` file matched, but these external weights files have no sha256 in the
    /// manifest, so their contents are not verified.
    Partial { unverified: Vec<String> },
    /// A file had a different sha256 and `--allow-unverified` was given.
    Mismatch { file: String, expected: String },
    /// No manifest, or a manifest without a sha256.
    NoHash,
}

impl std::fmt::Display for Verification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verification::Verified => write!(f, "verified against the manifest"),
            Verification::Partial { unverified } => write!(
                f,
                "partly verified: the .onnx file matches the manifest, but its external weights ({}) have no sha256 there (add `external_data_sha256`)",
                unverified.join(", ")
            ),
            Verification::Mismatch { file, expected } => {
                write!(f, "MISMATCH ({file}: manifest says {expected}; running anyway, --allow-unverified)")
            }
            Verification::NoHash => write!(f, "not verified (no sha256 in a manifest)"),
        }
    }
}

/// Checks the `.onnx` bytes (sha256 `actual`) and the external weights files `external`
/// (locations relative to `dir`) against the manifest.
pub(super) fn verify(
    config: &ModelConfig,
    actual: &str,
    model: &Path,
    external: &[String],
    dir: Option<&Path>,
    allow: bool,
) -> Result<Verification, ModelError> {
    let Some(manifest) = config.manifest.as_ref() else {
        return Ok(Verification::NoHash);
    };
    let Some(expected) = manifest.sha256.clone() else {
        return Ok(Verification::NoHash);
    };
    let manifest_path = match &config.source {
        ConfigSource::Manifest(p) => p.clone(),
        other => PathBuf::from(other.to_string()),
    };
    let mismatch = |file: &Path, expected: String, actual: String| -> Result<Verification, ModelError> {
        if allow {
            log::warn!("{} does not match the sha256 in its manifest; running it because of --allow-unverified", file.display());
            return Ok(Verification::Mismatch { file: file.display().to_string(), expected });
        }
        Err(ManifestError::Sha256Mismatch { model: file.to_owned(), manifest: manifest_path.clone(), expected, actual }.into())
    };
    if !expected.eq_ignore_ascii_case(actual) {
        return mismatch(model, expected, actual.to_owned());
    }
    let mut unverified = Vec::new();
    for location in external {
        let Some(expected) = manifest.external_data_sha256.get(location) else {
            unverified.push(location.clone());
            continue;
        };
        let path = dir.unwrap_or(Path::new(".")).join(location);
        let bytes = std::fs::read(&path).map_err(|cause| ModelError::Unreadable { path: path.clone(), cause })?;
        let actual = crate::manifest::sha256_hex(&bytes);
        if !expected.eq_ignore_ascii_case(&actual) {
            return mismatch(&path, expected.clone(), actual);
        }
    }
    if unverified.is_empty() {
        Ok(Verification::Verified)
    } else {
        Ok(Verification::Partial { unverified })
    }
}
