//! The catalogue's active model: the trained head (pooling + neck) that `embed`, `search`,
//! `eval`, `submit` and the app use for this catalogue unless told otherwise.
//!
//! The model is a backbone (DINOv2 or an EfficientNet-Lite, by name) and a head for it; each
//! backbone keeps its own active head, so switching backbones and back finds the head again.
//! Both are catalogue settings, so activating a model is an undoable edit like any other. The
//! embedder's key changes with the model, so every embedding made with another model counts
//! as missing and is recomputed by the next embedding job; the old rows stay in the
//! catalogue (switching back costs nothing).

use std::path::{Path, PathBuf};

use crate::catalogue::{Catalogue, CatalogueError};
use crate::models::{DeviceChoice, EmbedderSpec, KnownModel};

/// The setting that holds the active backbone's name (absent: DINOv2 ViT-S/14).
pub const ACTIVE_BACKBONE_SETTING: &str = "active_backbone";
/// The setting that holds DINOv2's active head's path (empty: the untrained head); another
/// backbone's is this with `.` and the backbone's name after it.
pub const ACTIVE_HEAD_SETTING: &str = "active_head";

fn head_setting(backbone: KnownModel) -> String {
    match backbone {
        KnownModel::Dinov2Vits14 => ACTIVE_HEAD_SETTING.to_string(),
        other => format!("{ACTIVE_HEAD_SETTING}.{}", other.label()),
    }
}

/// The catalogue's backbone. A name this whaleid does not know is an error naming it.
pub fn active_backbone(cat: &Catalogue) -> anyhow::Result<KnownModel> {
    match cat.setting(ACTIVE_BACKBONE_SETTING)?.filter(|v| !v.is_empty()) {
        None => Ok(KnownModel::Dinov2Vits14),
        Some(name) => KnownModel::parse(&name).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: the catalogue's backbone {name:?} is not one this whaleid knows ({})",
                cat.path().display(),
                KnownModel::ALL.map(KnownModel::label).join(", ")
            )
        }),
    }
}

/// Makes `backbone` the catalogue's (with the head it had last, if any): one undoable edit.
pub fn set_active_backbone(cat: &mut Catalogue, backbone: KnownModel) -> anyhow::Result<()> {
    cat.edit(&format!("use the {} backbone", backbone.label()), |e| {
        e.set_setting(ACTIVE_BACKBONE_SETTING, backbone.label())
    })?;
    Ok(())
}

/// The active backbone's active head, if one was activated.
pub fn active_head(cat: &Catalogue) -> anyhow::Result<Option<PathBuf>> {
    head_of(cat, active_backbone(cat)?).map_err(Into::into)
}

