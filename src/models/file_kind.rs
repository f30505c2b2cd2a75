//! What a safetensors file whaleid writes holds, said in the file itself, so that a file given
//! where another kind is expected is refused by name instead of giving bad results.
//!
//! Every writer puts one entry into the file's `__metadata__`: key [`KIND_KEY`]
//! (`whaleid.kind`), value `head`, `train-state`, `backbone` or `detector`
//! ([`FileKind::metadata`] gives the whole map: one key only, so the file stays byte-for-byte
//! reproducible). Every loader calls [`FileKind::check`] (or [`FileKind::check_bytes`] on bytes
//! it already read) with the kind it expects; the error names the file, the kind found and
//! the kind expected. A file without a kind is refused, except for backbones: users bring
//! Hugging Face safetensors, and for those the backbone's tensor-name and shape checks decide.
//! A loader that keeps more in the metadata (a detector's configuration) takes the map from
//! [`FileKind::checked_metadata`], so the header is read in one place.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The metadata key that says what a whaleid safetensors file holds.
pub const KIND_KEY: &str = "whaleid.kind";
/// The file name training gives the head it writes.
pub const HEAD_FILE: &str = "head.safetensors";
/// The file name of the card training writes beside the head (its settings, figures and the
/// backbone it was trained on): the head's own name with `.json`.
pub const HEAD_CARD_FILE: &str = "head.json";
/// The file name training gives the state it writes beside the head, for resuming.
pub const TRAIN_STATE_FILE: &str = "train_state.safetensors";

/// The kinds of safetensors files whaleid writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Pooling + neck (and any fine-tuned backbone weights): what `--neck` takes.
    Head,
    /// Every trained variable of a run, for `train --resume`.
    TrainState,
    /// Pretrained backbone weights, as `models fetch` writes them.
    Backbone,
    /// A box detector's weights.
    Detector,
}

/// Why a file is not of the kind expected. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum FileKindError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a safetensors file ({message}); expected {}", path.display(), expected.described())]
    Unreadable { path: PathBuf, expected: FileKind, message: String },
    #[error("{}: no `{KIND_KEY}` in its metadata, so not {} written by whaleid{}", path.display(), expected.described(), expected.unmarked_hint())]
    Unmarked { path: PathBuf, expected: FileKind },
    #[error("{}: {}, not {}{}", path.display(), found.described(), expected.described(), found.hint_instead_of(*expected))]
    Other { path: PathBuf, found: FileKind, expected: FileKind },
    #[error("{}: `{KIND_KEY}` is `{found}`, a kind this whaleid does not know; expected {}", path.display(), expected.described())]
    Unknown { path: PathBuf, found: String, expected: FileKind },
}

impl FileKind {
    pub const ALL: [FileKind; 4] = [Self::Head, Self::TrainState, Self::Backbone, Self::Detector];

