//! The catalogue worker: the one thread that owns the open catalogue. It applies edits the
//! moment they arrive (each is one transaction, so nothing is lost on a crash), answers with
//! fresh records for what the panels watch, and is joined on drop so no edit in flight is
//! dropped when the window closes or another catalogue is opened.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

use eframe::egui;

use super::messages::{CatalogueEdit, EditFailure, Event, Intent, Notice};
use super::records;
use crate::base::ids::{AnnotationId, IndividualId, PhotoId};
use crate::base::vocabulary::{How, Part, Side, Source, Status, is_proposal};
use crate::catalogue::{Catalogue, CatalogueError, NewAnnotation};

/// Requests to the worker, in the order the user made them.
#[derive(Debug)]
pub enum Request {
    Edit(CatalogueEdit),
    Undo,
    Redo,
    Reload,
    WatchPhoto(Option<PhotoId>),
    WatchSightings(Option<IndividualId>),
}

pub struct CatalogueWorker {
    tx: Option<Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub path: PathBuf,
}

/// An edit that makes no sense as asked; the catalogue is left as it was.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Which records an edit may have changed.
enum Touched {
    Photos(BTreeSet<PhotoId>),
    PhotosAndIndividuals(BTreeSet<PhotoId>),
    Everything,
}

impl CatalogueWorker {
    /// Opens (or, with `create`, creates) the catalogue on a new thread; `Event::Opened` or
    /// `Event::OpenFailed` says how it went.
    pub fn start(path: PathBuf, create: bool, events: Sender<Event>, ctx: egui::Context) -> CatalogueWorker {
        let (tx, rx) = channel();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("catalogue".into())
            .spawn(move || {
                let mut worker = Worker { events, ctx, photo: None, individual: None };
                let opened = if create { Catalogue::create(&thread_path) } else { Catalogue::open(&thread_path) };
                match opened.map_err(anyhow::Error::from).and_then(|cat| {
                    let stats = crate::catalogue::stats::stats(&cat)?;
                    Ok((cat, stats))
                }) {
                    Ok((mut cat, stats)) => {
                        worker.send(Event::Opened { path: thread_path, stats: Box::new(stats) });
                        worker.reload(&cat);
                        worker.run(&mut cat, rx);
                    }
                    Err(e) => worker.send(Event::OpenFailed { path: thread_path, error: format!("{e:#}") }),
                }
            })
            .ok();
        CatalogueWorker { tx: Some(tx), thread, path }
    }

    pub fn send(&self, request: Request) {
        if let Some(tx) = &self.tx {
            // A closed channel means the catalogue failed to open; that was reported already.
            let _ = tx.send(request);
        }
    }
}

impl Drop for CatalogueWorker {
    /// Closes the request channel and waits until every edit already sent is written.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    events: Sender<Event>,
    ctx: egui::Context,
    photo: Option<PhotoId>,
    individual: Option<IndividualId>,
}

impl Worker {
    fn send(&self, event: Event) {
        let _ = self.events.send(event);
        self.ctx.request_repaint();
    }

    fn read_failed(&self, what: &str, e: impl std::fmt::Display) {
        self.send(Event::Intent(Intent::Notify(Notice::error(format!("cannot read {what}: {e}")))));
    }

    fn run(&mut self, cat: &mut Catalogue, rx: Receiver<Request>) {
        while let Ok(request) = rx.recv() {
            match request {
                Request::Edit(edit) => {
                    let label = label(&edit);
                    let mut report = None;
                    let result = apply(cat, &edit, &mut report);
                    match result {
                        Ok(touched) => {
                            if let Some(text) = report {
                                self.send(Event::Intent(Intent::Notify(Notice::info(text))));
                            }
                            self.send(Event::Edited { label, result: Ok(()) });
                            self.refresh(cat, touched);
                        }
                        Err(e) => {
                            let refused = e.downcast_ref::<Refused>().is_some()
                                || matches!(e.downcast_ref::<CatalogueError>(), Some(CatalogueError::Invalid(_)));
                            let text = format!("{e:#}");
                            let failure =
                                if refused { EditFailure::Refused(text) } else { EditFailure::NotSaved(text) };
                            self.send(Event::Edited { label, result: Err(failure) });
                            // The panels may show what they expected; show them what is stored.
                            self.refresh(cat, Touched::Everything);
                        }
                    }
                }
                Request::Undo | Request::Redo => {
                    let undo = matches!(request, Request::Undo);
                    let stepped = if undo { cat.undo() } else { cat.redo() };
                    self.send(Event::Stepped { undo, label: stepped.map_err(|e| e.to_string()) });
                    self.refresh(cat, Touched::Everything);
                }
                Request::Reload => self.reload(cat),
                Request::WatchPhoto(id) => {
                    self.photo = id;
                    self.send_photo(cat);
                }
                Request::WatchSightings(id) => {
                    self.individual = id;
                    self.send_sightings(cat);
                }
            }
        }
    }

