//! `whaleid bench ui`: the real window's frame loop, headless, on a catalogue of N photos
//! while embedding runs in the background.
//!
//! What is measured: `WhaleApp::ui` inside `egui::Context::run_ui` (draining the workers,
//! laying out every panel, running the commands) plus `Context::tessellate` of its shapes,
//! i.e. all the CPU work of a frame except uploading textures and drawing on the GPU. The
//! catalogue worker, the image decoders, the embedding job and the searches run on their
//! own threads, as in the window. Frames are paced at 60 per second, as a display would.
//!
//! Script: the library scrolled by the wheel, Identify, the map (pointer sweeping over the
//! points, wheel zoom), Errors, Train, Individuals. Reference, in the same run: the same
//! script with identification off (no background embedding, no gallery).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;
use serde::Serialize;

use crate::app::messages::{Intent, PanelId};
use crate::app::{AppOptions, Embedding, WhaleApp};
use crate::catalogue::Catalogue;

const SIZE: egui::Vec2 = egui::vec2(1280.0, 800.0);
const FRAME: Duration = Duration::from_millis(16);

#[derive(Serialize, Default)]
pub struct Phase {
    pub panel: String,
    pub frames: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Serialize)]
pub struct Run {
    /// From `WhaleApp::new` to the end of the first frame (the window shows, "opening…").
    pub first_frame_ms: f64,
    /// Until the library shows every photo.
    pub catalogue_shown_ms: f64,
    /// Until the first gallery (embeddings read back, map computed) arrived, if any.
    pub gallery_ms: Option<f64>,
    pub gallery_crops: usize,
    pub frames: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Measured frames during which the embedding job was running.
    pub frames_while_embedding: usize,
    pub phases: Vec<Phase>,
}

#[derive(Serialize)]
pub struct UiBench {
    pub photos: usize,
    pub embedded_before: usize,
    pub embedder: String,
    pub threads: usize,
    pub with_embedding: Run,
    pub reference_identification_off: Run,
    pub target_p99_ms: f64,
    pub target_first_frame_ms: f64,
}

/// A catalogue of `photos` photos (hard links to a few rendered whales, each photo its own
/// hash so every thumbnail is made), one box each, identified among photos/50 individuals;
/// all but `to_embed` of the boxes already carry an embedding of `embedder`'s key (random
/// unit vectors), so the rest are embedded while the window is in use.
fn build(dir: &Path, photos: usize, to_embed: usize, embedder: &crate::models::Embedder) -> anyhow::Result<()> {
    let rendered = dir.join("rendered");
    let opts = crate::jobs::synth::SynthOptions::new(&rendered, 8, 5, 11);
    crate::jobs::synth::generate(&opts, &|| {})?;
    let sources: Vec<std::path::PathBuf> = walkdir::WalkDir::new(rendered.join("images"))
        .sort_by_file_name()
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| crate::base::photo::is_photo(e.path()))
        .map(|e| e.into_path())
        .collect();
    anyhow::ensure!(!sources.is_empty(), "no synthetic photo was rendered into {}", rendered.display());
    let photo_dir = dir.join("photos");
    std::fs::create_dir_all(&photo_dir)?;
    for i in 0..photos {
        let target = photo_dir.join(format!("p{i:06}.jpg"));
        if !target.exists() {
            let source = &sources[i % sources.len()];
            std::fs::hard_link(source, &target).or_else(|_| std::fs::copy(source, &target).map(|_| ()))?;
        }
    }
    let individuals = (photos / 50).max(2);
    let mut cat = Catalogue::create(&dir.join("bench.whaleid"))?;
    let bbox = crate::base::vocabulary::BoxPx::new(60.0, 80.0, 380.0, 200.0);
    cat.fill_synthetic(&crate::catalogue::synthetic::SyntheticCatalogue::one_box_per_photo(photos, individuals, bbox))?;
    let states = cat.embedding_states(embedder.key())?;
    let dim = embedder.dim();
    let mut rng = rand::rng();
    let key = crate::catalogue::box_key(Some(&crate::base::vocabulary::BoxPx::new(60.0, 80.0, 380.0, 200.0)));
    let mut rows = Vec::new();
    for s in states.iter().skip(to_embed) {
        let mut v: Vec<f32> = (0..dim).map(|_| rand::Rng::random::<f32>(&mut rng) - 0.5).collect();
        crate::jobs::search::normalise(&mut v);
        rows.push((s.annotation.id, key.clone(), v));
        if rows.len() == 10_000 {
            cat.put_embeddings(embedder.key(), &rows)?;
            rows.clear();
        }
    }
    cat.put_embeddings(embedder.key(), &rows)?;
    Ok(())
}

