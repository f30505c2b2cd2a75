//! Embedding a catalogue: which model it uses (its active head) and keeping its embeddings up
//! to date.

mod active;
mod refresh;

pub use active::{
    ACTIVE_BACKBONE_SETTING, ACTIVE_HEAD_SETTING, active_backbone, active_head, choose_head, head_of, resolve_model,
    set_active_backbone, set_active_head, spec_for,
};
pub use refresh::{
    Crop, EmbedOptions, EmbedReport, Prepared, RefreshError, embed_catalogue, prepare_batch, prepare_each,
};
