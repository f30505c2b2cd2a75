//! Background jobs: long work (creating the demo, imports, exports, and later embedding
//! and training) on its own thread, with a name, progress 0..1 and a cancel flag that the
//! status bar shows. A job reports through `crate::base::progress::Progress`, so library code
//! that already reports progress plugs in unchanged.
//!
//! ```ignore
//! jobs.spawn("Embed 1,204 crops", move |job| {
//!     job.stage("embedding", n);
//!     for crop in crops { if job.cancelled() { break } /* ... */ job.advance(1); }
//!     Ok(JobOutcome::done("1,204 crops embedded").then(Command::Reload))
//! });
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eframe::egui;

use super::command::{Command, Event};
use crate::base::progress::Progress;

pub type JobId = u64;

/// The work of a job, boxed (see `Command::job`).
pub type JobFn = Box<dyn FnOnce(&JobProgress) -> anyhow::Result<JobOutcome> + Send>;

/// What a finished job tells the user, and what the app should do next.
#[derive(Debug)]
pub struct JobOutcome {
    pub summary: String,
    /// Lines worth reading (problems with files, skipped rows); shown on request.
    pub details: Vec<String>,
    /// How many things went wrong; the notice is shown as an error when any did.
    pub problems: usize,
    /// Housekeeping: no notice unless something went wrong.
    pub quiet: bool,
    /// Run when the job is done, e.g. `Command::Reload` after the catalogue changed.
    pub then: Vec<Command>,
}

impl JobOutcome {
    pub fn done(summary: impl Into<String>) -> Self {
        JobOutcome { summary: summary.into(), details: Vec::new(), problems: 0, quiet: false, then: Vec::new() }
    }

    pub fn then(mut self, command: Command) -> Self {
        self.then.push(command);
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn quietly(mut self) -> Self {
        self.quiet = true;
        self
    }

    pub fn with_problems(mut self, problems: usize) -> Self {
        self.problems = problems;
        self
    }
}

/// The live state of one job, shared between its thread and the status bar.
#[derive(Debug)]
pub struct JobState {
    stage: Mutex<String>,
    done: AtomicU64,
    total: AtomicU64,
    cancel: AtomicBool,
}

/// What the job's thread holds: reports progress and reads the cancel flag.
pub struct JobProgress {
    state: Arc<JobState>,
    ctx: egui::Context,
}

impl JobProgress {
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
        let id = self.next_id;
        self.next_id += 1;
        let name = name.into();
        let state = Arc::new(JobState {
            stage: Mutex::new(String::new()),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            cancel: AtomicBool::new(false),
        });
        let progress = JobProgress { state: state.clone(), ctx: self.ctx.clone() };
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
                self.threads.push(handle);
                self.running.push(Job { id, name, started: Instant::now(), state });
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

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
