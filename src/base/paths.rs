//! Where whaleid keeps its own files.

use std::path::PathBuf;

/// Where whaleid keeps its own files: `$WHALEID_HOME`, else the platform's data folder.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("WHALEID_HOME") {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("whaleid");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local").join("share").join("whaleid"),
        None => PathBuf::from("whaleid-data"),
    }
}
