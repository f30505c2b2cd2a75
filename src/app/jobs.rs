//! Background jobs: every piece of long work (creating the demo, imports, exports, loading
//! the model, embedding, searching, training, drawing the map, writing the settings) runs on
//! its own thread, with a name, progress 0..1 and a cancel flag that the status bar shows. The
//! bodies of the jobs are in `tasks`. A job reports through `crate::base::progress::Progress`,
//! so library code that already reports progress plugs in unchanged, and it may send `Event`s
//! while it runs.
//!
//! ```ignore
//! jobs.spawn("Embed 1,204 crops", move |job| {
//!     job.stage("embedding", n);
//!     for crop in crops { if job.cancelled() { break } /* ... */ job.advance(1); }
//!     Ok(JobOutcome::done("1,204 crops embedded").then(Intent::Reload))
//! });
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui;

use super::messages::{Event, JobId, JobOutcome};
use crate::base::progress::Progress;

/// The live state of one job, shared between its thread and the status bar.
#[derive(Debug)]
pub struct JobState {
    stage: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

/// What the job's thread holds: reports progress, reads the cancel flag, and speaks to the app.
pub struct JobProgress {
    state: Arc<JobState>,
    ctx: egui::Context,
    events: Sender<Event>,
}

impl JobProgress {
    /// Sends the app an event while the job runs (a search's answer, a training step); the
    /// app drains it before the job's own end, which comes after it on the same channel.
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
        self.ctx.request_repaint();
    }

    /// Sets progress directly (for work counted in other units than steps).
    pub fn set(&self, done: u64, total: u64) {
        self.state.total.store(total, Ordering::Relaxed);
        self.state.done.store(done.min(total), Ordering::Relaxed);
        self.repaint();
    }

    fn repaint(&self) {
        // Progress can tick thousands of times a second; ten repaints a second are enough.
        self.ctx.request_repaint_after(Duration::from_millis(100));
    }
}

impl Progress for JobProgress {
    fn stage(&self, name: &str, total: u64) {
        if let Ok(mut stage) = self.state.stage.lock() {
            *stage = name.to_string();
        }
        self.state.done.store(0, Ordering::Relaxed);
        self.state.total.store(total, Ordering::Relaxed);
        self.repaint();
    }

    fn advance(&self, n: u64) {
        self.state.done.fetch_add(n, Ordering::Relaxed);
        self.repaint();
    }

    fn committed(&self, done: u64, total: u64) {
        self.set(done, total);
    }

    fn cancelled(&self) -> bool {
        self.state.cancel.load(Ordering::Relaxed)
    }
}

/// A running job as the status bar sees it.
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub started: Instant,
    /// Whether the status bar lists it (housekeeping such as drawing the map is not listed).
    pub listed: bool,
    state: Arc<JobState>,
}

impl Job {
    pub fn stage(&self) -> String {
        self.state.stage.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// 0..1, or `None` while the amount of work is not known yet.
    pub fn progress(&self) -> Option<f32> {
        let total = self.state.total.load(Ordering::Relaxed);
        let done = self.state.done.load(Ordering::Relaxed);
        (total > 0).then(|| (done as f32 / total as f32).clamp(0.0, 1.0))
    }

    pub fn counts(&self) -> (u64, u64) {
        (self.state.done.load(Ordering::Relaxed), self.state.total.load(Ordering::Relaxed))
    }

    pub fn cancel(&self) {
        self.state.cancel.store(true, Ordering::Relaxed);
    }

    pub fn cancel_requested(&self) -> bool {
        self.state.cancel.load(Ordering::Relaxed)
    }
}

/// How the window treats a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Work the user waits for: in the status bar, with its progress and a Cancel button.
    Work,
    Housekeeping,
    Dialog,
}

/// The jobs that are running. Finished jobs arrive as `Event::JobFinished` on the app's
/// event channel; the app then calls `finished`.
pub struct Jobs {
    next_id: JobId,
    running: Vec<Job>,
    events: Sender<Event>,
    ctx: egui::Context,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Jobs {
    pub fn new(ctx: egui::Context, events: Sender<Event>) -> Self {
        Jobs { next_id: 1, running: Vec::new(), events, ctx, threads: Vec::new() }
    }

    /// Runs `work` on its own thread; its outcome (or error) comes back as `Event::JobFinished`.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        work: impl FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> JobId {
        self.start(name.into(), Kind::Work, work)
    }

