//! The terminal: progress of long jobs, and reports printed as text or JSON.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::progress::Progress;

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

/// Prints a value as JSON (with `--json`) or as text.
pub fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
    use std::io::Write;
    let out = if json { serde_json::to_string_pretty(value)? } else { text(value) };
    match writeln!(std::io::stdout(), "{out}") {
        // A closed pipe (`whaleid ... | head`) is the reader's choice, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
