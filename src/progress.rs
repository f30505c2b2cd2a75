//! Progress of long jobs, reported by library code and shown by whoever runs it:
//! a progress bar in a terminal, plain lines in logs, a status bar in the app.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

pub trait Progress: Sync {
    /// A new stage of `total` steps begins.
    fn stage(&self, _name: &str, _total: u64) {}
    /// `n` more steps are done.
    fn advance(&self, _n: u64) {}
    /// Work up to `done` of `total` is safely written (a crash now loses none of it).
    fn committed(&self, _done: u64, _total: u64) {}
    /// Whether the user asked to stop.
    fn cancelled(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// A progress bar on a terminal; on anything else (logs, CI, tests) a line per stage and per commit.
pub struct Console {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
    quiet: bool,
}

impl Console {
    /// `quiet` suppresses everything (used with `--json`, whose stdout must stay parseable;
    /// commits are still reported on stderr so scripts can follow a long import).
    pub fn new(quiet: bool) -> Self {
        Console { bar: Mutex::new(None), terminal: std::io::stderr().is_terminal(), quiet }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(guard) = self.bar.lock()
            && let Some(bar) = guard.as_ref()
        {
            f(bar);
        }
    }
}

impl Progress for Console {
    fn stage(&self, name: &str, total: u64) {
        let Ok(mut guard) = self.bar.lock() else { return };
        if let Some(old) = guard.take() {
            old.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        if self.terminal {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name.to_string());
            *guard = Some(bar);
        } else {
            eprintln!("{name}: {total} to do");
        }
    }

    fn advance(&self, n: u64) {
        self.with_bar(|b| b.inc(n));
    }

    fn committed(&self, done: u64, total: u64) {
        if self.terminal && !self.quiet {
            self.with_bar(|b| b.set_position(done));
        } else {
            eprintln!("committed {done}/{total}");
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.bar.lock()
            && let Some(bar) = guard.take()
        {
            bar.finish_and_clear();
        }
    }
}
