//! The individual's sighting history: survey days and where it was photographed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::seeds::{STREAM_SURVEY, rng_for};

/// Six sampling occasions across one season.
pub(super) const SURVEY_DAYS: [&str; 6] =
    ["2024:06:14", "2024:07:02", "2024:07:19", "2024:08:06", "2024:08:24", "2024:09:11"];
/// Stellwagen Bank, Gulf of Maine.
const SURVEY_SITE: (f64, f64) = (42.35, -70.30);

#[derive(Clone, Debug)]
pub(super) struct Sighting {
    pub(super) day: usize,
    pub(super) start_seconds: u32,
    pub(super) latitude: f64,
    pub(super) longitude: f64,
}

/// When and where one photo was taken.
#[derive(Clone, Debug)]
pub(super) struct Capture {
    /// EXIF format, `YYYY:MM:DD HH:MM:SS`.
    pub(super) timestamp: String,
    pub(super) latitude: f64,
    pub(super) longitude: f64,
}

fn survey_day_position(seed: u64, day: usize) -> (f64, f64) {
    let mut rng = rng_for(&[seed, STREAM_SURVEY, day as u64]);
    (SURVEY_SITE.0 + rng.random_range(-0.08..0.08), SURVEY_SITE.1 + rng.random_range(-0.12..0.12))
}

pub(super) fn random_sightings(seed: u64, rng: &mut ChaCha8Rng) -> Vec<Sighting> {
    let count = [1, 1, 2, 2, 2, 3, 3, 4][rng.random_range(0..8)];
    let mut days: Vec<usize> = (0..SURVEY_DAYS.len()).collect();
    for i in 0..count {
        let j = rng.random_range(i..days.len());
        days.swap(i, j);
    }
    days.truncate(count);
    days.sort_unstable();
    days.into_iter()
        .map(|day| {
            let (lat, lon) = survey_day_position(seed, day);
            Sighting {
                day,
                start_seconds: rng.random_range(7 * 3600..17 * 3600),
                latitude: lat + rng.random_range(-0.03..0.03),
                longitude: lon + rng.random_range(-0.04..0.04),
            }
        })
        .collect()
}
