//! Keeping a catalogue's embeddings up to date: missing and stale ones (the box moved, or
//! another model) are computed in batches, each batch committed as it is done, so a cancelled
//! or interrupted run keeps everything finished so far and the next run goes on from there.
//!
//! Photos are decoded and preprocessed on a second thread while the model runs, each photo
//! decoded once however many annotations it has.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use serde::Serialize;

use crate::base::ids::AnnotationId;
use crate::base::progress::Progress;
use crate::base::vocabulary::BoxPx;
use crate::catalogue::{Catalogue, CatalogueError};
use crate::models::{Embedder, prepare};

/// Why embedding a catalogue stopped (what was committed before stays).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("embedding failed: {0}")]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Crops per forward pass.
    pub batch: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self { batch: 16 }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct EmbedReport {
    pub model: String,
    pub device: String,
    pub dim: usize,
    /// Annotations that are not rejected.
    pub annotations: usize,
    /// Already up to date before this run.
    pub fresh: usize,
    pub embedded: usize,
    /// One line per crop that could not be embedded, naming its photo.
    pub problems: Vec<String>,
    pub cancelled: bool,
    pub seconds: f64,
}

impl std::fmt::Display for EmbedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: embedded {} crop(s) on the {} in {:.1} s ({} already up to date, {}-d){}",
            self.model,
            self.embedded,
            self.device,
            self.seconds,
            self.fresh,
            self.dim,
            if self.cancelled { "; cancelled" } else { "" }
        )?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// One crop to embed.
#[derive(Debug, Clone)]
pub struct Crop {
    pub annotation: AnnotationId,
    pub box_key: String,
    pub bbox: Option<BoxPx>,
    pub photo: PathBuf,
}

/// A batch ready for the model: `(annotation, box key, input)` and one problem per crop that
/// could not be prepared, naming its photo. (`T` is one input, or several views of the crop.)
pub struct Prepared<T = Vec<f32>> {
    pub inputs: Vec<(AnnotationId, String, T)>,
    pub problems: Vec<String>,
}

/// Computes every missing or stale embedding of `cat` under `embedder.key()`.
pub fn embed_catalogue(
    cat: &mut Catalogue,
    embedder: &Embedder,
    options: &EmbedOptions,
    progress: &dyn Progress,
) -> Result<EmbedReport, RefreshError> {
    let started = Instant::now();
    let states = cat.embedding_states(embedder.key())?;
    let mut report = EmbedReport {
        model: embedder.key().to_string(),
        device: embedder.device_label().to_string(),
        dim: embedder.dim(),
        annotations: states.len(),
        ..Default::default()
    };
    let work: Vec<Crop> = states
        .iter()
        .filter(|s| s.is_stale())
        .map(|s| Crop {
            annotation: s.annotation.id,
            box_key: s.annotation.box_key(),
            bbox: s.annotation.bbox,
            photo: cat.photo_file(&s.photo_path),
        })
        .collect();
    report.fresh = states.len() - work.len();
    progress.stage("embedding", work.len() as u64);
    let batch = options.batch.max(1);
    let size = embedder.size();
    let (sender, receiver) = mpsc::sync_channel::<Prepared>(2);
    std::thread::scope(|scope| -> Result<(), RefreshError> {
        let work = &work;
        scope.spawn(move || {
            for chunk in work.chunks(batch) {
                if progress.cancelled() || sender.send(prepare_batch(chunk, size)).is_err() {
                    break;
                }
            }
        });
        let mut done = 0u64;
        for prepared in receiver {
            if progress.cancelled() {
                report.cancelled = true;
                break;
            }
            let n = (prepared.inputs.len() + prepared.problems.len()) as u64;
            report.problems.extend(prepared.problems);
            if !prepared.inputs.is_empty() {
                let (keys, inputs): (Vec<(AnnotationId, String)>, Vec<Vec<f32>>) =
                    prepared.inputs.into_iter().map(|(annotation, key, input)| ((annotation, key), input)).unzip();
                let vectors = embedder.embed(&inputs)?;
                let rows: Vec<(AnnotationId, String, Vec<f32>)> = keys
                    .into_iter()
                    .zip(vectors)
                    .map(|((annotation, key), vector)| (annotation, key, vector))
                    .collect();
                cat.put_embeddings(embedder.key(), &rows)?;
                report.embedded += rows.len();
            }
            done += n;
            progress.advance(n);
            progress.committed(done, work.len() as u64);
        }
        Ok(())
    })?;
    report.cancelled |= progress.cancelled();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Decodes the batch's photos (in parallel, each once: keep a photo's crops together) and
/// prepares every crop at `size`.
pub fn prepare_batch(chunk: &[Crop], size: u32) -> Prepared {
    prepare_each(chunk, |img, crop| prepare(img, crop.bbox, size))
}

/// Decodes the batch's photos (in parallel, each once) and makes each crop's input(s) with
/// `make` from its decoded photo.
pub fn prepare_each<T: Send>(chunk: &[Crop], make: impl Fn(&image::DynamicImage, &Crop) -> T + Sync) -> Prepared<T> {
    use rayon::prelude::*;
    let mut by_photo: Vec<(&PathBuf, Vec<&Crop>)> = Vec::new();
    for w in chunk {
        match by_photo.last_mut() {
            Some((photo, items)) if *photo == &w.photo => items.push(w),
            _ => by_photo.push((&w.photo, vec![w])),
        }
    }
    let results: Vec<Result<Vec<_>, _>> = by_photo
        .par_iter()
        .map(|(photo, items)| match crate::base::photo::decode_file(photo) {
            Ok(img) => Ok(items.iter().map(|w| (w.annotation, w.box_key.clone(), make(&img, w))).collect::<Vec<_>>()),
            Err(e) => Err((format!("{}: {e}", photo.display()), items.len())),
        })
        .collect();
    let mut prepared = Prepared { inputs: Vec::new(), problems: Vec::new() };
    for r in results {
        match r {
            Ok(inputs) => prepared.inputs.extend(inputs),
            Err((problem, crops)) => {
                prepared.problems.extend(std::iter::repeat_n(problem, crops));
            }
        }
    }
    prepared
}
