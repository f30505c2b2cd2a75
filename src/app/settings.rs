//! The app's own settings (recent catalogues, review and cache preferences), kept as a small
//! JSON file in `data_dir()`. The catalogue itself holds everything about the animals.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::base::vocabulary::Hundredths;

/// How many recent catalogues the File menu remembers.
pub const RECENT_LIMIT: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Most recent first; the first one is opened at start.
    pub recent: Vec<PathBuf>,
    /// Similarity below which a match is flagged as a possible new individual.
    pub new_individual_threshold: f32,
    /// The thumbnail cache on disk is trimmed to this size at start.
    pub thumbnail_cache_mb: u64,
    /// After a box is verified or rejected, move on to the next box to review.
    pub advance_after_review: bool,
    /// Detector proposals (unreviewed) scoring under this are hidden (Annotate's slider).
    pub proposal_threshold: f64,
    /// Identify offers crops that are unreviewed detector proposals too (those shown at the threshold).
    pub identify_proposals: bool,
    /// Where embeddings run: "auto" (CUDA when built with it), "cpu" or "cuda". Training runs
    /// on the CPU (on cached tokens).
    pub device: String,
    /// The key of the embeddings last used (backbone, size, head), for the record; which
    /// backbone and head are used is the catalogue's own setting (Settings > Model, or Train).
    pub model: String,
    /// Milliseconds per crop of each backbone's last embedding run in this app, by the name
    /// its keys start with (`efficientnet_lite0`): the speed Settings shows beside each.
    pub embed_ms_per_crop: std::collections::BTreeMap<String, f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            recent: Vec::new(),
            new_individual_threshold: 0.5,
            thumbnail_cache_mb: 512,
            advance_after_review: true,
            proposal_threshold: 0.0,
            identify_proposals: false,
            device: "auto".into(),
            model: String::new(),
            embed_ms_per_crop: Default::default(),
        }
    }
}

/// A setting a panel or a job changes (the others are changed in the Settings window).
#[derive(Debug, Clone, PartialEq)]
pub enum SettingChange {
    /// Annotate's slider: unreviewed proposals scoring under it are hidden.
    ProposalThreshold(f64),
    /// Identify's filter: offer unreviewed proposals too.
    IdentifyProposals(bool),
    /// An embedding run's speed: the backbone's name and milliseconds per crop.
    EmbedSpeed(String, f64),
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("settings {path} are damaged ({source}); defaults are used until they are saved again")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot save settings to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Settings {
    pub fn file(home: &Path) -> PathBuf {
        home.join("settings.json")
    }

    /// The saved settings; defaults when there are none yet. A damaged file gives defaults
    /// and the error, so the app can say so and still start.
    pub fn load(home: &Path) -> (Settings, Option<SettingsError>) {
        let path = Self::file(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Settings::default(), None),
            Err(source) => return (Settings::default(), Some(SettingsError::Read { path, source })),
        };
        match serde_json::from_str(&text) {
            Ok(s) => (s, None),
            Err(source) => (Settings::default(), Some(SettingsError::Parse { path, source })),
        }
    }

    /// Writes atomically (a temporary file renamed over the old one).
    pub fn save(&self, home: &Path) -> Result<(), SettingsError> {
        let path = Self::file(home);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(home)?;
            let tmp = path.with_extension("json.tmp");
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| SettingsError::Write { path: path.clone(), source })
    }

    /// Puts `catalogue` first in the recent list.
    pub fn remember(&mut self, catalogue: &Path) {
        let path = catalogue.canonicalize().unwrap_or_else(|_| catalogue.to_path_buf());
        self.recent.retain(|p| p != &path);
        self.recent.insert(0, path);
        self.recent.truncate(RECENT_LIMIT);
    }

    pub fn change(&mut self, change: SettingChange) {
        match change {
            SettingChange::ProposalThreshold(t) => self.proposal_threshold = t.clamp(0.0, 1.0),
            SettingChange::IdentifyProposals(on) => self.identify_proposals = on,
            SettingChange::EmbedSpeed(backbone, ms) if ms.is_finite() && ms > 0.0 => {
                self.embed_ms_per_crop.insert(backbone, ms);
            }
            SettingChange::EmbedSpeed(..) => {}
        }
    }

    /// The proposal threshold, in the hundredths it is shown and compared in.
    pub fn proposal_threshold(&self) -> Hundredths {
        Hundredths::nearest(self.proposal_threshold)
    }

    /// The catalogue to open at start: the most recent one that still exists.
    pub fn last_catalogue(&self) -> Option<&Path> {
        self.recent.iter().map(PathBuf::as_path).find(|p| p.is_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_recent_catalogues_stay_unique_and_ordered() {
        let home = tempfile::tempdir().unwrap();
        let (mut s, err) = Settings::load(home.path());
        assert!(err.is_none());
        assert_eq!(s, Settings::default());
        let a = home.path().join("a.whaleid");
        let b = home.path().join("b.whaleid");
        std::fs::write(&a, b"").unwrap();
        std::fs::write(&b, b"").unwrap();
        s.remember(&a);
        s.remember(&b);
        s.remember(&a);
        s.save(home.path()).unwrap();
        let (loaded, err) = Settings::load(home.path());
        assert!(err.is_none());
        assert_eq!(loaded.recent.len(), 2);
        assert!(loaded.recent[0].ends_with("a.whaleid"));
        std::fs::remove_file(&a).unwrap();
        assert!(loaded.last_catalogue().unwrap().ends_with("b.whaleid"));
    }

    #[test]
    fn damaged_settings_give_defaults_and_say_so() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(Settings::file(home.path()), "{ not json").unwrap();
        let (s, err) = Settings::load(home.path());
        assert_eq!(s, Settings::default());
        assert!(err.unwrap().to_string().contains("damaged"));
    }
}
