//! Progress of long jobs, reported by library code and shown by whoever runs it:
//! a progress bar in a terminal ([`super::console::Console`]), plain lines in logs, a status
//! bar in the app.

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