/// `backbone`'s active head in this catalogue, if one was activated.
pub fn head_of(cat: &Catalogue, backbone: KnownModel) -> Result<Option<PathBuf>, CatalogueError> {
    Ok(cat.setting(&head_setting(backbone))?.filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// Makes `head` (a `head.safetensors` written by training) the catalogue's model, or goes
/// back to the untrained head with `None`. The file must exist; its absolute path is stored.
/// A head whose card names the backbone it was trained on makes that backbone active too,
/// in the same edit.
pub fn set_active_head(cat: &mut Catalogue, head: Option<&Path>) -> anyhow::Result<()> {
    let mut backbone = active_backbone(cat)?;
    let value = match head {
        Some(path) => {
            let absolute = std::fs::canonicalize(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot use it as the active model: {e}", path.display()))?;
            if !absolute.is_file() {
                anyhow::bail!("{}: not a file (expected a head.safetensors written by training)", path.display());
            }
            crate::models::FileKind::check(&absolute, crate::models::FileKind::Head)?;
            if let Some(trained_on) = crate::models::head_backbone(&absolute).as_deref().and_then(KnownModel::parse) {
                backbone = trained_on;
            }
            absolute.to_string_lossy().into_owned()
        }
        None => String::new(),
    };
    cat.edit(&format!("set {}", head_setting(backbone)), |e| {
        e.set_setting(&head_setting(backbone), &value)?;
        e.set_setting(ACTIVE_BACKBONE_SETTING, backbone.label())
    })?;
    Ok(())
}

/// The head to use: the one asked for, else the catalogue's active one for `backbone` (the
/// catalogue's backbone when `None`). An active head whose file has gone is an error that
/// says how to fix it, never a silent switch of model.
pub fn choose_head(
    asked: Option<&Path>,
    cat: Option<&Catalogue>,
    backbone: Option<KnownModel>,
) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = asked {
        return Ok(Some(path.to_path_buf()));
    }
    let Some(cat) = cat else { return Ok(None) };
    let backbone = match backbone {
        Some(b) => b,
        None => active_backbone(cat)?,
    };
    match head_of(cat, backbone)? {
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

/// The embedder spec for work on `cat`: the backbone weights asked for, else the catalogue's
/// backbone (DINOv2 without a catalogue) from the models folder, and the head asked for or
/// else that backbone's active one; at the size asked for, else the backbone's own. Missing
/// weights are an error that says how to fetch them.
pub fn spec_for(
    cat: Option<&Catalogue>,
    weights: Option<PathBuf>,
    neck: Option<&Path>,
    device: DeviceChoice,
    size: Option<u32>,
) -> anyhow::Result<EmbedderSpec> {
    let dir = crate::models::default_dir();
    // The backbone by name: the catalogue keeps a head for each one it knows.
    let (weights, backbone) = match (weights, cat) {
        (Some(w), _) => {
            let named = w.file_stem().and_then(|s| s.to_str()).and_then(KnownModel::parse);
            (w, named)
        }
        (None, Some(cat)) => {
            let backbone = active_backbone(cat)?;
            (backbone.weights_path(&dir), Some(backbone))
        }
        (None, None) => (crate::models::dinov2_safetensors_path(&dir), Some(KnownModel::Dinov2Vits14)),
    };
    let size = size.unwrap_or_else(|| crate::models::default_size_for(&weights));
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
    // Weights of no backbone whaleid names (a file of the user's): no catalogue head fits them.
    let head = match backbone {
        Some(b) => choose_head(neck, cat, Some(b))?,
        None => neck.map(Path::to_path_buf),
    };
    Ok(EmbedderSpec { weights, neck: head, device, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_is_stored_undoable_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
        assert_eq!(choose_head(None, Some(&cat), None).unwrap(), None);

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
        let chosen = choose_head(None, Some(&cat), None).unwrap().unwrap();
        assert_eq!(chosen, std::fs::canonicalize(&head).unwrap());
        // An explicit head wins over the active one.
        let other = dir.path().join("other.safetensors");
        assert_eq!(choose_head(Some(&other), Some(&cat), None).unwrap(), Some(other));

        cat.undo().unwrap();
        assert_eq!(active_head(&cat).unwrap(), None);
        cat.redo().unwrap();
        std::fs::remove_file(&head).unwrap();
        let err = choose_head(None, Some(&cat), None).unwrap_err().to_string();
        assert!(err.contains("is missing") && err.contains("head.safetensors"), "{err}");

        let missing = set_active_head(&mut cat, Some(&dir.path().join("nope.safetensors"))).unwrap_err();
        assert!(missing.to_string().contains("nope.safetensors"), "{missing}");
        set_active_head(&mut cat, None).unwrap();
        assert_eq!(choose_head(None, Some(&cat), None).unwrap(), None);
    }

    #[test]
    fn each_backbone_keeps_its_own_head_and_a_head_brings_its_backbone() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalogue::create(&dir.path().join("c.whaleid")).unwrap();
        assert_eq!(active_backbone(&cat).unwrap(), KnownModel::Dinov2Vits14);
        let t = candle_core::Tensor::zeros(1, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let head_for = |name: &str, backbone: &str| {
            let folder = dir.path().join(name);
            std::fs::create_dir_all(&folder).unwrap();
            let head = folder.join("head.safetensors");
            let meta = Some(crate::models::FileKind::Head.metadata());
            safetensors::serialize_to_file([("neck.linear.bias", &t)], meta, &head).unwrap();
            std::fs::write(folder.join("head.json"), format!(r#"{{"backbone": "{backbone}@224/cls+gem"}}"#)).unwrap();
            std::fs::canonicalize(head).unwrap()
        };
        let dino = head_for("a", "dinov2_vits14");
        let cnn = head_for("b", "efficientnet_lite0");
        set_active_head(&mut cat, Some(&dino)).unwrap();
        // A head trained on Lite0 makes Lite0 the backbone, in the same edit.
        set_active_head(&mut cat, Some(&cnn)).unwrap();
        assert_eq!(active_backbone(&cat).unwrap(), KnownModel::EfficientnetLite0);
        assert_eq!(active_head(&cat).unwrap(), Some(cnn.clone()));
        // Back to DINOv2: its own head again; then Lite0 with its head.
        set_active_backbone(&mut cat, KnownModel::Dinov2Vits14).unwrap();
        assert_eq!(active_head(&cat).unwrap(), Some(dino.clone()));
        cat.undo().unwrap();
        assert_eq!(
            (active_backbone(&cat).unwrap(), active_head(&cat).unwrap()),
            (KnownModel::EfficientnetLite0, Some(cnn))
        );
        cat.undo().unwrap();
        assert_eq!(
            (active_backbone(&cat).unwrap(), active_head(&cat).unwrap()),
            (KnownModel::Dinov2Vits14, Some(dino))
        );
        // An explicit backbone's weights get that backbone's head.
        let spec = |weights: &str| {
            let w = dir.path().join(weights);
            std::fs::write(&w, b"").unwrap();
            spec_for(Some(&cat), Some(w), None, DeviceChoice::Cpu, None).unwrap()
        };
        assert_eq!(spec("efficientnet_lite0.safetensors").neck, None);
        assert_eq!(spec("efficientnet_lite0.safetensors").size, 224);
        assert_eq!(spec("efficientnet_lite2.safetensors").size, 260);
        assert!(spec("dinov2_vits14.safetensors").neck.is_some());
        assert_eq!(spec("my_own_backbone.safetensors").neck, None, "no catalogue head fits an unknown backbone");

        cat.set_setting(ACTIVE_BACKBONE_SETTING, "resnet-50").unwrap();
        let err = active_backbone(&cat).unwrap_err().to_string();
        assert!(
            err.contains("\"resnet-50\"") && err.contains("c.whaleid") && err.contains("efficientnet-lite0"),
            "{err}"
        );
    }
}
