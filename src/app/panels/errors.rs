//! Errors: every labelled crop searched against the others (leave-one-out, the evaluator's
//! own protocol: `eval::query_outcomes`), and the mistakes shown side by side: the query, the
//! wrong top match, and the true individual's best crop. Open-set mistakes are listed apart:
//! a new individual missed (its only crop matched someone above the threshold) and a false
//! new (a known individual scored under the threshold).

use std::sync::Arc;

use eframe::egui;

use super::{Panel, PanelContext};
use crate::app::embedding::{GalleryData, short_key};
use crate::app::images::ImageRequest;
use crate::app::messages::{Event, Intent, PanelId, Review};
use crate::app::widgets::{accessible_label, model_status_ui, paint_picture};
use crate::base::ids::AnnotationId;
use crate::jobs::eval::QueryOutcome;

/// Galleries up to this size are reviewed as soon as the panel is shown; larger ones wait
/// for the button (a search per labelled crop).
const AUTO_REVIEW: usize = 20_000;
const ROW_HEIGHT: f32 = 132.0;
const THUMB: egui::Vec2 = egui::vec2(150.0, 100.0);

/// The mistakes of one review at one threshold.
#[derive(Debug, Default)]
pub struct Mistakes {
    pub generation: u64,
    pub threshold: f32,
    pub queries: usize,
    /// Known individuals whose top match is another individual.
    pub misidentified: Vec<QueryOutcome>,
    /// Crops of an individual with no other crop, matched above the threshold.
    pub new_missed: Vec<QueryOutcome>,
    /// Crops of a known individual whose best score is under the threshold.
    pub false_new: Vec<QueryOutcome>,
    pub cancelled: bool,
}

impl Mistakes {
    pub fn classify(outcomes: &[QueryOutcome], threshold: f32, generation: u64, cancelled: bool) -> Mistakes {
        let mut m = Mistakes { generation, threshold, queries: outcomes.len(), cancelled, ..Default::default() };
        for q in outcomes {
            let top = q.top().map(|t| (t.individual == q.truth, t.score));
            match (q.others > 0, top) {
                (false, Some((_, score))) if score >= threshold => m.new_missed.push(q.clone()),
                (false, _) => {}
                (true, None) => m.false_new.push(q.clone()),
                (true, Some((right, score))) => {
                    if score < threshold {
                        m.false_new.push(q.clone());
                    }
                    if !right {
                        m.misidentified.push(q.clone());
                    }
                }
            }
        }
        m
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Tab {
    #[default]
    Misidentified,
    NewMissed,
    FalseNew,
}

#[derive(Default)]
pub struct ErrorsPanel {
    /// The last review: every labelled crop's search, whatever the threshold.
    review: Option<Arc<Review>>,
    /// Its mistakes at the threshold in use.
    mistakes: Option<Arc<Mistakes>>,
    /// The gallery generation of the review asked for last.
    asked: Option<u64>,
    tab: Tab,
}

impl ErrorsPanel {
    fn threshold(cx: &PanelContext<'_>, data: &GalleryData) -> f32 {
        data.tuned_threshold.unwrap_or(cx.state.settings.new_individual_threshold)
    }

    fn review(&mut self, cx: &mut PanelContext<'_>, data: &Arc<GalleryData>) {
        let generation = cx.state.model.generation;
        self.asked = Some(generation);
        cx.send(Intent::ReviewLabelledCrops { gallery: data.clone(), generation });
    }

    /// The review's mistakes at `threshold`: a new threshold sorts the same searches again,
    /// without searching again.
    fn mistakes_at(&mut self, threshold: f32) -> Option<Arc<Mistakes>> {
        let review = self.review.as_ref()?;
        let stale = |m: &Mistakes| m.generation != review.generation || m.threshold.to_bits() != threshold.to_bits();
        if self.mistakes.as_deref().is_none_or(stale) {
            let m = Mistakes::classify(&review.outcomes, threshold, review.generation, review.cancelled);
            self.mistakes = Some(Arc::new(m));
        }
        self.mistakes.clone()
    }

    fn crop_ui(
        ui: &mut egui::Ui,
        cx: &mut PanelContext<'_>,
        data: &GalleryData,
        annotation: AnnotationId,
        caption: &str,
    ) -> bool {
        let mut clicked = false;
        ui.vertical(|ui| {
            ui.set_width(THUMB.x);
            let (rect, response) = ui.allocate_exact_size(THUMB, egui::Sense::click());
            match data.crop(annotation) {
                Some(c) => {
                    let picture = cx.images.get(&ImageRequest::thumbnail(&c.hash, &c.file, c.bbox));
                    let name = accessible_label(&format!("{caption} {}", c.file_name()), Some(&picture));
                    response.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
                    paint_picture(ui, rect, picture, c.file_name());
                }
                None => {
                    ui.painter().rect_filled(rect, 2.0, ui.visuals().extreme_bg_color);
                }
            }
            clicked = response.on_hover_text("Open in Identify").clicked();
            ui.add(egui::Label::new(egui::RichText::new(caption).small()).truncate());
        });
        clicked
    }

    fn rows_ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>, data: &GalleryData, rows: &[QueryOutcome]) {
        if rows.is_empty() {
            ui.label("None.");
            return;
        }
        let mut open = None;
        egui::ScrollArea::vertical().auto_shrink([false, false]).show_rows(ui, ROW_HEIGHT, rows.len(), |ui, range| {
            for q in &rows[range] {
                ui.horizontal(|ui| {
                    ui.set_height(ROW_HEIGHT - 8.0);
                    if Self::crop_ui(ui, cx, data, q.annotation, &format!("query, truly {}", q.truth)) {
                        open = Some(q.annotation);
                    }
                    if let Some(top) = q.top() {
                        let caption = format!("top match {} · {:.3}", top.individual, top.score);
                        if Self::crop_ui(ui, cx, data, top.best_annotation, &caption) {
                            open = Some(top.best_annotation);
                        }
                    }
                    match q.truth_match() {
                        Some((rank, m)) if q.others > 0 => {
                            let caption = format!("true {} · {:.3} · rank {}", q.truth, m.score, rank + 1);
                            if Self::crop_ui(ui, cx, data, m.best_annotation, &caption) {
                                open = Some(m.best_annotation);
                            }
                        }
                        _ if q.others == 0 => {
                            ui.label(format!("{} has no other crop: the answer should have been \"new\"", q.truth));
                        }
                        _ => {
                            ui.label(format!("{} is not in the top {}", q.truth, q.ranking.len()));
                        }
                    }
                });
                ui.separator();
            }
        });
        if let Some(a) = open {
            cx.send(Intent::OpenCrop(a));
        }
    }
}

impl Panel for ErrorsPanel {
    fn id(&self) -> PanelId {
        PanelId::ERRORS
    }

