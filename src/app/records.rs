//! What the panels show, read from the catalogue on the catalogue worker: a row per photo for
//! the library, a row per individual, a row per crop (each one query, in `catalogue::rows`),
//! one photo with its boxes, one individual's sightings.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use crate::base::vocabulary::How;
pub use crate::catalogue::individual_label;
pub use crate::catalogue::rows::{
    CropInfo, IndividualRow, PhotoRow, crop_infos, individual_rows, photo_rows, photo_rows_of,
};
use crate::catalogue::{Annotation, Catalogue, Individual, Photo, Result};

/// An annotation with the individual it shows, as the annotate panel lists it.
#[derive(Debug, Clone)]
pub struct BoxRecord {
    pub annotation: Annotation,
    pub individual: Option<Individual>,
    pub how: Option<How>,
}

/// One photo with its boxes: what the annotate panel edits.
#[derive(Debug, Clone)]
pub struct PhotoDetail {
    pub photo: Photo,
    pub file: PathBuf,
    pub boxes: Vec<BoxRecord>,
    pub tags: Vec<String>,
}

pub fn photo_detail(cat: &Catalogue, photo: PhotoId) -> Result<Option<PhotoDetail>> {
    let Some(p) = cat.photo(photo)? else { return Ok(None) };
    let mut boxes = Vec::new();
    for a in cat.annotations_of_photo(photo)? {
        let ident = cat.identification(a.id)?;
        let individual = match &ident {
            Some(i) => cat.individual(i.individual_id)?,
            None => None,
        };
        boxes.push(BoxRecord { annotation: a, individual, how: ident.map(|i| i.how) });
    }
    let tags = cat.photo_tags(photo)?;
    Ok(Some(PhotoDetail { file: cat.photo_file(&p.stored_path), photo: p, boxes, tags }))
}

/// One crop of an individual, with where and when it was taken.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub annotation: Annotation,
    pub photo: Photo,
    pub file: PathBuf,
}

/// One individual and its sightings, oldest first: what the individuals panel shows.
#[derive(Debug, Clone)]
pub struct SightingHistory {
    pub individual: Individual,
    pub sightings: Vec<Sighting>,
}

impl SightingHistory {
    /// The distinct days it was seen, oldest first.
    pub fn dates(&self) -> Vec<String> {
        let days: BTreeSet<String> = self
            .sightings
            .iter()
            .filter_map(|s| s.photo.facts.taken_at.as_deref()?.get(..10).map(str::to_string))
            .collect();
        days.into_iter().collect()
    }
}

pub fn gallery(cat: &Catalogue, individual: IndividualId) -> Result<Option<SightingHistory>> {
    let Some(ind) = cat.individual(individual)? else { return Ok(None) };
    let mut sightings = Vec::new();
    for a in cat.sightings(individual)? {
        if let Some(photo) = cat.photo(a.photo_id)? {
            sightings.push(Sighting { file: cat.photo_file(&photo.stored_path), photo, annotation: a });
        }
    }
    sightings.sort_by(|a, b| {
        a.photo.facts.taken_at.cmp(&b.photo.facts.taken_at).then(a.annotation.id.cmp(&b.annotation.id))
    });
    Ok(Some(SightingHistory { individual: ind, sightings }))
}

/// The photos some annotations belong to (before an edit that may delete them).
pub fn photos_of_annotations(cat: &Catalogue, annotations: &[AnnotationId]) -> Result<BTreeSet<PhotoId>> {
    let mut out = BTreeSet::new();
    for &a in annotations {
        if let Some(ann) = cat.annotation(a)? {
            out.insert(ann.photo_id);
        }
    }
    Ok(out)
}

/// The annotations of some photos, for edits that act on whole photos.
pub fn annotations_of_photos(cat: &Catalogue, photos: &[PhotoId]) -> Result<Vec<Annotation>> {
    let mut out = Vec::new();
    for &p in photos {
        out.extend(cat.annotations_of_photo(p)?);
    }
    Ok(out)
}
