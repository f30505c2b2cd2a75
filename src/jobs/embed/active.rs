//! The catalogue's active model: the trained head (pooling + neck) that `embed`, `search`,
//! `eval`, `submit` and the app use for this catalogue unless told otherwise.
//!
//! It is a catalogue setting, so activating a model is an undoable edit like any other. The
//! embedder's key changes with the head, so every embedding made with another model counts
//! as missing and is recomputed by the next embedding job; the old rows stay in the
//! catalogue (switching back costs nothing).

use std::path::{Path, PathBuf};

use crate::catalogue::{Catalogue, CatalogueError};
use crate::models::{DeviceChoice, EmbedderSpec, KnownModel};

/// The setting that holds the active head's path (empty: the untrained head).
pub const ACTIVE_HEAD_SETTING: &str = "active_head";

/// The active head's file, if one was activated.
pub fn active_head(cat: &Catalogue) -> Result<Option<PathBuf>, CatalogueError> {
    Ok(cat.setting(ACTIVE_HEAD_SETTING)?.filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// Makes `head` (a `head.safetensors` written by training) the catalogue's model, or goes
/// back to the untrained head with `None`. The file must exist; its absolute path is stored.
pub fn set_active_head(cat: &mut Catalogue, head: Option<&Path>) -> anyhow::Result<()> {
    let value = match head {
        Some(path) => {
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot use it as the active model: {e}", path.display()))?;
            if !absolute.is_file() {
                anyhow::bail!("{}: not a file (expected a head.safetensors written by training)", path.display());
            }
            crate::models::FileKind::check(&absolute, crate::models::FileKind::Head)?;
            absolute.to_string_lossy().into_owned()
        }
        None => String::new(),
    };
    cat.set_setting(ACTIVE_HEAD_SETTING, &value)?;
    Ok(())
}

/// The head to use: the one asked for, else the catalogue's active one. An active head whose
/// file has gone is an error that says how to fix it, never a silent switch of model.
pub fn choose_head(asked: Option<&Path>, cat: Option<&Catalogue>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = asked {
        return Ok(Some(path.to_path_buf()));
    }
    let Some(cat) = cat else { return Ok(None) };
    match active_head(cat)? {
        Some(path) if !path.is_file() => anyhow::bail!(
            "the catalogue's active model {} is missing: put it back, or run `whaleid models activate --catalog {} --none`",
            path.display(),
            cat.path().display()
        ),
        chosen => Ok(chosen),
    }
}

/// What `--model` names: a file where one is there, else a fetched model by name
/// (`efficientnet-lite0`: its weights in the models folder), else the path as given.
pub fn resolve_model(asked: &Path) -> PathBuf {
    if asked.exists() {
        return asked.to_path_buf();
    }
    match asked.to_str().and_then(KnownModel::parse) {
        Some(model) => model.weights_path(&crate::models::default_dir()),
        None => asked.to_path_buf(),
    }
}

/// The embedder spec for work on `cat`: backbone weights (default: the models folder's
/// DINOv2), and the head asked for or else the catalogue's active one. Missing weights are an
/// error that says how to fetch them.
pub fn spec_for(
    cat: Option<&Catalogue>,
    weights: Option<PathBuf>,
    neck: Option<&Path>,
    device: DeviceChoice,
    size: u32,
) -> anyhow::Result<EmbedderSpec> {
    let dir = crate::models::default_dir();
    let weights = weights.unwrap_or_else(|| crate::models::dinov2_safetensors_path(&dir));
    if !weights.exists() {
        let stem = weights.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        match KnownModel::parse(stem).filter(|m| m.efficientnet().is_some()) {
            Some(model) => anyhow::bail!(
                "no backbone weights at {}: run `whaleid models fetch --model {}`",
                weights.display(),
                model.label()
            ),
            None => anyhow::bail!(
                "no backbone weights at {}: run `whaleid models fetch`\n{}",
                weights.display(),
                crate::models::manual_download_help(&dir)
            ),
        }
    }
    Ok(EmbedderSpec { weights, neck: choose_head(neck, cat)?, device, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_stored_undoable_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
        assert_eq!(choose_head(None, Some(&cat)).unwrap(), None);

        let head = dir.path().join("head.safetensors");
        let t = candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        safetensors::serialize_to_file(
            [("neck.linear.bias", &t)],
            Some(crate::models::FileKind::Head.metadata()),
            &head,
        )
        .unwrap();
        let state = dir.path().join("train_state.safetensors");
        safetensors::serialize_to_file([("x", &t)], Some(crate::models::FileKind::TrainState.metadata()), &state)
            .unwrap();
        let err = set_active_head(&mut cat, Some(&state)).unwrap_err().to_string();
        assert!(err.contains("train_state.safetensors") && err.contains("a training state"), "{err}");
        assert_eq!(active_head(&cat).unwrap(), None, "a training state is not activated");
        set_active_head(&mut cat, Some(&head)).unwrap();
        let chosen = choose_head(None, Some(&cat)).unwrap().unwrap();
        assert_eq!(chosen, std::fs::canonicalize(&head).unwrap());
        // An explicit head wins over the active one.
        let other = dir.path().join("other.safetensors");
        assert_eq!(choose_head(Some(&other), Some(&cat)).unwrap(), Some(other));

        cat.undo().unwrap();
        assert_eq!(active_head(&cat).unwrap(), None);
        cat.redo().unwrap();
        std::fs::remove_file(&head).unwrap();
        let err = choose_head(None, Some(&cat)).unwrap_err().to_string();
        assert!(err.contains("is missing") && err.contains("head.safetensors"), "{err}");

        let missing = set_active_head(&mut cat, Some(&dir.path().join("nope.safetensors"))).unwrap_err();
        assert!(missing.to_string().contains("nope.safetensors"), "{missing}");
        set_active_head(&mut cat, None).unwrap();
        assert_eq!(choose_head(None, Some(&cat)).unwrap(), None);
    }
}
