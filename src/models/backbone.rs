//! What every backbone gives the layers above it: tokens read at chosen depths.

/// A point in the backbone to read tokens at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// The output of the first `n` blocks through the final LayerNorm (DINOv2's own
    /// intermediate-layer features; `n` = the block count is the usual output).
    Output(usize),
    /// The residual stream after the first `n` blocks, before any LayerNorm: the input of
    /// block `n` (0-based), which [`Dinov2::forward_tail`] continues from.
    Input(usize),
}

impl Tap {
    pub fn depth(&self) -> usize {
        match *self {
            Tap::Output(n) | Tap::Input(n) => n,
        }
    }
}
