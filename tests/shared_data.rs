//! The real field datasets in `../shared/data`, imported through the command line as a
//! biologist would. Skips (with a message) on machines without `../shared`; fails under CI.

mod common;

use std::path::Path;

fn import_and_stats(dataset: &Path) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let cat = dir.path().join("c.whaleid");
    let cat = cat.to_str().unwrap();
    let report = common::whaleid_json(&["import", "--catalog", cat, dataset.to_str().unwrap(), "--json"]);
    let stats = common::whaleid_json(&["stats", "--catalog", cat, "--json"]);
    (report[0].clone(), stats)
}

#[test]
fn right_whale_heads_import_with_all_their_individuals() {
    let Some(shared) = common::shared() else { return };
    let (report, stats) = import_and_stats(&shared.join("data/right_whale_heads"));
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{}", report["problems"]);
    assert_eq!(stats["photos"], 2830);
    assert_eq!(stats["individuals"], 277);
    assert_eq!(stats["identified_annotations"], 2830);
    assert_eq!(stats["annotations_by_part"]["head"], 2830);
    assert_eq!(stats["species"]["right_whale"], 277);
}

#[test]
fn dolphin_fins_import_with_their_boxes() {
    let Some(shared) = common::shared() else { return };
    let (report, stats) = import_and_stats(&shared.join("data/dolphin_fins"));
    assert_eq!(stats["photos"], 81);
    assert_eq!(stats["photos_with_boxes"], 81);
    assert_eq!(stats["boxes"], 95, "every YOLO line of labels/*.txt: {}", report["problems"]);
}

#[test]
fn curvrank_examples_import_with_their_labels() {
    let Some(shared) = common::shared() else { return };
    let (report, stats) = import_and_stats(&shared.join("data/curvrank_examples"));
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{}", report["problems"]);
    assert_eq!(stats["photos"], 27);
    assert_eq!(stats["photos_identified"], 27);
    assert_eq!(stats["individuals"], 3 + 19);
    assert_eq!(stats["species"]["bottlenose_dolphin"], 3);
    assert_eq!(stats["annotations_by_part"]["dorsal_fin"], 8);
    assert_eq!(stats["annotations_by_part"]["fluke"], 19);
}