    /// Like `spawn`, for housekeeping the status bar does not list (drawing the map, writing
    /// the settings); it still counts as work in flight until it ends.
    pub fn spawn_housekeeping(
        &mut self,
        name: impl Into<String>,
        work: impl FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> JobId {
        self.start(name.into(), Kind::Housekeeping, work)
    }

    /// A file dialog, which blocks its thread until the user answers: not listed, and not
    /// waited for when the window closes (its answer is of no use then).
    pub fn spawn_dialog(
        &mut self,
        name: impl Into<String>,
        work: impl FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> JobId {
        self.start(name.into(), Kind::Dialog, work)
    }

    fn start(
        &mut self,
        name: String,
        kind: Kind,
        work: impl FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send + 'static,
    ) -> JobId {
        let id = self.next_id;
        self.next_id += 1;
        let state = Arc::new(JobState {
            stage: Mutex::new(String::new()),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        });
        let progress = JobProgress { state: state.clone(), ctx: self.ctx.clone(), events: self.events.clone() };
        let events = self.events.clone();
        let ctx = self.ctx.clone();
        let thread_name = name.clone();
        let spawned = std::thread::Builder::new().name(format!("job {id}")).spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&progress)));
            let result = match result {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(panic) => Err(format!("{thread_name} stopped unexpectedly: {}", panic_text(&panic))),
            };
            let cancelled = progress.cancelled();
            let _ = events.send(Event::JobFinished { id, result, cancelled });
            ctx.request_repaint();
        });
        match spawned {
            Ok(handle) => {
                if kind != Kind::Dialog {
                    self.threads.push(handle);
                }
                let listed = kind == Kind::Work;
                self.running.push(Job { id, name, started: Instant::now(), listed, state });
            }
            Err(e) => {
                let _ = self.events.send(Event::JobFinished {
                    id,
                    result: Err(format!("cannot start {name}: {e}")),
                    cancelled: false,
                });
            }
        }
        self.threads.retain(|t| !t.is_finished());
        id
    }

    pub fn running(&self) -> &[Job] {
        &self.running
    }

    /// The running jobs the status bar shows.
    pub fn listed(&self) -> impl Iterator<Item = &Job> {
        self.running.iter().filter(|j| j.listed)
    }

    pub fn get(&self, id: JobId) -> Option<&Job> {
        self.running.iter().find(|j| j.id == id)
    }

    pub fn cancel(&self, id: JobId) {
        if let Some(job) = self.get(id) {
            job.cancel();
        }
    }

    /// Forgets a finished job; returns its name.
    pub fn finished(&mut self, id: JobId) -> Option<String> {
        let i = self.running.iter().position(|j| j.id == id)?;
        Some(self.running.remove(i).name)
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }
}

impl Drop for Jobs {
    /// Asks every job to stop and waits for them: an import stops at a batch boundary, so
    /// what it committed stays and running it again finishes it.
    fn drop(&mut self) {
        for job in &self.running {
            job.cancel();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A job that runs one at a time: asked for again while it runs, it runs once more after it,
/// however often it was asked meanwhile.
#[derive(Debug, Default)]
pub struct OneAtATime {
    running: Option<JobId>,
    again: bool,
}

impl OneAtATime {
    /// Whether to start it now; if not, it is remembered for when the running one ends.
    pub fn may_start(&mut self) -> bool {
        if self.running.is_some() {
            self.again = true;
        }
        self.running.is_none()
    }

    pub fn started(&mut self, id: JobId) {
        self.running = Some(id);
    }

    /// A job ended: whether it was this one and was asked for again while it ran.
    pub fn finished(&mut self, id: JobId) -> bool {
        if self.running != Some(id) {
            return false;
        }
        self.running = None;
        std::mem::take(&mut self.again)
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