struct Driver {
    ctx: egui::Context,
    app: WhaleApp,
    started: Instant,
    events: Vec<egui::Event>,
}

impl Driver {
    /// One frame; returns its CPU time.
    fn frame(&mut self) -> Duration {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, SIZE)),
            time: Some(self.started.elapsed().as_secs_f64()),
            predicted_dt: FRAME.as_secs_f32(),
            events: std::mem::take(&mut self.events),
            ..Default::default()
        };
        let t = Instant::now();
        let app = &mut self.app;
        let output = self.ctx.run_ui(input, |ui| app.ui(ui));
        let _ = self.ctx.tessellate(output.shapes, output.pixels_per_point);
        let took = t.elapsed();
        std::thread::sleep(FRAME.saturating_sub(took));
        took
    }

    fn embedding(&self) -> bool {
        self.app.jobs().running().iter().any(|j| j.name.starts_with("Embedding crops"))
    }
}

fn wheel(delta: f32) -> egui::Event {
    egui::Event::MouseWheel {
        unit: egui::MouseWheelUnit::Point,
        delta: egui::vec2(0.0, delta),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers: egui::Modifiers::NONE,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(panel: &str, frames: &[Duration]) -> Phase {
    let mut v: Vec<f64> = frames.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Phase { panel: panel.into(), ..Default::default() };
    }
    Phase {
        panel: panel.into(),
        frames: v.len(),
        p50_ms: super::percentile(&v, 0.5),
        p99_ms: super::percentile(&v, 0.99),
        max_ms: v[v.len() - 1],
    }
}

fn run(dir: &Path, photos: usize, embedding: Embedding, frames: usize) -> anyhow::Result<Run> {
    let home = dir.join(format!("home-{}", matches!(embedding, Embedding::Off)));
    let mut options = AppOptions::new(home, Some(dir.join("bench.whaleid")));
    let identifying = !matches!(embedding, Embedding::Off);
    options.embedding = embedding;
    let ctx = egui::Context::default();
    let started = Instant::now();
    let app = WhaleApp::new(&ctx, options);
    let mut d = Driver { ctx, app, started, events: Vec::new() };
    d.frame();
    let first_frame_ms = ms(started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(300);
    while d.app.state().rows.len() < photos {
        anyhow::ensure!(Instant::now() < deadline, "the library did not show {photos} photos in 5 minutes");
        d.frame();
    }
    let catalogue_shown_ms = ms(started.elapsed());
    let mut gallery_ms = None;
    if identifying {
        while d.app.state().model.gallery.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "no gallery was read in 5 minutes");
            d.frame();
        }
        gallery_ms = Some(ms(started.elapsed()));
    }
    let gallery_crops = d.app.state().model.gallery.as_ref().map_or(0, |g| g.map.len());

    let per = (frames / 6).max(1);
    let mut all = Vec::new();
    let mut phases = Vec::new();
    let mut while_embedding = 0;
    let canvas_center = egui::pos2(500.0, 420.0);
    for panel in
        [PanelId::LIBRARY, PanelId::IDENTIFY, PanelId::MAP, PanelId::ERRORS, PanelId::TRAIN, PanelId::INDIVIDUALS]
    {
        d.app.send(Intent::Show(panel));
        let mut times = Vec::with_capacity(per);
        for k in 0..per {
            match panel {
                PanelId::LIBRARY | PanelId::INDIVIDUALS => {
                    d.events.push(egui::Event::PointerMoved(egui::pos2(700.0, 400.0)));
                    d.events.push(wheel(-3000.0));
                }
                PanelId::MAP => {
                    // Sweep the pointer over the points (hover through the k-d tree), zoom now and then.
                    let a = k as f32 * 0.21;
                    let r = 40.0 + (k % 50) as f32 * 6.0;
                    d.events.push(egui::Event::PointerMoved(canvas_center + egui::vec2(a.cos(), a.sin()) * r));
                    if k % 20 == 10 {
                        d.events.push(wheel(if k % 40 == 10 { 120.0 } else { -120.0 }));
                    }
                }
                _ => d.events.push(egui::Event::PointerMoved(egui::pos2(300.0 + (k % 100) as f32 * 5.0, 300.0))),
            }
            let t = d.frame();
            if d.embedding() {
                while_embedding += 1;
            }
            times.push(t);
            all.push(t);
        }
        phases.push(summary(panel.0, &times));
    }
    let total = summary("all", &all);
    Ok(Run {
        first_frame_ms,
        catalogue_shown_ms,
        gallery_ms,
        gallery_crops,
        frames: total.frames,
        p50_ms: total.p50_ms,
        p99_ms: total.p99_ms,
        max_ms: total.max_ms,
        frames_while_embedding: while_embedding,
        phases,
    })
}