    /// The value stored under [`KIND_KEY`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Head => "head",
            Self::TrainState => "train-state",
            Self::Backbone => "backbone",
            Self::Detector => "detector",
        }
    }

    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.label() == label)
    }

    /// What a writer puts into the file's `__metadata__`.
    pub fn metadata(self) -> HashMap<String, String> {
        HashMap::from([(KIND_KEY.to_string(), self.label().to_string())])
    }

    /// In the user's words.
    fn described(self) -> &'static str {
        match self {
            Self::Head => "a trained head",
            Self::TrainState => "a training state",
            Self::Backbone => "backbone weights",
            Self::Detector => "a detector",
        }
    }

    /// What to give instead, when a file of this kind was given where `expected` goes.
    fn hint_instead_of(self, expected: FileKind) -> String {
        match (self, expected) {
            (Self::TrainState, Self::Head) => format!(" (give the {HEAD_FILE} written beside it)"),
            (Self::Head, Self::TrainState) => format!(" (resume from the run's folder; its {TRAIN_STATE_FILE})"),
            (Self::Head, Self::Backbone) => " (a trained head goes with --neck)".into(),
            (Self::Backbone, Self::Head) => " (backbone weights go with --model)".into(),
            _ => String::new(),
        }
    }

    fn unmarked_hint(self) -> &'static str {
        match self {
            Self::Head => " (a head trained by an older whaleid: train it again)",
            Self::TrainState => " (a run of an older whaleid: start a new run)",
            Self::Backbone | Self::Detector => "",
        }
    }

    /// A safetensors file's `__metadata__` map (empty where it has none).
    fn metadata_in(bytes: &[u8], path: &Path, expected: FileKind) -> Result<HashMap<String, String>, FileKindError> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| FileKindError::Unreadable {
            path: path.to_path_buf(),
            expected,
            message: e.to_string(),
        })?;
        Ok(metadata.metadata().clone().unwrap_or_default())
    }

    /// Checks that the safetensors file at `path` is of kind `expected`.
    pub fn check(path: &Path, expected: FileKind) -> Result<(), FileKindError> {
        let bytes = std::fs::read(path).map_err(|source| FileKindError::Io { path: path.to_path_buf(), source })?;
        Self::check_bytes(&bytes, path, expected)
    }

    /// [`FileKind::check`] on the bytes of the file at `path`, already read.
    pub fn check_bytes(bytes: &[u8], path: &Path, expected: FileKind) -> Result<(), FileKindError> {
        Self::checked_metadata(bytes, path, expected).map(drop)
    }

    /// [`FileKind::check_bytes`], then the file's whole `__metadata__` map, for loaders that
    /// keep more there than the kind (a detector's configuration): the header is parsed once,
    /// here.
    pub fn checked_metadata(
        bytes: &[u8],
        path: &Path,
        expected: FileKind,
    ) -> Result<HashMap<String, String>, FileKindError> {
        let path_buf = || path.to_path_buf();
        let metadata = Self::metadata_in(bytes, path, expected)?;
        match metadata.get(KIND_KEY).map(|label| FileKind::parse(label).ok_or_else(|| label.clone())) {
            Some(Ok(found)) if found == expected => Ok(metadata),
            Some(Ok(found)) => Err(FileKindError::Other { path: path_buf(), found, expected }),
            Some(Err(found)) => Err(FileKindError::Unknown { path: path_buf(), found, expected }),
            None if expected == Self::Backbone => Ok(metadata),
            None => Err(FileKindError::Unmarked { path: path_buf(), expected }),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn write(path: &Path, metadata: Option<HashMap<String, String>>) {
        let t = Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap();
        safetensors::serialize_to_file([("neck.linear.weight", &t)], metadata, path).unwrap();
    }

    #[test]
    fn each_kind_is_accepted_where_expected_and_refused_elsewhere_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for kind in FileKind::ALL {
            let path = dir.path().join(format!("{}.safetensors", kind.label()));
            write(&path, Some(kind.metadata()));
            FileKind::check(&path, kind).unwrap();
            for other in FileKind::ALL.into_iter().filter(|o| *o != kind) {
                let err = FileKind::check(&path, other).unwrap_err().to_string();
                assert!(err.contains(&path.display().to_string()), "{err}");
                assert!(err.contains(kind.described()) && err.contains(other.described()), "{err}");
            }
        }
    }

    #[test]
    fn a_training_state_given_as_a_head_says_which_file_to_give() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TRAIN_STATE_FILE);
        write(&path, Some(FileKind::TrainState.metadata()));
        let err = FileKind::check(&path, FileKind::Head).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: a training state, not a trained head (give the head.safetensors written beside it)",
                path.display()
            )
        );
    }

    #[test]
    fn files_without_a_kind_are_refused_except_as_backbones_and_junk_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.safetensors");
        write(&plain, None);
        FileKind::check(&plain, FileKind::Backbone).unwrap();
        let err = FileKind::check(&plain, FileKind::Head).unwrap_err().to_string();
        assert!(err.contains("plain.safetensors") && err.contains("train it again"), "{err}");
        assert!(FileKind::check(&plain, FileKind::TrainState).is_err());
        assert!(FileKind::check(&plain, FileKind::Detector).is_err());

        let foreign = dir.path().join("foreign.safetensors");
        write(&foreign, Some(HashMap::from([("format".into(), "pt".into())])));
        assert!(FileKind::check(&foreign, FileKind::Head).unwrap_err().to_string().contains("foreign.safetensors"));

        let odd = dir.path().join("odd.safetensors");
        write(&odd, Some(HashMap::from([(KIND_KEY.into(), "tokens".into())])));
        let err = FileKind::check(&odd, FileKind::Backbone).unwrap_err().to_string();
        assert!(err.contains("odd.safetensors") && err.contains("`tokens`"), "{err}");

        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"random bytes, not a header").unwrap();
        for kind in FileKind::ALL {
            let err = FileKind::check(&junk, kind).unwrap_err().to_string();
            assert!(err.contains("junk.safetensors") && err.contains("not a safetensors file"), "{err}");
        }
        let missing = FileKind::check(&dir.path().join("gone.safetensors"), FileKind::Head).unwrap_err();
        assert!(missing.to_string().contains("gone.safetensors"), "{missing}");
    }
}