    fn title(&self) -> &'static str {
        "Errors"
    }

    fn shortcuts(&self) -> &'static [(&'static str, &'static str)] {
        &[("Click a crop", "open it in Identify")]
    }

    fn on_event(&mut self, event: &Event, _cx: &mut PanelContext<'_>) {
        match event {
            Event::Opened { .. } => *self = ErrorsPanel::default(),
            Event::Reviewed(review) => self.review = Some(review.clone()),
            _ => {}
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, cx: &mut PanelContext<'_>) {
        egui::CentralPanel::default().show(ui, |ui| {
            if !model_status_ui(ui, &cx.state.model, cx.out) {
                return;
            }
            let Some(data) = cx.state.model.gallery.clone() else { return };
            let small = data.load.gallery.len() <= AUTO_REVIEW;
            if small && self.asked != Some(cx.state.model.generation) {
                self.review(cx, &data);
            }
            ui.horizontal(|ui| {
                ui.heading("Mistakes on labelled crops");
                if ui.button("Review again").clicked() {
                    self.review(cx, &data);
                }
            });
            let Some(m) = self.mistakes_at(Self::threshold(cx, &data)) else {
                ui.horizontal(|ui| {
                    if self.asked.is_some() {
                        ui.spinner();
                        ui.label("Searching every labelled crop against the others…");
                    } else {
                        ui.label(format!("{} crops: press Review again to search them all.", data.load.gallery.len()));
                    }
                });
                return;
            };
            ui.label(format!(
                "Leave-one-out over {} labelled crop(s), model {}, new-individual threshold {:.2}{}{}",
                m.queries,
                short_key(&data.key),
                m.threshold,
                if m.cancelled { " · cancelled: partial" } else { "" },
                if m.generation != cx.state.model.generation { " · the catalogue changed since" } else { "" },
            ));
            ui.horizontal(|ui| {
                for (tab, text) in [
                    (Tab::Misidentified, format!("Misidentified ({})", m.misidentified.len())),
                    (Tab::NewMissed, format!("New individual missed ({})", m.new_missed.len())),
                    (Tab::FalseNew, format!("False new ({})", m.false_new.len())),
                ] {
                    ui.selectable_value(&mut self.tab, tab, text);
                }
            });
            ui.weak(match self.tab {
                Tab::Misidentified => "Closed set: the top match is another individual. Query · wrong top match · the true individual's best crop.",
                Tab::NewMissed => "Open set: an individual with no other crop, yet matched above the threshold.",
                Tab::FalseNew => "Open set: a catalogued individual scored under the threshold, so it would be called new.",
            });
            ui.separator();
            let rows = match self.tab {
                Tab::Misidentified => &m.misidentified,
                Tab::NewMissed => &m.new_missed,
                Tab::FalseNew => &m.false_new,
            };
            self.rows_ui(ui, cx, &data, rows);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::search::Match;

    fn outcome(truth: &str, others: usize, ranking: &[(&str, f32)]) -> QueryOutcome {
        QueryOutcome {
            annotation: AnnotationId(1),
            truth: truth.into(),
            others,
            ranking: ranking
                .iter()
                .enumerate()
                .map(|(k, (i, s))| Match {
                    individual: i.to_string(),
                    score: *s,
                    best_annotation: AnnotationId(100 + k as i64),
                    verified: None,
                })
                .collect(),
        }
    }

    #[test]
    fn mistakes_are_sorted_into_closed_set_and_the_two_open_set_kinds() {
        let m = Mistakes::classify(
            &[
                outcome("A", 3, &[("A", 0.9), ("B", 0.5)]), // right and confident: no mistake
                outcome("A", 3, &[("B", 0.8), ("A", 0.7)]), // wrong top match
                outcome("C", 0, &[("B", 0.8)]),             // only crop of C, yet matched: new missed
                outcome("D", 0, &[("B", 0.3)]),             // only crop of D, called new: right
                outcome("A", 3, &[("A", 0.4)]),             // right individual under the threshold: false new
                outcome("E", 2, &[("B", 0.2), ("E", 0.1)]), // wrong and under the threshold: both lists
            ],
            0.6,
            7,
            false,
        );
        assert_eq!(m.queries, 6);
        assert_eq!(m.misidentified.iter().map(|q| q.truth.as_str()).collect::<Vec<_>>(), ["A", "E"]);
        assert_eq!(m.new_missed.iter().map(|q| q.truth.as_str()).collect::<Vec<_>>(), ["C"]);
        assert_eq!(m.false_new.iter().map(|q| q.truth.as_str()).collect::<Vec<_>>(), ["A", "E"]);
        assert_eq!(m.misidentified[1].truth_match().map(|(rank, _)| rank), Some(1));
    }
}
