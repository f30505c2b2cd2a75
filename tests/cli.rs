//! The command line as scripts use it: synth, import, stats, export, undo, all with --json.

mod common;

#[test]
fn synth_import_stats_export_and_undo_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("synth");
    let cat = dir.path().join("flukes.whaleid");
    let (data_s, cat_s) = (data.to_str().unwrap(), cat.to_str().unwrap());

    let synth = common::whaleid_json(&[
        "synth",
        "--out",
        data_s,
        "--individuals",
        "4",
        "--images-per-individual",
        "3",
        "--seed",
        "5",
        "--json",
    ]);
    assert_eq!(synth["photos"], 12);

    let report = common::whaleid_json(&["import", "--catalog", cat_s, data_s, "--json"]);
    assert_eq!(report[0]["photos"]["added"], 12);
    assert_eq!(report[0]["boxes"]["added"], 12);
    assert_eq!(report[0]["labels"]["applied"], 12, "labels attach to the YOLO box of each photo");

    let stats = common::whaleid_json(&["stats", "--catalog", cat_s, "--json"]);
    assert_eq!(
        (stats["photos"].as_i64(), stats["individuals"].as_i64(), stats["boxes"].as_i64()),
        (Some(12), Some(4), Some(12))
    );
    assert_eq!(stats["annotations_by_part"]["fluke"], 12);
    assert!(stats["first_photo_date"].as_str().is_some_and(|d| d.starts_with("2024-")), "EXIF dates are read");

    let csv = dir.path().join("out.csv");
    let export = common::whaleid_json(&[
        "export",
        "--catalog",
        cat_s,
        "--format",
        "csv",
        "--out",
        csv.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(export["items"], 12);
    // EXIF GPS is read, with the hemisphere: the synthetic survey is on Stellwagen Bank (42 N, 70 W).
    let text = std::fs::read_to_string(&csv).unwrap();
    let table = whaleid::jobs::import::labels::parse_labels(text.as_bytes()).unwrap();
    assert_eq!(table.rows.len(), 12);
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let (lat_col, lon_col) =
        (header.iter().position(|h| *h == "latitude").unwrap(), header.iter().position(|h| *h == "longitude").unwrap());
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (lat, lon): (f64, f64) = (fields[lat_col].parse().unwrap(), fields[lon_col].parse().unwrap());
        assert!((41.0..44.0).contains(&lat) && (-72.0..-69.0).contains(&lon), "{lat} {lon}");
    }

    let undo = common::whaleid_json(&["undo", "--catalog", cat_s, "--json"]);
    assert!(undo["done"].as_str().unwrap().starts_with("import "));
    assert_eq!(common::whaleid_json(&["stats", "--catalog", cat_s, "--json"])["photos"], 0);
    common::whaleid_json(&["redo", "--catalog", cat_s, "--json"]);
    assert_eq!(common::whaleid_json(&["stats", "--catalog", cat_s, "--json"])["photos"], 12);
}

#[test]
fn a_missing_catalogue_or_dataset_is_a_clear_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.whaleid");
    let out = common::whaleid().args(["stats", "--catalog", missing.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no catalogue at") && err.contains("nowhere.whaleid"), "{err}");

    let cat = dir.path().join("c.whaleid");
    let out = common::whaleid()
        .args(["import", "--catalog", cat.to_str().unwrap(), dir.path().join("no-such-folder").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot open dataset"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Outside a checkout of the repository the backbone weights are looked for in the data
/// folder (`WHALEID_HOME`; here the test's own): the error names that place and how to fill it.
#[test]
fn without_a_models_folder_the_weights_are_looked_for_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    drop(common::boxed_catalogue(dir.path(), 1, None));
    let out = common::whaleid()
        .current_dir(dir.path())
        .env_remove("WHALEID_MODELS")
        .args(["embed", "--catalog", "c.whaleid"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = whaleid::models::dinov2_safetensors_path(&common::home().join("models"));
    assert!(err.contains(&expected.display().to_string()) && err.contains("models fetch"), "{err}");
}