    fn reload(&self, cat: &Catalogue) {
        self.refresh(cat, Touched::Everything);
    }

    fn refresh(&self, cat: &Catalogue, touched: Touched) {
        // Everything is read before anything is sent, and a reload travels as one event, so
        // no frame shows the new photos beside the old individuals.
        let result = (|| -> crate::catalogue::Result<()> {
            let individuals = match touched {
                Touched::Photos(_) => None,
                _ => Some(records::individual_rows(cat)?),
            };
            let history = cat.history(50)?;
            match (touched, individuals) {
                (Touched::Everything, individuals) => {
                    let rows = records::photo_rows(cat)?;
                    self.send(Event::Library { rows, individuals: individuals.unwrap_or_default() });
                }
                (Touched::Photos(ids) | Touched::PhotosAndIndividuals(ids), individuals) => {
                    let rows = records::photo_rows_of(cat, &ids)?;
                    if let Some(individuals) = individuals {
                        self.send(Event::Individuals(individuals));
                    }
                    self.send(Event::PhotoRows { ids: ids.into_iter().collect(), rows });
                }
            }
            self.send(Event::History(history));
            Ok(())
        })();
        if let Err(e) = result {
            self.read_failed("the catalogue", e);
        }
        self.send_photo(cat);
        self.send_sightings(cat);
    }

    fn send_photo(&self, cat: &Catalogue) {
        if let Some(id) = self.photo {
            match records::photo_detail(cat, id) {
                Ok(detail) => self.send(Event::Photo { id, detail: detail.map(Box::new) }),
                Err(e) => self.read_failed("the photo", e),
            }
        }
    }

    fn send_sightings(&self, cat: &Catalogue) {
        if let Some(id) = self.individual {
            match records::gallery(cat, id) {
                Ok(history) => self.send(Event::Sightings { id, history: history.map(Box::new) }),
                Err(e) => self.read_failed("the individual", e),
            }
        }
    }
}

/// The words the status bar uses for an edit.
pub fn label(edit: &CatalogueEdit) -> String {
    let boxes = |n: usize| if n == 1 { "1 box".to_string() } else { format!("{n} boxes") };
    let photos = |n: usize| if n == 1 { "1 photo".to_string() } else { format!("{n} photos") };
    let verb = |s: Status| match s {
        Status::Verified => "verified",
        Status::Rejected => "rejected",
        Status::Unreviewed => "reopened",
    };
    match edit {
        CatalogueEdit::SetStatus { annotations, status } => format!("{} {}", verb(*status), boxes(annotations.len())),
        CatalogueEdit::SetStatusOfPhotos { photos: p, status } => {
            format!("{} the boxes of {}", verb(*status), photos(p.len()))
        }
        CatalogueEdit::VerifyProposals { photos: p, at_least } => {
            format!("verified the proposals scoring {at_least} or more on {}", photos(p.len()))
        }
        CatalogueEdit::MoveBox { .. } => "moved a box".into(),
        CatalogueEdit::AddBox { part, .. } => format!("drew a {part} box"),
        CatalogueEdit::DeleteBox { .. } => "deleted a box".into(),
        CatalogueEdit::SetPartSide { part, side, .. } => format!("set part {part}, side {side}"),
        CatalogueEdit::Assign { annotations, .. } => format!("assigned {}", boxes(annotations.len())),
        CatalogueEdit::AssignPhotos { photos: p, .. } => format!("assigned {}", photos(p.len())),
        CatalogueEdit::NewIndividual { annotations, name } if name.trim().is_empty() => {
            format!("new individual from {}", boxes(annotations.len()))
        }
        CatalogueEdit::NewIndividual { annotations, name } => {
            format!("new individual \"{}\" from {}", name.trim(), boxes(annotations.len()))
        }
        CatalogueEdit::SetActiveHead(Some(head)) => format!("activated the model {}", head.display()),
        CatalogueEdit::SetActiveHead(None) => "went back to the untrained model".into(),
        CatalogueEdit::SetActiveBackbone(model) => format!("switched to the {} backbone", model.label()),
        CatalogueEdit::Rename { name, .. } => format!("renamed an individual to \"{name}\""),
        CatalogueEdit::Merge { .. } => "merged two individuals".into(),
        CatalogueEdit::Split { annotations } => format!("split {} into a new individual", boxes(annotations.len())),
        CatalogueEdit::Tag { photos: p, tag } => format!("tagged {} \"{tag}\"", photos(p.len())),
    }
}

