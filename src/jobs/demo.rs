//! The demo catalogue: synthetic humpbacks that the app opens on first run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::import::ImportOptions;
use crate::base::paths::data_dir;
use crate::base::progress::Progress;
use crate::base::vocabulary::Part;
use crate::catalogue::Catalogue;

/// The demo catalogue's size and seed: small enough to create in seconds.
pub const DEMO_INDIVIDUALS: usize = 30;
pub const DEMO_PHOTOS_PER_INDIVIDUAL: usize = 6;
pub const DEMO_SEED: u64 = 2026;

pub fn demo_catalogue_path() -> PathBuf {
    data_dir().join("demo").join("demo.whaleid")
}

/// Creates the demo catalogue (synthetic photos beside it) unless it is already complete.
/// Interrupted creation is finished by the next call: rendering is deterministic and the
/// import skips what is already there.
pub fn ensure_demo(path: &Path, progress: &dyn Progress) -> anyhow::Result<()> {
    let expected = (DEMO_INDIVIDUALS * DEMO_PHOTOS_PER_INDIVIDUAL) as i64;
    if path.exists() {
        let cat = Catalogue::open(path)?;
        if crate::catalogue::stats::stats(&cat)?.photos >= expected {
            return Ok(());
        }
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).with_context(|| format!("cannot create {}", photos.display()))?;
    let opts = super::synth::SynthOptions::new(&photos, DEMO_INDIVIDUALS, DEMO_PHOTOS_PER_INDIVIDUAL, DEMO_SEED);
    progress.stage("rendering demo whales", expected as u64);
    super::synth::generate(&opts, &|| progress.advance(1))?;
    let mut cat = Catalogue::open_or_create(path)?;
    let import =
        ImportOptions { part: Some(Part::Fluke), species: Some("humpback_whale".into()), ..Default::default() };
    super::import::import(&mut cat, &photos, &import, progress)?;
    Ok(())
}
