//! YOLO, class-name and COCO parsers must report bad input, never panic; boxes they
//! accept must fit or be refused by `BoxPx::fit` without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whaleid::jobs::import::boxes::{parse_class_names, parse_coco, parse_yolo};
use whaleid::base::vocabulary::BoxPx;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (boxes, _) = parse_yolo(text);
        for b in boxes {
            let _ = BoxPx::from_yolo(b.cx, b.cy, b.w, b.h, 1600, 1067).fit(1600, 1067);
        }
        let _ = parse_class_names(text);
    }
    if let Ok(coco) = parse_coco(data) {
        for b in coco.boxes {
            let _ = BoxPx::new(b.bbox[0], b.bbox[1], b.bbox[2], b.bbox[3]).fit(640, 480);
        }
    }
});