/// Writes an edit; what it did, when that is worth a notice (how many boxes a bulk edit
/// changed), goes into `report`.
fn apply(cat: &mut Catalogue, edit: &CatalogueEdit, report: &mut Option<String>) -> anyhow::Result<Touched> {
    Ok(match edit {
        CatalogueEdit::SetStatus { annotations, status } => {
            let photos = records::photos_of_annotations(cat, annotations)?;
            cat.set_status(annotations, *status)?;
            Touched::Photos(photos)
        }
        CatalogueEdit::SetStatusOfPhotos { photos, status } => {
            let ids: Vec<AnnotationId> = records::annotations_of_photos(cat, photos)?.iter().map(|a| a.id).collect();
            if ids.is_empty() {
                return Err(Refused("the selected photos have no boxes to review".into()).into());
            }
            cat.set_status(&ids, *status)?;
            Touched::Photos(photos.iter().copied().collect())
        }
        CatalogueEdit::VerifyProposals { photos, at_least } => {
            let chosen: Vec<(AnnotationId, PhotoId)> = records::annotations_of_photos(cat, photos)?
                .iter()
                .filter(|a| is_proposal(a.source, a.status) && a.score.is_some_and(|s| at_least.reached_by(s)))
                .map(|a| (a.id, a.photo_id))
                .collect();
            if chosen.is_empty() {
                return Err(Refused(format!(
                    "no unreviewed proposal scores {at_least} or more on the {} photo(s) of the queue",
                    photos.len()
                ))
                .into());
            }
            // One action, so one undo takes every box back to unreviewed.
            cat.edit(&label(edit), |e| {
                for &(id, _) in &chosen {
                    e.verify(id)?;
                }
                Ok(())
            })?;
            let changed: BTreeSet<PhotoId> = chosen.iter().map(|&(_, p)| p).collect();
            *report = Some(format!(
                "Verified {} proposal(s) scoring {at_least} or more on {} photo(s)",
                chosen.len(),
                changed.len()
            ));
            Touched::Photos(changed)
        }
        CatalogueEdit::MoveBox { annotation, bbox } => {
            let photos = records::photos_of_annotations(cat, &[*annotation])?;
            cat.set_box(*annotation, *bbox)?;
            Touched::Photos(photos)
        }
        CatalogueEdit::AddBox { photo, bbox, part, species } => {
            cat.add_annotation(&NewAnnotation {
                photo_id: *photo,
                bbox: Some(*bbox),
                part: *part,
                side: Side::Unknown,
                source: Source::Manual,
                // The biologist drew it, so it needs no review; detector proposals arrive unreviewed.
                status: Status::Verified,
                species: species.clone(),
                score: None,
            })?;
            Touched::Photos(BTreeSet::from([*photo]))
        }
        CatalogueEdit::DeleteBox { annotation } => {
            let photos = records::photos_of_annotations(cat, &[*annotation])?;
            cat.delete_annotation(*annotation)?;
            Touched::PhotosAndIndividuals(photos)
        }
        CatalogueEdit::SetPartSide { annotation, part, side } => {
            let photos = records::photos_of_annotations(cat, &[*annotation])?;
            cat.edit(&label(edit), |e| e.set_part_side(*annotation, *part, *side))?;
            Touched::Photos(photos)
        }
        CatalogueEdit::Assign { annotations, individual } => {
            let photos = records::photos_of_annotations(cat, annotations)?;
            cat.edit(&label(edit), |e| {
                for &a in annotations {
                    e.identify(a, *individual, How::Confirmed, None)?;
                }
                Ok(())
            })?;
            Touched::PhotosAndIndividuals(photos)
        }
        CatalogueEdit::AssignPhotos { photos, individual } => {
            let existing = records::annotations_of_photos(cat, photos)?;
            let species = cat.individual(*individual)?.and_then(|i| i.species);
            let part = species.as_deref().map(Part::usual_for_species).unwrap_or(Part::Body);
            cat.edit(&label(edit), |e| {
                for &photo in photos {
                    let mut boxes: Vec<AnnotationId> = existing
                        .iter()
                        .filter(|a| a.photo_id == photo && a.status != Status::Rejected)
                        .map(|a| a.id)
                        .collect();
                    if boxes.is_empty() {
                        boxes.push(e.insert_annotation(&NewAnnotation {
                            photo_id: photo,
                            bbox: None,
                            part,
                            side: Side::Unknown,
                            source: Source::Manual,
                            status: Status::Verified,
                            species: species.clone(),
                            score: None,
                        })?);
                    }
                    for a in boxes {
                        e.identify(a, *individual, How::Confirmed, None)?;
                    }
                }
                Ok(())
            })?;
            Touched::PhotosAndIndividuals(photos.iter().copied().collect())
        }
        CatalogueEdit::NewIndividual { annotations, name } => {
            if annotations.is_empty() {
                return Err(Refused("choose the crops of the new individual first".into()).into());
            }
            let photos = records::photos_of_annotations(cat, annotations)?;
            let species = match annotations.first() {
                Some(&a) => cat.annotation(a)?.and_then(|a| a.species),
                None => None,
            };
            // One action: the new individual (a fresh unique code), its name and its crops.
            cat.edit(&label(edit), |e| {
                let ind = e.create_individual(None, name.trim(), species.as_deref())?;
                for &a in annotations {
                    e.identify(a, ind.id, How::Confirmed, None)?;
                }
                Ok(())
            })?;
            Touched::PhotosAndIndividuals(photos)
        }
        CatalogueEdit::SetActiveHead(head) => {
            if let Some(h) = head
                && !h.is_file()
            {
                return Err(Refused(format!("{}: no such model file", h.display())).into());
            }
            crate::jobs::embed::set_active_head(cat, head.as_deref())?;
            Touched::PhotosAndIndividuals(BTreeSet::new())
        }
        CatalogueEdit::SetActiveBackbone(model) => {
            crate::jobs::embed::set_active_backbone(cat, *model)?;
            Touched::PhotosAndIndividuals(BTreeSet::new())
        }
        CatalogueEdit::Rename { individual, name } => {
            cat.rename_individual(*individual, name.trim())?;
            Touched::PhotosAndIndividuals(BTreeSet::new())
        }
        CatalogueEdit::Merge { kept, absorbed } => {
            cat.merge_individuals(*kept, *absorbed)?;
            Touched::Everything
        }
        CatalogueEdit::Split { annotations } => {
            let photos = records::photos_of_annotations(cat, annotations)?;
            cat.split_individual(annotations)?;
            Touched::PhotosAndIndividuals(photos)
        }
        CatalogueEdit::Tag { photos, tag } => {
            let tag = tag.trim();
            if tag.is_empty() {
                return Err(Refused("type a tag first".into()).into());
            }
            cat.edit(&label(edit), |e| {
                for &p in photos {
                    e.tag_photo(p, tag)?;
                }
                Ok(())
            })?;
            Touched::Photos(photos.iter().copied().collect())
        }
    })
}