pub fn bench_ui(photos: usize, to_embed: usize, frames: usize, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(photos >= 2, "--photos must be at least 2");
    let dir = super::tempdir("whaleid-bench-ui")?;
    let embedder =
        crate::app::tiny_random_embedder().ok_or_else(|| anyhow::anyhow!("cannot build the tiny embedder"))?;
    let to_embed = to_embed.min(photos);
    eprintln!("building a catalogue of {photos} photos ({to_embed} to embed while the window runs)…");
    build(dir.path(), photos, to_embed, &embedder)?;
    eprintln!("reference run: identification off…");
    let reference = run(dir.path(), photos, Embedding::Off, frames)?;
    eprintln!("run with embedding in the background…");
    let with = run(dir.path(), photos, Embedding::given(Arc::clone(&embedder)), frames)?;
    let out = UiBench {
        photos,
        embedded_before: photos - to_embed,
        embedder: format!("{} (tiny random model: the UI's cost, not the model's)", embedder.key()),
        threads: rayon::current_num_threads(),
        with_embedding: with,
        reference_identification_off: reference,
        target_p99_ms: 16.0,
        target_first_frame_ms: 1000.0,
    };
    crate::base::console::emit(json, &out, |o| {
        let run_text = |name: &str, r: &Run| {
            let mut s = format!(
                "  {name}\n    first frame {:.0} ms (target < {:.0}), library shows all photos at {:.0} ms{}\n    \
                 {} frames: p50 {:.2} ms, p99 {:.2} ms (target < {:.0}: {:.2}x), max {:.1} ms; {} of them while embedding ran\n",
                r.first_frame_ms,
                o.target_first_frame_ms,
                r.catalogue_shown_ms,
                r.gallery_ms
                    .map(|g| format!(", first gallery ({} crops on the map) at {g:.0} ms", r.gallery_crops))
                    .unwrap_or_default(),
                r.frames,
                r.p50_ms,
                r.p99_ms,
                o.target_p99_ms,
                r.p99_ms / o.target_p99_ms,
                r.max_ms,
                r.frames_while_embedding,
            );
            for p in &r.phases {
                s += &format!(
                    "      {:<12} {:4} frames  p50 {:6.2} ms  p99 {:6.2} ms  max {:6.1} ms\n",
                    p.panel, p.frames, p.p50_ms, p.p99_ms, p.max_ms
                );
            }
            s
        };
        format!(
            "whaleid bench ui: the window's frames (ui + tessellation, CPU; no GPU) on {} photos, {} threads, \
             embedder {}\n{}{}  ratio p99 with embedding / reference: {:.2}x",
            o.photos,
            o.threads,
            o.embedder,
            run_text("with embedding in the background", &o.with_embedding),
            run_text("reference: identification off", &o.reference_identification_off),
            o.with_embedding.p99_ms / o.reference_identification_off.p99_ms.max(1e-9),
        )
    })
}
