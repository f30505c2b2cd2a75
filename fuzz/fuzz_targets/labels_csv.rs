//! The labels CSV parser must turn any bytes into rows and per-row problems, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = whaleid::jobs::import::labels::parse_labels(data) {
        for row in &table.rows {
            assert!(!row.image.is_empty());
            assert!(row.line >= 2, "rows follow the header");
        }
    }
});
